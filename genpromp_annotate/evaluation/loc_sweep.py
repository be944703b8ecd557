"""GT-known / Top-1 / Top-5 Loc at every τ of a grid: the best τ per metric, and τ calibration.

The paper's Loc metrics take one τ fixed in advance (0.23 CUB, 0.25 ImageNet). This sweep answers two
other questions with the very box rule the engine applies (`engine/boxes.py`, largest contour, 512 frame):
- which τ would have been best on this split (an oracle figure, reported for reference only);
- which τ is best on a held-out split (`benchmark --calibrate-on`), to be used on the test split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from genpromp_annotate.engine.boxes import EMPTY_BOX_512
from genpromp_annotate.errors import ConfigError
from genpromp_annotate.evaluation.iou import iou_inclusive
from genpromp_annotate.evaluation.loc_metrics import gt_boxes_to_frame
from genpromp_annotate.evaluation.maxboxacc import contour_rects_at_thresholds

LOC_METRICS: tuple[str, ...] = ("gt_known_loc", "top1_loc", "top5_loc")


def largest_boxes_at_thresholds(map_01: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """`(T, 4)` the paper's one box (`reference_box(map, τ)`) at each τ, `[x, y, x+w, y+h]`, without
    re-quantising the map or scoring the box at every τ."""
    boxes = np.empty((len(thresholds), 4), dtype=np.int64)
    for i, rects in enumerate(contour_rects_at_thresholds(map_01, thresholds, largest_only=True)):
        if rects is None:
            boxes[i] = EMPTY_BOX_512
        else:
            x, y, w, h = rects[0]
            boxes[i] = (x, y, x + w, y + h)
    return boxes


def sweep_ious(map_01: np.ndarray, gt_boxes: object, width: int, height: int, thresholds: np.ndarray,
               size: int = 512) -> np.ndarray:
    """`(T,)` IoU of the engine's box at each τ with the best GT box (original pixels, rescaled to `size`)."""
    if map_01.shape != (size, size):
        raise ConfigError(f"Loc sweep: map of shape {map_01.shape}, expected ({size}, {size})")
    gts = gt_boxes_to_frame(gt_boxes, width, height, size)
    return iou_inclusive(largest_boxes_at_thresholds(map_01, thresholds), gts).max(axis=1)


@dataclass(frozen=True)
class LocSweepResult:
    """Per metric the accuracy curve over τ (percent), its best τ and value; None without a classifier."""

    thresholds: np.ndarray  # (T,)
    curves: dict[str, np.ndarray | None]  # LOC_METRICS → (T,) percent
    count: int

    def best(self, metric: str, prefer: float | None = None) -> tuple[float, float] | None:
        """(τ, accuracy) maximising `metric`; among tied τ the one closest to `prefer` (else the lowest)."""
        curve = self.curves.get(metric)
        if curve is None:
            return None
        tied = np.flatnonzero(curve == curve.max())
        pick = int(tied[0] if prefer is None else tied[np.argmin(np.abs(self.thresholds[tied] - prefer))])
        return float(self.thresholds[pick]), float(curve[pick])

    def as_dict(self) -> dict[str, dict[str, float] | None]:
        """metric → {"threshold": τ, "value": accuracy} (None for Top-1/Top-5 without a classifier)."""
        out: dict[str, dict[str, float] | None] = {}
        for metric in LOC_METRICS:
            best = self.best(metric)
            out[metric] = None if best is None else {"threshold": best[0], "value": best[1]}
        return out


@dataclass
class LocSweep:
    """`accumulate` one image at a time (its 512-frame map), then `compute()`.

    Args:
        thresholds: the τ grid, default `np.arange(0, 1, 0.01)`.
        size: the map's frame (the engine's image size).
    """

    thresholds: np.ndarray = field(default_factory=lambda: np.arange(0, 1, 0.01))
    size: int = 512
    _ious: list[np.ndarray] = field(default_factory=list, init=False)
    _top1: list[bool | None] = field(default_factory=list, init=False)
    _top5: list[bool | None] = field(default_factory=list, init=False)

    def accumulate(self, map_01: np.ndarray, gt_boxes: object, width: int, height: int, label: int,
                   ranking: object | None = None) -> np.ndarray:
        """Add one image. `ranking`: the classifier's class ids, best first. Returns `(T,)` its IoU per τ."""
        ious = sweep_ious(map_01, gt_boxes, width, height, self.thresholds, self.size)
        self.add(ious, label, ranking)
        return ious

    def add(self, ious: np.ndarray, label: int, ranking: object | None = None) -> None:
        """Add one image's `(T,)` IoU per τ, computed elsewhere with `sweep_ious` (e.g. in a worker)."""
        self._ious.append(np.asarray(ious, dtype=np.float64))
        ranked = None if ranking is None else np.asarray(ranking).tolist()
        self._top1.append(None if ranked is None else ranked[0] == label)
        self._top5.append(None if ranked is None else label in ranked[:5])

    def compute(self) -> LocSweepResult:
        if not self._ious:
            raise ConfigError("Loc sweep: no image was accumulated")
        ious = np.stack(self._ious)  # (N, T)
        n = len(ious)
        curves: dict[str, np.ndarray | None] = {"gt_known_loc": 100.0 * (ious >= 0.5).sum(0) / n}
        for metric, flags in (("top1_loc", self._top1), ("top5_loc", self._top5)):
            if any(flag is None for flag in flags):
                curves[metric] = None
            else:
                right = np.array(flags, dtype=bool)[:, None]
                curves[metric] = 100.0 * ((ious > 0.5) & right).sum(0) / n
        return LocSweepResult(np.asarray(self.thresholds, dtype=np.float64), curves, n)
