"""Boxes of synthetic maps equal hand-derived ones (maps are indexed [y][x])."""

import numpy as np
import pytest

from genpromp_annotate.engine.boxes import Box, boxes_from_map, reference_box, scale_box, threshold_mask


def _map_with_rectangles(rects, background=0.1, size=512):
    """A size×size map: `background`, and value v inside each (x1, y1, x2, y2, v), x2/y2 exclusive."""
    m = np.full((size, size), background, dtype=np.float32)
    for x1, y1, x2, y2, v in rects:
        m[y1:y2, x1:x2] = v
    return m


def test_one_rectangle_gives_its_bounding_box():
    # pixels x 100..199, y 50..149 at 1.0; background 0.1 → uint8 25 ≤ int(0.25·255) = 63 → dropped
    m = _map_with_rectangles([(100, 50, 200, 150, 1.0)])
    (box,) = boxes_from_map(m, threshold=0.25)
    assert (box.x1, box.y1, box.x2, box.y2) == (100, 50, 200, 150)  # [x, y, x+w, y+h]
    assert box.score == pytest.approx(1.0)


def test_threshold_is_strict_on_the_uint8_map():
    # background uint8 = int(63.5) = 63 = int(0.25·255): equal is NOT above → dropped
    m = _map_with_rectangles([(10, 20, 30, 60, 1.0)], background=63.5 / 255)
    assert int(threshold_mask(m, 0.25)[0, 0]) == 0
    (box,) = boxes_from_map(m, 0.25)
    assert (box.x1, box.y1, box.x2, box.y2) == (10, 20, 30, 60)
    # one grey level more (64 > 63) and the whole map survives
    m2 = _map_with_rectangles([(10, 20, 30, 60, 1.0)], background=64.5 / 255)
    (box2,) = boxes_from_map(m2, 0.25)
    assert (box2.x1, box2.y1, box2.x2, box2.y2) == (0, 0, 512, 512)


def test_largest_contour_wins_in_the_paper_preset():
    m = _map_with_rectangles([(0, 0, 40, 40, 1.0), (300, 300, 400, 420, 0.8)])
    (box,) = boxes_from_map(m, 0.25)
    assert (box.x1, box.y1, box.x2, box.y2) == (300, 300, 400, 420)  # 100×120 beats 40×40


def test_multi_box_keeps_every_region_above_the_minimum_area():
    m = _map_with_rectangles([(0, 0, 40, 40, 1.0), (300, 300, 400, 420, 0.8), (450, 10, 455, 15, 1.0)])
    boxes = boxes_from_map(m, 0.25, multi_box=True, min_area_fraction=0.005)  # 0.005·512² ≈ 1311 px
    coords = [(b.x1, b.y1, b.x2, b.y2) for b in boxes]
    assert coords == [(0, 0, 40, 40), (300, 300, 400, 420)]  # by score: 1.0 then 0.8; the 5×5 dot dropped
    assert boxes[0].score == pytest.approx(1.0) and boxes[1].score == pytest.approx(0.8)


def test_nothing_above_threshold_is_no_box_and_the_evaluators_keep_the_reference_fallback():
    empty = np.zeros((512, 512), np.float32)
    assert boxes_from_map(empty, 0.25) == [] and boxes_from_map(empty, 0.25, multi_box=True) == []
    box = reference_box(empty, 0.25)
    assert (box.x1, box.y1, box.x2, box.y2, box.score) == (0, 0, 1, 1, 0.0)


def test_coordinates_map_back_to_non_square_originals():
    box = Box(100, 50, 200, 150, 0.5)
    # 512×512 frame → 1024 wide (×2), 256 high (×0.5)
    assert scale_box(box, (512, 512), (1024, 256)) == Box(200, 25, 400, 75, 0.5)
    # 640×427 (a typical photo): x × 1.25, y × 0.833984375
    out = scale_box(box, (512, 512), (640, 427))
    assert (out.x1, out.y1, out.x2, out.y2) == (125.0, 41.7, 250.0, 125.1)
    # never outside the image
    assert scale_box(Box(0, 0, 512, 512, 1.0), (512, 512), (33, 17)) == Box(0, 0, 33, 17, 1.0)
