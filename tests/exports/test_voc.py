"""Pascal VOC writer: 1-based inclusive integer boxes."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from genpromp_annotate.exports.voc import voc_bndbox, write_voc


def test_golden_bndbox():
    # box 20,10→120,60 covers 0-based columns 20…119 and rows 10…59 → 1-based 21…120 and 11…60
    assert voc_bndbox(20, 10, 120, 60, 200, 100) == (21, 11, 120, 60)
    # the whole 64×48 image is 1…64 × 1…48; a zero-width box keeps xmax = xmin
    assert voc_bndbox(0, 0, 64, 48, 64, 48) == (1, 1, 64, 48)
    assert voc_bndbox(5, 5, 5, 5, 64, 48) == (6, 6, 6, 6)


def test_files(box_table, tmp_path):
    written = write_voc(box_table, tmp_path / "voc", folder="JPEGImages")
    assert [p.name for p in written] == ["a.xml", "b.xml", "a_2.xml"]
    root = ET.parse(written[0]).getroot()
    assert root.findtext("folder") == "JPEGImages" and root.findtext("filename") == "a.jpg"
    assert root.findtext("size/width") == "200" and root.findtext("object/name") == "cat"
    empty = ET.parse(written[2]).getroot()
    assert empty.findtext("filename") == "a.jpg" and empty.find("object") is None
