"""Pixel boxes ↔ Label Studio percent regions."""

from __future__ import annotations

import pytest

from genpromp_annotate.engine.boxes import Box
from genpromp_annotate.errors import LabelConfigError
from genpromp_annotate.labelstudio.regions import box_from_region, region_from_box


def test_region_is_percent_of_the_original_size():
    region = region_from_box(Box(20, 10, 70, 40, 0.8), 200, 100, "cat", "box", "image")
    # x 20/200 = 10 %, y 10/100 = 10 %, width (70−20)/200 = 25 %, height (40−10)/100 = 30 %
    assert region["value"] == {"x": 10.0, "y": 10.0, "width": 25.0, "height": 30.0, "rotation": 0,
                               "rectanglelabels": ["cat"]}
    assert (region["original_width"], region["original_height"], region["image_rotation"]) == (200, 100, 0)
    assert (region["from_name"], region["to_name"], region["type"], region["score"]) == ("box", "image",
                                                                                          "rectanglelabels", 0.8)


def test_round_trip_is_exact_on_pixel_boxes():
    box = Box(3, 7, 61, 45, 0.5)
    label, back = box_from_region(region_from_box(box, 64, 48, "dog", "b", "i"))
    assert label == "dog" and (back.x1, back.y1, back.x2, back.y2) == (3, 7, 61, 45)


def test_whole_image_box_is_0_to_100_percent():
    value = region_from_box(Box(0, 0, 33, 17, 1.0), 33, 17, "c", "b", "i")["value"]
    assert (value["x"], value["y"], value["width"], value["height"]) == (0, 0, 100, 100)


@pytest.mark.parametrize("region, message", [
    ({"id": "a", "value": {"x": 1, "y": 1, "width": 2}, "original_width": 10, "original_height": 10}, "height"),
    ({"id": "a", "value": {"x": 1, "y": 1, "width": 2, "height": 2, "rectanglelabels": ["c"]}}, "original_width"),
    ({"id": "a", "value": {"x": 1, "y": 1, "width": 2, "height": 2, "rotation": 30, "rectanglelabels": ["c"]},
      "original_width": 10, "original_height": 10}, "rotation"),
    ({"id": "a", "value": {"x": 1, "y": 1, "width": 2, "height": 2, "rectanglelabels": []},
      "original_width": 10, "original_height": 10}, "rectanglelabels"),
])
def test_bad_regions_name_the_field(region, message):
    with pytest.raises(LabelConfigError, match=message):
        box_from_region(region)
