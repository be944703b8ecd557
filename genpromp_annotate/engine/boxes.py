"""Map → boxes (method §4 step 8): threshold, contours, largest (or all), a score, original pixels."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

# What the reference returns when nothing survives the threshold (in the 512 frame).
EMPTY_BOX_512 = (0, 0, 1, 1)


@dataclass(frozen=True)
class Box:
    """An axis-aligned box, `x2`/`y2` one past the last pixel, with a confidence in [0, 1]."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def threshold_mask(map_01: np.ndarray, threshold: float) -> np.ndarray:
    """uint8 mask of pixels strictly above `int(τ·max)` of the uint8-quantised map (the reference rule)."""
    gray = (map_01 * 255).astype(np.uint8)  # truncation, as the reference's astype
    cut = int(threshold * float(gray.max()))
    _, mask = cv2.threshold(gray, cut, 255, cv2.THRESH_BINARY)  # THRESH_BINARY keeps src > cut
    return mask


def _contour_score(map_01: np.ndarray, contour: np.ndarray) -> float:
    """Mean map value inside the filled contour: how strongly the region as a whole attends to the label."""
    region = np.zeros(map_01.shape, dtype=np.uint8)
    cv2.drawContours(region, [contour], -1, 1, thickness=cv2.FILLED)
    inside = region.astype(bool)
    return float(map_01[inside].mean()) if inside.any() else 0.0


def boxes_from_map(map_01: np.ndarray, threshold: float, multi_box: bool = False,
                   min_area_fraction: float = 0.0) -> list[Box]:
    """Boxes in the map's own pixel frame.

    Args:
        map_01: `(H, W)` float map in [0, 1].
        threshold: τ (0.23 CUB, 0.25 ImageNet).
        multi_box: False = the paper (largest contour of a tree retrieval, one box); True = one box per
            outer contour whose area is at least `min_area_fraction` of the map (the largest is always kept).
    Returns:
        Boxes sorted by decreasing area (paper) or score (multi-box); empty when no pixel survives τ
        (no detection: nothing to store, export or send). Evaluators that follow the reference's
        `[0, 0, 1, 1]` convention use `reference_box`.
    """
    mask = threshold_mask(map_01, threshold)
    mode = cv2.RETR_EXTERNAL if multi_box else cv2.RETR_TREE
    contours, _ = cv2.findContours(mask, mode, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return []
    areas = [cv2.contourArea(c) for c in contours]
    largest = int(np.argmax(areas))
    if not multi_box:
        chosen = [contours[largest]]
    else:
        floor = min_area_fraction * map_01.shape[0] * map_01.shape[1]
        chosen = [c for i, c in enumerate(contours) if i == largest or areas[i] >= floor]
    boxes = []
    for contour in chosen:
        x, y, w, h = cv2.boundingRect(contour)
        boxes.append(Box(float(x), float(y), float(x + w), float(y + h), _contour_score(map_01, contour)))
    if multi_box:
        boxes.sort(key=lambda b: b.score, reverse=True)
    return boxes


def reference_box(map_01: np.ndarray, threshold: float) -> Box:
    """The paper's one box of a map for evaluation: the largest contour's, or the reference's
    `[0, 0, 1, 1]` (score 0) when no pixel survives τ, so benchmark numbers keep its convention."""
    boxes = boxes_from_map(map_01, threshold)
    if boxes:
        return boxes[0]
    x1, y1, x2, y2 = EMPTY_BOX_512
    return Box(float(x1), float(y1), float(x2), float(y2), score=0.0)


def scale_box(box: Box, from_size: tuple[int, int], to_size: tuple[int, int]) -> Box:
    """Map a box from a `(width, height)` frame to another, clipped to the target (e.g. 512 → original)."""
    sx = to_size[0] / from_size[0]
    sy = to_size[1] / from_size[1]
    return Box(
        x1=round(min(max(box.x1 * sx, 0.0), to_size[0]), 2),
        y1=round(min(max(box.y1 * sy, 0.0), to_size[1]), 2),
        x2=round(min(max(box.x2 * sx, 0.0), to_size[0]), 2),
        y2=round(min(max(box.y2 * sy, 0.0), to_size[1]), 2),
        score=round(box.score, 4),
    )
