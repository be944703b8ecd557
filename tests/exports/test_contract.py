"""Contract: every export format round-trips through that format's usual reader.

Each reader turns the written files back into {image_uri: (width, height, [(label, x1, y1, x2, y2), ...])}
in original pixels (x2/y2 one past the last pixel), which must equal the table we exported, within the
format's precision: exact for the float formats, 1e-3 px after YOLO's 6 normalised decimals, and
0.5 px for VOC, which stores integers (10.5 rounds to 10 under Python's banker's rounding).
"""

from __future__ import annotations

import json

import pytest

from genpromp_annotate.exports import WRITERS, export_boxes
from tests.exports.readers import READERS, expected_content


def test_every_format_has_a_reader_here():
    assert set(READERS) == set(WRITERS)


@pytest.mark.parametrize("nullable_sizes", [False, True], ids=["int64", "Int64"])
@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_round_trip_through_the_formats_reader(fmt, nullable_sizes, box_table, box_rows, categories, tmp_path):
    if nullable_sizes:  # the dtypes the project store's frame uses
        box_table = box_table.astype({"width": "Int64", "height": "Int64"})
    is_file = WRITERS[fmt][1]
    out = tmp_path / (f"export.{fmt}" if is_file else fmt)
    written = export_boxes(box_table, fmt, out, categories=categories)
    reader, tolerance = READERS[fmt]
    got = reader(written, box_rows, categories)
    if fmt == "yolo":
        assert sorted(p.name for p in written) == ["a.txt", "a_2.txt", "b.txt"]
    want = expected_content(box_rows)
    assert list(got) == list(want), "images (including the one without a box) keep their table order"
    for uri, (w, h, boxes) in want.items():
        gw, gh, gboxes = got[uri]
        assert (gw, gh) == (w, h), uri
        assert len(gboxes) == len(boxes), uri
        for (label, *xyxy), (glabel, *gxyxy) in zip(sorted(boxes), sorted(gboxes)):
            assert glabel == label
            assert gxyxy == pytest.approx(xyxy, abs=tolerance), (uri, fmt)


def test_filters_apply_before_writing(box_table, tmp_path):
    written = export_boxes(box_table, "coco", tmp_path / "c.json", min_score=0.4, model_version="v1")
    data = json.loads(written.read_text())
    assert [a["score"] for a in data["annotations"]] == [0.9, 0.5]
    assert len(data["images"]) == 3  # images whose boxes were all filtered out stay listed


def test_unknown_format_names_the_choices(box_table, tmp_path):
    from genpromp_annotate.errors import ConfigError

    with pytest.raises(ConfigError, match="yolo"):
        export_boxes(box_table, "kitti", tmp_path / "x")
