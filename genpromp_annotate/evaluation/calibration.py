"""Box scores as probabilities: P(the box has IoU ≥ 0.5 with a true object | its raw score).

A raw box score is a map statistic (the mean map value inside the box's contour): higher is better,
but 0.6 does not mean "right 60 % of the time". Given boxes whose outcome is known (hit = IoU ≥ 0.5
with a human box of the label), `fit_calibration` learns a monotone map raw → probability by isotonic
regression (pool adjacent violators), with a small Beta prior so that a handful of boxes never yields
0 or 1. `reliability_table` and `expected_calibration_error` measure how well scores match outcomes.
Pure numpy: the store keeps `ScoreCalibration.as_dict()`, the project API fits and applies it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from genpromp_annotate.errors import GenprompError

HIT_IOU = 0.5  # what a "hit" means: the box has IoU ≥ 0.5 with a true object of its label
DEFAULT_PRIOR = 2.0  # pseudo-boxes (at the smoothed overall hit rate) added to every isotonic block
FORMAT = "isotonic-v1"  # `as_dict()["format"]`: how the knots are read back


class CalibrationError(GenprompError):
    """Scores and outcomes that cannot be calibrated (none, mismatched, not finite), or a bad stored fit."""


def _checked(scores: object, hits: object) -> tuple[np.ndarray, np.ndarray]:
    """`(N,)` float64 scores and `(N,)` 0/1 hits, or CalibrationError saying what is wrong."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    h = np.asarray(hits).reshape(-1)
    if s.shape != h.shape:
        raise CalibrationError(f"scores and hits differ in length: {s.size} scores, {h.size} hits")
    if not np.isfinite(s).all():
        raise CalibrationError(f"scores must be finite, got {s[~np.isfinite(s)][0]} (a box without a score "
                               "is a person's: leave it out)")
    if h.size and not np.isin(h, (0, 1)).all():
        raise CalibrationError(f"hits must be 0/1 or booleans, got {h[~np.isin(h, (0, 1))][0]!r}")
    return s, h.astype(np.float64)


# ---- measuring ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReliabilityBin:
    """Boxes whose score falls in `[low, high)` (the last bin includes 1): how many, their mean score,
    and the fraction that were hits (both None for an empty bin)."""

    low: float
    high: float
    count: int
    mean_score: float | None
    hit_rate: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "count": self.count,
                "mean_score": None if self.mean_score is None else round(self.mean_score, 4),
                "hit_rate": None if self.hit_rate is None else round(self.hit_rate, 4)}


def _bin_index(scores: np.ndarray, bins: int) -> np.ndarray:
    if bins < 1:
        raise CalibrationError(f"bins must be at least 1, got {bins}")
    if scores.size and (scores.min() < 0.0 or scores.max() > 1.0):
        raise CalibrationError(f"reliability bins cover [0, 1]; got a score of "
                               f"{scores[(scores < 0) | (scores > 1)][0]}")
    return np.minimum((scores * bins).astype(np.int64), bins - 1)


def reliability_table(scores: Sequence[float] | np.ndarray, hits: Sequence[bool] | np.ndarray,
                      bins: int = 10) -> list[ReliabilityBin]:
    """Per equal-width score bin over [0, 1]: count, mean score, fraction of hits (empty bins included)."""
    s, h = _checked(scores, hits)
    index = _bin_index(s, bins)
    table = []
    for b in range(bins):
        inside = index == b
        n = int(inside.sum())
        table.append(ReliabilityBin(round(b / bins, 6), round((b + 1) / bins, 6), n,
                                    float(s[inside].mean()) if n else None, float(h[inside].mean()) if n else None))
    return table


def expected_calibration_error(scores: Sequence[float] | np.ndarray, hits: Sequence[bool] | np.ndarray,
                               bins: int = 10) -> float:
    """ECE: Σ over score bins of (boxes in bin / boxes) · |mean score − hit rate|; 0 = perfectly calibrated."""
    s, h = _checked(scores, hits)
    if not s.size:
        raise CalibrationError("ECE of no boxes is undefined")
    index = _bin_index(s, bins)
    gap = 0.0
    for b in np.unique(index):
        inside = index == b
        gap += float(inside.sum()) * abs(float(s[inside].mean()) - float(h[inside].mean()))
    return gap / s.size


# ---- fitting --------------------------------------------------------------------------------------
@dataclass
class _Block:
    start: int  # first and one-past-last index of the pooled points
    end: int
    total: float  # Σ weight · value
    weight: float

    @property
    def mean(self) -> float:
        return self.total / self.weight


def _pav_blocks(values: np.ndarray, weights: np.ndarray) -> list[_Block]:
    """Pool adjacent violators: merge neighbours while a block's mean is not below the next one's.

    The stack only ever holds increasing means, so the fit is monotone by construction; this is the
    weighted least-squares non-decreasing fit (unique, whatever order violators are pooled in). Equal
    neighbours are pooled too (the fit is the same): blocks are maximal, so smoothing sees their size.
    """
    stack: list[_Block] = []
    for i, (value, weight) in enumerate(zip(values, weights)):
        stack.append(_Block(i, i + 1, float(value) * float(weight), float(weight)))
        while len(stack) > 1 and stack[-2].mean >= stack[-1].mean:
            last = stack.pop()
            stack[-1] = _Block(stack[-1].start, last.end, stack[-1].total + last.total, stack[-1].weight + last.weight)
    return stack


def isotonic_fit(values: Sequence[float] | np.ndarray, weights: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
    """The non-decreasing sequence closest to `values` (in their order) in weighted least squares."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != v.shape or (w <= 0).any():
        raise CalibrationError("isotonic_fit: one positive weight per value")
    fitted = np.empty_like(v)
    for block in _pav_blocks(v, w):
        fitted[block.start:block.end] = block.mean
    return fitted


@dataclass(frozen=True)
class ScoreCalibration:
    """Raw score → P(hit): knots `(scores[i], probabilities[i])`, linear between them, flat outside.

    `scores` strictly increase and `probabilities` never decrease, so the map is monotone; within an
    isotonic block it is flat (the block's two ends are both knots).
    """

    scores: tuple[float, ...]
    probabilities: tuple[float, ...]
    boxes: int  # how many boxes it was fitted on
    hits: int
    prior: float = DEFAULT_PRIOR

    def __post_init__(self) -> None:
        xs, ys = np.asarray(self.scores, dtype=np.float64), np.asarray(self.probabilities, dtype=np.float64)
        if not xs.size or xs.shape != ys.shape:
            raise CalibrationError(f"a calibration needs as many probabilities as scores, at least one; got "
                                   f"{xs.size} scores and {ys.size} probabilities")
        if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
            raise CalibrationError("calibration knots must be finite")
        if (np.diff(xs) <= 0).any() or (np.diff(ys) < 0).any():
            raise CalibrationError("calibration knots must have increasing scores and non-decreasing probabilities")
        if ys.min() < 0.0 or ys.max() > 1.0:
            raise CalibrationError(f"calibrated probabilities must lie in [0, 1], got {ys.min()}…{ys.max()}")

    def apply(self, scores: Sequence[float] | np.ndarray) -> np.ndarray:
        """The calibrated probability of each raw score (NaN stays NaN: an unscored box)."""
        raw = np.asarray(scores, dtype=np.float64)
        out = np.interp(raw, self.scores, self.probabilities)
        return np.where(np.isnan(raw), np.nan, np.clip(out, 0.0, 1.0))

    def probability(self, score: float) -> float:
        """`apply` of one score."""
        return float(self.apply(np.asarray([score]))[0])

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: what the store keeps (`from_dict` reads it back)."""
        return {"format": FORMAT, "scores": list(self.scores), "probabilities": list(self.probabilities),
                "boxes": self.boxes, "hits": self.hits, "prior": self.prior}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScoreCalibration:
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
            raise CalibrationError(f"stored score calibration: expected format {FORMAT!r}, got {found!r}")
        try:
            return cls(tuple(float(x) for x in data["scores"]), tuple(float(y) for y in data["probabilities"]),
                       int(data["boxes"]), int(data["hits"]), float(data.get("prior", DEFAULT_PRIOR)))
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"stored score calibration is incomplete or malformed: {exc!r}") from exc


def _knots(xs: np.ndarray, blocks: list[_Block], values: list[float]) -> tuple[list[float], list[float]]:
    """Both ends of every block, then interior knots of flat runs dropped (they change nothing)."""
    kx: list[float] = []
    ky: list[float] = []
    for block, value in zip(blocks, values):
        for x in dict.fromkeys((float(xs[block.start]), float(xs[block.end - 1]))):
            kx.append(x)
            ky.append(min(max(value, 0.0), 1.0))
    keep = [i for i in range(len(kx)) if i in (0, len(kx) - 1) or not ky[i - 1] == ky[i] == ky[i + 1]]
    return [kx[i] for i in keep], [ky[i] for i in keep]


def fit_calibration(scores: Sequence[float] | np.ndarray, hits: Sequence[bool] | np.ndarray,
                    prior: float = DEFAULT_PRIOR) -> ScoreCalibration:
    """Isotonic regression of hits on raw scores, smoothed toward the overall hit rate.

    1. Equal scores are one point (hits pooled): they must get one probability.
    2. Pool adjacent violators (weights = boxes per point) gives blocks with non-decreasing hit rates.
    3. Each block's rate becomes (hits + prior·p) / (boxes + prior), p = (all hits + 1) / (all boxes + 2):
       a block of 3 hits out of 3 is not a certainty. Small blocks shrink more and could fall out of
       order, so the smoothed blocks are pooled once more (weights boxes + prior): still monotone.

    Args:
        scores: raw box scores (any finite values; the engine's lie in [0, 1]).
        hits: per box, whether it was right (IoU ≥ 0.5 with a true object of its label).
        prior: pseudo-boxes per block; 0 = plain isotonic regression (0/1 for pure blocks).
    """
    s, h = _checked(scores, hits)
    if not s.size:
        raise CalibrationError("no boxes to fit a score calibration on")
    if prior < 0 or not np.isfinite(prior):
        raise CalibrationError(f"prior must be a finite number ≥ 0, got {prior}")
    xs, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    point_hits = np.bincount(inverse.reshape(-1), weights=h, minlength=xs.size)
    blocks = _pav_blocks(point_hits / counts, counts.astype(np.float64))
    overall = (h.sum() + 1.0) / (h.size + 2.0)
    smoothed = np.array([(b.total + prior * overall) / (b.weight + prior) for b in blocks])
    weights = np.array([b.weight + prior for b in blocks])
    fitted = isotonic_fit(smoothed, weights)
    kx, ky = _knots(xs, blocks, [float(v) for v in fitted])
    return ScoreCalibration(tuple(kx), tuple(ky), int(s.size), int(h.sum()), float(prior))


def box_hits(predicted: np.ndarray, truth: np.ndarray, iou: float = HIT_IOU) -> np.ndarray:
    """`(N,)` bool: whether each predicted box has IoU ≥ `iou` with some true box.

    Both are `(·, 4)` boxes as stored (x2/y2 one past the last pixel); the IoU is the evaluation's
    inclusive-pixel one on the pixels the boxes cover (x2 − 1, y2 − 1). No true box: every box misses.
    """
    from genpromp_annotate.evaluation.iou import as_boxes, iou_inclusive

    pred = as_boxes(predicted, "predicted") if np.size(predicted) else np.zeros((0, 4))
    true = as_boxes(truth, "truth") if np.size(truth) else np.zeros((0, 4))
    if not len(pred) or not len(true):
        return np.zeros(len(pred), dtype=bool)
    last_pixel = np.array([0.0, 0.0, 1.0, 1.0])
    return iou_inclusive(pred - last_pixel, true - last_pixel).max(axis=1) >= iou
