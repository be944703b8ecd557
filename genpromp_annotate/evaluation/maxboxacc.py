"""MaxBoxAcc and MaxBoxAccV2 (Choe et al., CVPR 2020) as method §6 fixes them, and a threshold sweep.

MaxBoxAccEvaluator follows the wsolevaluation conventions:
- each map is resized to 224×224 (bicubic, in float64 as the reference's CAMs are) and min-max normalised
  (bicubic overshoots [0, 1], and `uint8(map·255)` of a value above 1 would wrap around); as the reference's
  `normalize_scoremap`, a map with ANY NaN, or constant after the resize, becomes the all-zero map, which keeps
  no pixel at any τ and so gives the box `[0, 0, 0, 0]`, read by the inclusive IoU as the origin pixel (IoU 1
  with a GT box that resizes to `[0, 0, 0, 0]`);
- τ runs over `np.arange(0, 1, interval)` in float64; at each τ the uint8 map keeps pixels strictly above
  `int(τ·max)`; boxes are the bounding rectangles `[x, y, min(x+w, 223), min(y+h, 223)]` of ALL contours
  (V2) or of the largest one (v1); no contour gives `[0, 0, 0, 0]`;
- GT boxes go to the 224 frame as `int(c·224/W)` (multiply, divide, truncate; no clipping);
- an image counts at IoU level δ when its best box reaches IoU ≥ δ (inclusive pixels) with any GT box;
  per δ the best τ is taken; V2 reports the mean over δ ∈ {30, 50, 70}, v1 δ = 50 alone.

`best_threshold` sweeps τ with the engine's own box rule on its 512-frame maps, to calibrate a project's
threshold from human-corrected boxes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from genpromp_annotate.engine.boxes import boxes_from_map
from genpromp_annotate.errors import ConfigError
from genpromp_annotate.evaluation.iou import check_box_convention, iou_inclusive
from genpromp_annotate.evaluation.layouts import EvalRecord
from genpromp_annotate.evaluation.loc_metrics import gt_boxes_to_frame

EVAL_SIZE = 224


def normalize_map(map_: np.ndarray, size: int = EVAL_SIZE) -> np.ndarray:
    """`(H, W)` map → `(size, size)` float64 in [0, 1]: bicubic resize in float64, then min-max; all zeros
    when the resized map has any NaN or is constant (wsolevaluation's `normalize_scoremap`). Float32 would
    not do: its bicubic weights leave ulp ripples on a constant map, which min-max blows up to [0, 1]."""
    source = np.asarray(map_, dtype=np.float64)
    if source.ndim != 2:
        raise ConfigError(f"map: expected a 2-D (H, W) array, got shape {source.shape}")
    if source.shape != (size, size):
        source = np.asarray(cv2.resize(source, (size, size), interpolation=cv2.INTER_CUBIC), dtype=np.float64)
    if np.isnan(source).any():
        return np.zeros((size, size), dtype=np.float64)
    limit = float(np.finfo(np.float32).max)  # ±inf as before: the largest float32 magnitudes
    array = np.nan_to_num(source, posinf=limit, neginf=-limit)
    low, high = array.min(), array.max()
    if low == high:
        return np.zeros((size, size), dtype=np.float64)
    array = array - low
    return array / array.max()


def contour_rects_at_thresholds(map_01: np.ndarray, thresholds: np.ndarray,
                                largest_only: bool = False) -> list[np.ndarray | None]:
    """Bounding rects `(n, 4)` int `[x, y, w, h]` of the contours (tree retrieval) at each τ, or None where
    no pixel survives. The map is quantised once (`uint8(map·255)`, truncating); at each τ the pixels
    strictly above `int(τ·max)` are kept, and each distinct cut is contoured once."""
    gray = (np.asarray(map_01) * 255).astype(np.uint8)  # truncation, as the reference's astype
    peak = float(gray.max())
    by_cut: dict[int, np.ndarray | None] = {}
    result = []
    for tau in thresholds:
        cut = int(float(tau) * peak)
        if cut not in by_cut:
            _, mask = cv2.threshold(gray, cut, 255, cv2.THRESH_BINARY)  # keeps gray > cut
            contours, _ = cv2.findContours(mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
            if contours and largest_only:
                contours = (contours[int(np.argmax([cv2.contourArea(c) for c in contours]))],)
            by_cut[cut] = np.array([cv2.boundingRect(c) for c in contours], dtype=np.int64) if contours else None
        result.append(by_cut[cut])
    return result


def boxes_at_thresholds(map_01: np.ndarray, thresholds: np.ndarray, all_contours: bool = True) -> list[np.ndarray]:
    """Boxes of a normalised `(S, S)` map at each τ: a list of `(n_τ, 4)` int arrays (n_τ ≥ 1)."""
    height, width = np.shape(map_01)
    result = []
    for rects in contour_rects_at_thresholds(map_01, thresholds, largest_only=not all_contours):
        if rects is None:
            result.append(np.zeros((1, 4), dtype=np.int64))
            continue
        x, y, w, h = rects.T
        result.append(np.stack([x, y, np.minimum(x + w, width - 1), np.minimum(y + h, height - 1)], axis=1))
    return result


def gt_boxes_to_eval_frame(gt_boxes: object, width: int, height: int, size: int = EVAL_SIZE) -> np.ndarray:
    """`(K, 4)` original-pixel GT boxes → `int(c·size/W)` (x) and `int(c·size/H)` (y), no clipping."""
    b = check_box_convention(gt_boxes, "gt_boxes")
    divisor = np.array([width, height, width, height], dtype=np.float64)
    return np.trunc(b * size / divisor).astype(np.int64)


def image_best_ious(map_: np.ndarray, gt_boxes: object, image_size: tuple[int, int], thresholds: np.ndarray,
                    version: str = "v2", size: int = EVAL_SIZE) -> np.ndarray:
    """`(T,)` one image's best IoU with any GT box at each τ: all contours (v2) or the largest (v1).

    Args:
        map_: any `(H, W)` map of the whole image (resized to `size` and normalised here).
        gt_boxes: `(K, 4)` in original pixels; `image_size`: `(width, height)`.
    """
    gts = gt_boxes_to_eval_frame(gt_boxes, *image_size, size)
    per_tau = boxes_at_thresholds(normalize_map(map_, size), thresholds, all_contours=version == "v2")
    return np.array([iou_inclusive(boxes, gts).max() for boxes in per_tau])


@dataclass(frozen=True)
class MaxBoxAccResult:
    """`value` is the reported number (percent); `per_delta[δ]` the best accuracy over τ at IoU δ%."""

    version: str
    value: float
    per_delta: dict[int, float]
    best_threshold: dict[int, float]
    thresholds: np.ndarray  # (T,)
    curves: dict[int, np.ndarray]  # δ → (T,) accuracy (percent) at each τ
    count: int

    def as_dict(self) -> dict:
        return {"version": self.version, "value": self.value, "count": self.count,
                "per_delta": dict(self.per_delta), "best_threshold": dict(self.best_threshold)}


@dataclass
class MaxBoxAccEvaluator:
    """`accumulate(map, image_id)` per image, then `compute()`.

    Args:
        gt_boxes: image id → `(K, 4)` GT boxes in original pixels.
        image_sizes: image id → `(width, height)` in original pixels.
        version: "v2" (all contours, δ ∈ {30, 50, 70}) or "v1" (largest contour, δ = 50).
        interval: the τ grid step (0.01, or 0.001 for the fine grid).
        iou_thresholds: override the δ list (percent).
    """

    gt_boxes: Mapping[str, object]
    image_sizes: Mapping[str, tuple[int, int]]
    version: str = "v2"
    interval: float = 0.01
    iou_thresholds: Sequence[int] | None = None
    size: int = EVAL_SIZE
    thresholds: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        if self.version not in ("v1", "v2"):
            raise ConfigError(f"MaxBoxAcc version must be 'v1' or 'v2', got {self.version!r}")
        if not 0 < self.interval < 1:
            raise ConfigError(f"MaxBoxAcc threshold interval must be within (0, 1), got {self.interval}")
        if self.iou_thresholds is None:
            self.iou_thresholds = (30, 50, 70) if self.version == "v2" else (50,)
        self._deltas: tuple[int, ...] = tuple(self.iou_thresholds)
        self.thresholds = np.arange(0, 1, self.interval)  # float64, i·interval, as the reference
        self._correct = {d: np.zeros(len(self.thresholds), dtype=np.int64) for d in self._deltas}
        self._count = 0
        self._seen: set[str] = set()

    def accumulate(self, map_: np.ndarray, image_id: str) -> np.ndarray:
        """Add one image's map (any `(H, W)`; it is resized to 224). Returns `(T,)` its best IoU per τ."""
        if image_id not in self.gt_boxes or image_id not in self.image_sizes:
            raise ConfigError(f"MaxBoxAcc: image id {image_id!r} has no GT boxes or size in the metadata")
        best = image_best_ious(map_, self.gt_boxes[image_id], self.image_sizes[image_id], self.thresholds,
                               self.version, self.size)
        self.add(image_id, best)
        return best

    def add(self, image_id: str, best: np.ndarray) -> None:
        """Add one image's `(T,)` best IoU per τ, computed elsewhere with `image_best_ious` (e.g. in a worker)."""
        if image_id in self._seen:
            raise ConfigError(f"MaxBoxAcc: image id {image_id!r} was accumulated twice")
        if np.shape(best) != self.thresholds.shape:
            raise ConfigError(f"MaxBoxAcc: {image_id!r} has {np.shape(best)} IoUs for {len(self.thresholds)} τ values")
        self._seen.add(image_id)
        for delta in self._deltas:
            self._correct[delta] += best >= delta / 100
        self._count += 1

    def compute(self) -> MaxBoxAccResult:
        if self._count == 0:
            raise ConfigError("MaxBoxAcc: no image was accumulated")
        curves = {d: 100.0 * c / self._count for d, c in self._correct.items()}
        per_delta = {d: float(curve.max()) for d, curve in curves.items()}
        best = {d: float(self.thresholds[int(np.argmax(curve))]) for d, curve in curves.items()}
        value = float(np.mean(list(per_delta.values())))
        return MaxBoxAccResult(self.version, value, per_delta, best, self.thresholds, curves, self._count)


def map_file(maps_dir: Path, image_id: str) -> Path:
    """Where wsolevaluation keeps an image's map: `<maps_dir>/<image_id>.npy`, the id keeping its
    extension (`a/b.jpg` → `a/b.jpg.npy`)."""
    return Path(maps_dir) / f"{image_id}.npy"


def evaluate_map_folder(records: Sequence[EvalRecord], maps_dir: Path, version: str = "v2",
                        interval: float = 0.01) -> MaxBoxAccResult:
    """MaxBoxAcc(V2) of the maps saved under `maps_dir` (`map_file`) for layout records that know their size."""
    missing_size = [r.image_id for r in records if r.size is None]
    if missing_size:
        raise ConfigError(f"MaxBoxAcc needs image sizes; {len(missing_size)} record(s) lack one, e.g. "
                          f"{missing_size[0]!r} (the wsolevaluation layout records them in image_sizes.txt)")
    evaluator = MaxBoxAccEvaluator({r.image_id: r.gt_boxes for r in records},
                                   {r.image_id: r.size for r in records if r.size is not None},
                                   version=version, interval=interval)
    for record in records:
        path = map_file(maps_dir, record.image_id)
        if not path.is_file():
            raise ConfigError(f"{path}: no map for image {record.image_id!r} (expected <maps>/<image_id>.npy)")
        evaluator.accumulate(np.load(path), record.image_id)
    return evaluator.compute()


@dataclass(frozen=True)
class ThresholdSweep:
    """The chosen τ, its accuracy (percent of images with IoU ≥ δ) and the whole curve."""

    threshold: float
    accuracy: float
    thresholds: np.ndarray  # (T,)
    accuracies: np.ndarray  # (T,) percent


def best_threshold(maps: Sequence[np.ndarray], gt_boxes: Sequence[object],
                   image_sizes: Sequence[tuple[int, int]] | None = None, thresholds: np.ndarray | None = None,
                   iou_threshold: float = 0.5, multi_box: bool = False, min_area_fraction: float = 0.0,
                   prefer: float | None = None) -> ThresholdSweep:
    """The τ that maximises MaxBoxAcc at `iou_threshold` with the engine's own box rule.

    Args:
        maps: `(S, S)` float maps in [0, 1], as `Localizer.localize(..., keep_maps=True)` returns in `map_512`.
        gt_boxes: per image `(K, 4)` boxes; original pixels when `image_sizes` is given (rescaled into the
            S frame by method §6's rule), otherwise already in the map's frame.
        image_sizes: per image `(width, height)`.
        thresholds: the τ grid, default `np.arange(0, 1, 0.01)`.
        multi_box, min_area_fraction: as `boxes_from_map` (the image's best box counts).
        prefer: among τ tied for the best accuracy, the one closest to this (e.g. the current threshold);
            default the middle one of the tied values.
    """
    if len(maps) == 0 or len(maps) != len(gt_boxes):
        raise ConfigError(f"best_threshold: need one GT box list per map, got {len(maps)} maps and "
                          f"{len(gt_boxes)} GT lists")
    if image_sizes is not None and len(image_sizes) != len(maps):
        raise ConfigError(f"best_threshold: got {len(image_sizes)} image sizes for {len(maps)} maps")
    grid = np.arange(0, 1, 0.01) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    correct = np.zeros(len(grid), dtype=np.int64)
    for i, map_01 in enumerate(maps):
        height, width = map_01.shape
        if image_sizes is None:
            gts = check_box_convention(gt_boxes[i], f"gt_boxes[{i}]")
        else:
            if height != width:
                raise ConfigError(f"best_threshold: map {i} must be square (the engine's frame), got {map_01.shape}")
            gts = gt_boxes_to_frame(gt_boxes[i], *image_sizes[i], size=width)
        for t, tau in enumerate(grid):
            boxes = boxes_from_map(map_01, float(tau), multi_box, min_area_fraction)
            if not boxes:  # no detection: a miss
                continue
            predicted = np.array([[b.x1, b.y1, b.x2, b.y2] for b in boxes])
            correct[t] += iou_inclusive(predicted, gts).max() >= iou_threshold
    accuracies = 100.0 * correct / len(maps)
    tied = np.flatnonzero(accuracies == accuracies.max())
    if prefer is None:
        pick = int(tied[len(tied) // 2])
    else:
        pick = int(tied[np.argmin(np.abs(grid[tied] - prefer))])
    return ThresholdSweep(float(grid[pick]), float(accuracies[pick]), grid, accuracies)
