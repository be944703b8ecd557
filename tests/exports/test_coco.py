"""COCO writer: the golden bbox and stable ids."""

from __future__ import annotations

import json

from genpromp_annotate.exports.coco import coco_dataset, write_coco


def test_golden_bbox(box_table):
    # 200×100 image, box 20,10→120,60 (x2/y2 one past the last pixel): w = 120−20 = 100, h = 60−10 = 50
    data = coco_dataset(box_table.iloc[:1])
    ann = data["annotations"][0]
    assert ann["bbox"] == [20, 10, 100, 50]
    assert ann["area"] == 100 * 50
    assert (ann["iscrowd"], ann["score"]) == (0, 0.9)


def test_ids_are_stable(box_table, categories, tmp_path):
    first = json.loads(write_coco(box_table, tmp_path / "1.json", categories).read_text())
    second = json.loads(write_coco(box_table.copy(), tmp_path / "2.json", categories).read_text())
    assert first == second
    assert first["categories"] == [{"id": 1, "name": "cat", "supercategory": "object"},
                                   {"id": 2, "name": "dog", "supercategory": "object"},
                                   {"id": 3, "name": "bird", "supercategory": "object"}]
    assert [i["id"] for i in first["images"]] == [1, 2, 3]  # order of first appearance
    assert [(a["id"], a["image_id"], a["category_id"]) for a in first["annotations"]] == [
        (1, 1, 1), (2, 2, 2), (3, 2, 2)]
