"""Contract: every export format round-trips through that format's usual reader.

Each reader turns the written files back into {image_uri: (width, height, [(label, x1, y1, x2, y2), ...])}
in original pixels (x2/y2 one past the last pixel), which must equal the table we exported, within the
format's precision: exact for the float formats, 1e-3 px after YOLO's 6 normalised decimals, and
0.5 px for VOC, which stores integers (10.5 rounds to 10 under Python's banker's rounding).
"""

from __future__ import annotations

import csv
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest

from genpromp_annotate.exports import WRITERS, export_boxes
from genpromp_annotate.exports.label_studio import label_config_xml

Content = dict[str, tuple[int, int, list[tuple]]]


def expected_content(rows: list[tuple]) -> Content:
    content: Content = {}
    for uri, w, h, label, x1, y1, x2, y2, _score, _version in rows:
        entry = content.setdefault(uri, (w, h, []))
        if not math.isnan(x1):
            entry[2].append((label, x1, y1, x2, y2))
    return content


def read_table(path: Path, frame: pd.DataFrame) -> Content:
    content: Content = {}
    for row in frame.itertuples(index=False):
        entry = content.setdefault(row.image_uri, (int(row.width), int(row.height), []))
        if pd.notna(row.x1):
            entry[2].append((row.label, row.x1, row.y1, row.x2, row.y2))
    return content


def read_csv(path: Path, rows: list[tuple], categories: list[str]) -> Content:
    return read_table(path, pd.read_csv(path))


def read_parquet(path: Path, rows: list[tuple], categories: list[str]) -> Content:
    import pyarrow.parquet as pq

    return read_table(path, pq.read_table(path).to_pandas())


def read_coco(path: Path, rows: list[tuple], categories: list[str]) -> Content:
    from pycocotools.coco import COCO

    coco = COCO(str(path))
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    assert [names[i] for i in sorted(names)] == categories  # ids follow the given order, `bird` included
    content: Content = {}
    for image in coco.loadImgs(coco.getImgIds()):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        content[image["file_name"]] = (image["width"], image["height"], [
            (names[a["category_id"]], a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
             a["bbox"][1] + a["bbox"][3]) for a in anns])
    # the same file also loads as detection results against itself
    results = coco.loadRes([{k: a[k] for k in ("image_id", "category_id", "bbox", "score")}
                            for a in coco.dataset["annotations"]])
    assert len(results.getAnnIds()) == len(coco.getAnnIds())
    return content


def read_yolo(paths: list[Path], rows: list[tuple], categories: list[str]) -> Content:
    """A plain YOLO reader: classes.txt for names, manifest.csv for which image a label file belongs to."""
    out = paths[0].parent.parent
    names = (out / "classes.txt").read_text().splitlines()
    assert names == categories
    content: Content = {}
    with open(out / "manifest.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            w, h = int(row["width"]), int(row["height"])
            found = []
            for line in (out / row["label_file"]).read_text().splitlines():
                cls, cx, cy, bw, bh = line.split()
                cx, cy, bw, bh = float(cx) * w, float(cy) * h, float(bw) * w, float(bh) * h
                found.append((names[int(cls)], cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2))
            content[row["image_uri"]] = (w, h, found)
    assert sorted(p.name for p in paths) == ["a.txt", "a_2.txt", "b.txt"]
    return content


def read_voc(paths: list[Path], rows: list[tuple], categories: list[str]) -> Content:
    content: Content = {}
    for path in paths:
        root = ET.parse(path).getroot()
        size = root.find("size")
        found = []
        for obj in root.iter("object"):
            bb = obj.find("bndbox")
            xmin, ymin, xmax, ymax = (int(bb.find(t).text) for t in ("xmin", "ymin", "xmax", "ymax"))
            found.append((obj.find("name").text, xmin - 1, ymin - 1, xmax, ymax))  # 1-based inclusive → ours
        content[root.find("path").text] = (int(size.find("width").text), int(size.find("height").text), found)
    return content


def read_label_studio(path: Path, rows: list[tuple], categories: list[str]) -> Content:
    from label_studio_sdk.label_interface import LabelInterface

    tasks = json.loads(path.read_text())
    interface = LabelInterface(label_config_xml(categories))
    content: Content = {}
    for task in tasks:
        found, size = [], None
        for prediction in task["predictions"]:
            assert interface.validate_prediction(prediction, return_errors=True) == []
            for region in prediction["result"]:
                w, h, v = region["original_width"], region["original_height"], region["value"]
                size = (w, h)
                found.append((v["rectanglelabels"][0], v["x"] * w / 100, v["y"] * h / 100,
                              (v["x"] + v["width"]) * w / 100, (v["y"] + v["height"]) * h / 100))
        # Label Studio tasks carry no size for images without a region: take it from the table
        size = size or next((w, h) for uri, w, h, *_ in rows if uri == task["data"]["image"])
        content[task["data"]["image"]] = (*size, found)
    return content


READERS = {"csv": (read_csv, 1e-9), "parquet": (read_parquet, 1e-9), "coco": (read_coco, 1e-9),
           "yolo": (read_yolo, 1e-3), "voc": (read_voc, 0.5), "label-studio": (read_label_studio, 1e-6)}


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
