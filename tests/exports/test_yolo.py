"""YOLO writer: the golden line, empty files for images without a box, the class files."""

from __future__ import annotations

from genpromp_annotate.exports.yolo import write_yolo, yolo_line


def test_golden_line():
    # 200×100 image, box 20,10→120,60: cx = (20+120)/2/200 = 0.35, cy = (10+60)/2/100 = 0.35,
    # w = 100/200 = 0.5, h = 50/100 = 0.5
    assert yolo_line(0, 20, 10, 120, 60, 200, 100) == "0 0.35 0.35 0.5 0.5"


def test_values_are_clipped_and_fixed_point():
    # a box sticking out of a 100×100 image by 10 px: cx = 55/100, w = 110/100 → clipped to 1
    assert yolo_line(2, 0, 0, 110, 1e-5, 100, 100) == "2 0.55 0 1 0"


def test_folder_layout(box_table, categories, tmp_path):
    written = write_yolo(box_table, tmp_path / "y", categories)
    assert [p.name for p in written] == ["a.txt", "b.txt", "a_2.txt"]
    assert written[0].read_text() == "0 0.35 0.35 0.5 0.5\n"
    assert written[2].read_text() == ""  # the image without a box: a background image
    assert (tmp_path / "y/classes.txt").read_text() == "cat\ndog\nbird\n"
    data = (tmp_path / "y/data.yaml").read_text()
    assert "nc: 3" in data and '  2: "bird"' in data
    assert (tmp_path / "y/images.txt").read_text().splitlines()[1] == "http://example.org/media/b.png"
