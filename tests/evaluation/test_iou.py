"""Inclusive-pixel IoU: method §6 golden value, vectorisation, convention checks."""

from __future__ import annotations

import numpy as np
import pytest

from genpromp_annotate.evaluation.iou import (
    BoxFormatError,
    check_box_convention,
    intersection_areas,
    iou_inclusive,
)


def test_golden_8_over_27():
    # [1,2,5,6] covers x 1…5, y 2…6: 5·5 = 25 px; [3,1,4,5] covers x 3…4, y 1…5: 2·5 = 10 px;
    # overlap x 3…4, y 2…5: 2·4 = 8 px; union 25 + 10 − 8 = 27
    assert iou_inclusive([1, 2, 5, 6], [3, 1, 4, 5])[0, 0] == pytest.approx(8 / 27)
    assert iou_inclusive([3, 1, 4, 5], [1, 2, 5, 6])[0, 0] == pytest.approx(8 / 27)


def test_touching_boxes_share_a_pixel_column():
    # [0,0,2,2] and [2,0,4,2] share column x = 2: 1·3 = 3 px of 9 + 9 − 3 = 15
    assert iou_inclusive([0, 0, 2, 2], [2, 0, 4, 2])[0, 0] == pytest.approx(3 / 15)
    assert iou_inclusive([0, 0, 2, 2], [3, 0, 4, 2])[0, 0] == 0.0


def test_vectorised_equals_pairwise():
    rng = np.random.default_rng(0)
    xy = rng.integers(0, 50, (7, 2))
    a = np.concatenate([xy, xy + rng.integers(0, 30, (7, 2))], axis=1)
    xy = rng.integers(0, 50, (5, 2))
    b = np.concatenate([xy, xy + rng.integers(0, 30, (5, 2))], axis=1)
    table = iou_inclusive(a, b)
    assert table.shape == (7, 5)
    for i in range(7):
        for j in range(5):
            assert table[i, j] == iou_inclusive(a[i], b[j])[0, 0]
    assert intersection_areas(a, b).shape == (7, 5)


def test_convention_check_names_an_xywh_box():
    with pytest.raises(BoxFormatError, match=r"gt: box 1 .* \(not \[x, y, w, h\]\)"):
        check_box_convention([[0, 0, 10, 10], [20, 20, 5, 5]], "gt")
    with pytest.raises(BoxFormatError, match=r"shape \(N, 4\)"):
        iou_inclusive([1, 2, 3], [1, 2, 3, 4])
