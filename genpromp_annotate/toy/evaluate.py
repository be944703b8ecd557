"""Scoring maps of toy-world images: the label's box against its GT boxes, over a grid of τ."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from genpromp_annotate.engine.boxes import reference_box
from genpromp_annotate.evaluation.iou import iou_inclusive
from genpromp_annotate.toy.world import WorldImage, render_scene

TAU_GRID: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(1, 19))  # 0.05 … 0.90


def render_with_gt(item: WorldImage, width: int = 64, height: int | None = None) -> tuple[Image.Image, np.ndarray]:
    """The image and the `(K, 4)` GT boxes (one past the last pixel) of every object of its label's class."""
    image, objects = render_scene(item.scene, width, height)
    boxes = np.asarray([box for cls, box in objects if cls == item.label], dtype=np.float64)
    return image, boxes


def box_ious_over_taus(maps: np.ndarray, gt_boxes: Sequence[np.ndarray],
                       taus: Sequence[float] = TAU_GRID) -> np.ndarray:
    """`(N, T)` IoU of each map's largest-contour box at each τ with its best-matching GT box.

    Maps and GT boxes share one pixel frame. IoU is the inclusive-pixel one of the paper's evaluation.
    """
    result = np.zeros((len(maps), len(taus)))
    for i, (map_, gts) in enumerate(zip(maps, gt_boxes)):
        for j, tau in enumerate(taus):
            box = reference_box(map_, tau)
            pred = np.asarray([[box.x1, box.y1, box.x2, box.y2]])
            result[i, j] = float(iou_inclusive(pred, gts).max())
    return result
