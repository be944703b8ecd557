"""Label Studio writer: method §8 regions, validated by the SDK and converted by its COCO converter."""

from __future__ import annotations

import json

import pytest

from genpromp_annotate.exports.label_studio import label_config_xml, label_studio_tasks, write_label_studio


def test_golden_region(box_table):
    task = label_studio_tasks(box_table.iloc[:1])[0]
    assert task["data"] == {"image": "imgs/a.jpg", "label": "cat"}
    (prediction,) = task["predictions"]
    assert (prediction["model_version"], prediction["score"]) == ("v1", 0.9)
    # 200×100 image, box 20,10→120,60: x = 20/200 = 10 %, y = 10/100 = 10 %, width = 100/200 = 50 %,
    # height = 50/100 = 50 %
    assert prediction["result"] == [{
        "from_name": "label", "to_name": "image", "type": "rectanglelabels",
        "original_width": 200, "original_height": 100, "image_rotation": 0,
        "value": {"x": 10.0, "y": 10.0, "width": 50.0, "height": 50.0, "rotation": 0,
                  "rectanglelabels": ["cat"]},
        "score": 0.9,
    }]


def test_one_prediction_per_model_version_and_none_without_box(box_table):
    tasks = label_studio_tasks(box_table)
    assert [p["model_version"] for p in tasks[1]["predictions"]] == ["v1", "v2"]
    assert tasks[2]["predictions"] == []


def test_custom_names_validate_against_a_matching_config(box_table, categories):
    from label_studio_sdk.label_interface import LabelInterface

    tasks = label_studio_tasks(box_table, categories, from_name="bbox", to_name="photo", data_key="img")
    interface = LabelInterface(label_config_xml(categories, from_name="bbox", to_name="photo", data_key="img"))
    assert tasks[0]["data"]["img"] == "imgs/a.jpg"
    for task in tasks:
        for prediction in task["predictions"]:
            assert interface.validate_prediction(prediction, return_errors=True) == []
    # and the default config does not accept them: the names matter
    assert LabelInterface(label_config_xml(categories)).validate_prediction(
        tasks[0]["predictions"][0], return_errors=True)


def test_label_config_escapes_names():
    xml = label_config_xml(['a "b"', "c & d"])
    assert "value='a \"b\"'" in xml and 'value="c &amp; d"' in xml


def test_sdk_converter_turns_the_tasks_into_coco(box_table, categories, tmp_path):
    """Accept every prediction as an annotation (what a reviewer does) and export COCO with the SDK."""
    from label_studio_sdk.converter import Converter

    tasks = json.loads(write_label_studio(box_table, tmp_path / "tasks.json", categories).read_text())
    for task_id, task in enumerate(tasks, start=1):
        task["id"] = task_id
        task["annotations"] = [{"id": task_id, "result": [r for p in task["predictions"] for r in p["result"]]}]
    (tmp_path / "accepted.json").write_text(json.dumps(tasks))
    converter = Converter(config=label_config_xml(categories), project_dir=str(tmp_path), download_resources=False)
    converter.convert(str(tmp_path / "accepted.json"), str(tmp_path / "coco"), "COCO", is_dir=False)
    coco = json.loads((tmp_path / "coco/result.json").read_text())
    boxes = [(a["image_id"], a["bbox"]) for a in coco["annotations"]]
    # the converter numbers images from 0; bboxes come back from percent × original size
    assert [b[0] for b in boxes] == [0, 1, 1]
    assert boxes[0][1] == pytest.approx([20, 10, 100, 50])
    assert boxes[2][1] == pytest.approx([10.5, 5.25, 20.25, 34.75])


def test_regions_never_leave_the_image():
    from genpromp_annotate.exports.label_studio import region_from_box
    from genpromp_annotate.exports.table import ExportBox

    # every box ending at the right edge of images 1…59 px wide: x + width must stay ≤ 100 % although
    # x1/W·100 + (W − x1)/W·100 rounds above 100 for some (W = 3, x1 = 1: 33.333… + 66.666… = 100.00000000000001)
    for width in range(1, 60):
        for x1 in range(width):
            value = region_from_box(ExportBox("cat", x1, 0, width, 7, 0.5, "v"), width, 7)["value"]
            assert value["x"] + value["width"] <= 100.0
            assert value["width"] == pytest.approx((width - x1) / width * 100)
