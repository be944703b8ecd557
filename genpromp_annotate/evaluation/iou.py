"""Inclusive-pixel IoU (method §6) and the box-convention checks.

The WSOL benchmarks read every box `[x1, y1, x2, y2]` as covering pixels `x1 … x2` inclusive:
`w = min(x2) − max(x1) + 1`, area `(x2 − x1 + 1)·(y2 − y1 + 1)`. Boxes produced as `[x, y, x+w, y+h]`
(one past the last pixel) are read the same way, which is why a perfect k×k box scores k²/(k+1)².
"""

from __future__ import annotations

import numpy as np

from genpromp_annotate.errors import GenprompError


class BoxFormatError(GenprompError):
    """Boxes that are not `(N, 4)` arrays of `[x1, y1, x2, y2]` with x1 ≤ x2 and y1 ≤ y2."""


def as_boxes(boxes: object, name: str = "boxes") -> np.ndarray:
    """`(N, 4)` float64 view of one box `(4,)` or many; raises BoxFormatError naming `name`."""
    array = np.asarray(boxes, dtype=np.float64)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != 4:
        raise BoxFormatError(f"{name}: expected boxes of shape (N, 4) as [x1, y1, x2, y2], got shape "
                             f"{np.asarray(boxes).shape}")
    return array


def check_box_convention(boxes: object, name: str = "boxes") -> np.ndarray:
    """`as_boxes`, then require x1 ≤ x2, y1 ≤ y2 and finite values (an `x, y, w, h` box usually fails)."""
    array = as_boxes(boxes, name)
    if not np.isfinite(array).all():
        raise BoxFormatError(f"{name}: boxes must be finite, got {array[~np.isfinite(array).all(1)][0].tolist()}")
    bad = (array[:, 2] < array[:, 0]) | (array[:, 3] < array[:, 1])
    if bad.any():
        raise BoxFormatError(f"{name}: box {int(bad.nonzero()[0][0])} = {array[bad][0].tolist()} has x2 < x1 or "
                             "y2 < y1; expected [x1, y1, x2, y2] (not [x, y, w, h])")
    return array


def box_areas(boxes: object) -> np.ndarray:
    """`(N,)` inclusive-pixel areas `(x2 − x1 + 1)·(y2 − y1 + 1)`."""
    b = as_boxes(boxes)
    return (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)


def intersection_areas(boxes_a: object, boxes_b: object) -> np.ndarray:
    """`(N, M)` inclusive-pixel intersection areas, 0 where boxes do not overlap."""
    a, b = as_boxes(boxes_a, "boxes_a"), as_boxes(boxes_b, "boxes_b")
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + 1
    return np.clip(w, 0, None) * np.clip(h, 0, None)


def iou_inclusive(boxes_a: object, boxes_b: object) -> np.ndarray:
    """`(N, M)` float64 IoU of every box of `boxes_a` `(N, 4)` with every box of `boxes_b` `(M, 4)`.

    Golden: IoU([1,2,5,6], [3,1,4,5]) = (2·4) / (25 + 10 − 8) = 8/27.
    """
    inter = intersection_areas(boxes_a, boxes_b)
    union = box_areas(boxes_a)[:, None] + box_areas(boxes_b)[None, :] - inter
    return inter / union
