"""GT-known / Top-1 / Top-5 localization accuracy and the error breakdown (method §6).

One box per image (the box of the image's own label, in the 512 frame the engine works in) is compared
with the image's GT boxes rescaled into that frame. IoU is inclusive-pixel (`iou.py`); several GT boxes:
the best one counts.

    GT-known  IoU ≥ 0.5
    Top-1     classifier top-1 == label  and IoU > 0.5   (strict, as the reference)
    Top-5     label in classifier top-5  and IoU > 0.5

Error breakdown of the top-1 prediction, the first rule that holds wins:
Cls (wrong class) → correct (IoU > 0.5) → M-Ins (more than one GT box, and more than one of them with
|P∩G|/|G| > 0.3) → Part (|P∩G*|/|P| > 0.5, G* the best-IoU GT box) → More (|P∩G*|/|G*| ≥ 0.7) → Wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from genpromp_annotate.evaluation.iou import (
    box_areas,
    check_box_convention,
    intersection_areas,
    iou_inclusive,
)

ERROR_KINDS: tuple[str, ...] = ("Cls", "correct", "M-Ins", "Part", "More", "Wrong")


def gt_boxes_to_frame(gt_boxes: object, width: int, height: int, size: int = 512) -> np.ndarray:
    """GT boxes from original pixels into the `size`×`size` frame, as the reference does.

    `x1' = int(max(x1/W·size, 0))`, `x2' = int(min(x2/W·size, size − 1))` (same for y with H).

    Args:
        gt_boxes: `(K, 4)` `[x1, y1, x2, y2]` in original pixels.
    Returns:
        `(K, 4)` int64.
    """
    b = check_box_convention(gt_boxes, "gt_boxes")
    scale = np.array([size / width, size / height, size / width, size / height])
    scaled = b * scale
    scaled[:, :2] = np.maximum(scaled[:, :2], 0)
    scaled[:, 2:] = np.minimum(scaled[:, 2:], size - 1)
    return np.trunc(scaled).astype(np.int64)  # int() of a non-negative float truncates


def class_ranking(scores: object) -> np.ndarray:
    """`(C,)` class ids by decreasing score; ties keep the lower id first."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")


def error_kind(pred_box: object, gt_boxes: object, class_correct: bool = True) -> str:
    """The first ERROR_KINDS rule (module docstring) that holds for a top-1 prediction.

    Args:
        pred_box: `(4,)` the predicted box, same frame as `gt_boxes`.
        gt_boxes: `(K, 4)`.
        class_correct: whether the classifier's top-1 is the label.
    """
    if not class_correct:
        return "Cls"
    pred = check_box_convention(pred_box, "pred_box")
    gts = check_box_convention(gt_boxes, "gt_boxes")
    ious = iou_inclusive(pred, gts)[0]
    if ious.max() > 0.5:
        return "correct"
    inter = intersection_areas(pred, gts)[0]
    gt_areas = box_areas(gts)
    if len(gts) > 1 and int((inter / gt_areas > 0.3).sum()) > 1:
        return "M-Ins"
    best = int(np.argmax(ious))
    if inter[best] / box_areas(pred)[0] > 0.5:
        return "Part"
    if inter[best] / gt_areas[best] >= 0.7:
        return "More"
    return "Wrong"


@dataclass(frozen=True)
class LocOutcome:
    """One image's result; `top1`/`top5` are None when no classifier scores were given."""

    iou: float
    gt_known: bool
    top1: bool | None
    top5: bool | None
    error: str


def evaluate_image(pred_box_512: object, gt_boxes: object, width: int, height: int, label: int,
                   scores: object | None = None, size: int = 512, ranking: object | None = None) -> LocOutcome:
    """Score one image.

    Args:
        pred_box_512: `(4,)` the label's box in the `size` frame, `[x, y, x+w, y+h]` as the engine makes it.
        gt_boxes: `(K, 4)` GT boxes in original pixels; rescaled with `gt_boxes_to_frame`.
        width, height: the original image size.
        label: the GT class id.
        scores: `(C,)` classifier scores, or None (then only GT-known; the breakdown assumes the class right).
        ranking: instead of `scores`, the classifier's class ids best first (at least the top 5).
    """
    gts = gt_boxes_to_frame(gt_boxes, width, height, size)
    iou = float(iou_inclusive(pred_box_512, gts)[0].max())
    if scores is not None:
        ranking = class_ranking(scores)
    if ranking is None:
        return LocOutcome(iou, iou >= 0.5, None, None, error_kind(pred_box_512, gts, True))
    ranked = np.asarray(ranking)
    class_top1 = bool(ranked[0] == label)
    return LocOutcome(iou=iou, gt_known=iou >= 0.5, top1=class_top1 and iou > 0.5,
                      top5=bool(label in ranked[:5].tolist()) and iou > 0.5,
                      error=error_kind(pred_box_512, gts, class_top1))


@dataclass(frozen=True)
class LocSummary:
    """Percentages over `count` images; `top1`/`top5` None when any image lacked classifier scores."""

    count: int
    gt_known: float
    top1: float | None
    top5: float | None
    errors: dict[str, float]  # ERROR_KINDS → percent, summing to 100
    mean_iou: float

    def as_dict(self) -> dict:
        return {"count": self.count, "gt_known_loc": self.gt_known, "top1_loc": self.top1,
                "top5_loc": self.top5, "errors": dict(self.errors), "mean_iou": self.mean_iou}


@dataclass
class LocEvaluator:
    """Accumulate images one at a time, then `compute()` the summary."""

    size: int = 512
    outcomes: list[LocOutcome] = field(default_factory=list)

    def accumulate(self, pred_box_512: object, gt_boxes: object, width: int, height: int, label: int,
                   scores: object | None = None, ranking: object | None = None) -> LocOutcome:
        outcome = evaluate_image(pred_box_512, gt_boxes, width, height, label, scores, self.size, ranking)
        self.outcomes.append(outcome)
        return outcome

    def compute(self) -> LocSummary:
        return summarize(self.outcomes)


def summarize(outcomes: Sequence[LocOutcome]) -> LocSummary:
    """Percentages of a list of outcomes (an empty list gives zeros)."""
    n = len(outcomes)

    def percent(flags: Sequence[bool]) -> float:
        return 100.0 * sum(flags) / n if n else 0.0

    with_classifier = n > 0 and all(o.top1 is not None for o in outcomes)
    return LocSummary(
        count=n,
        gt_known=percent([o.gt_known for o in outcomes]),
        top1=percent([bool(o.top1) for o in outcomes]) if with_classifier else None,
        top5=percent([bool(o.top5) for o in outcomes]) if with_classifier else None,
        errors={kind: percent([o.error == kind for o in outcomes]) for kind in ERROR_KINDS},
        mean_iou=float(np.mean([o.iou for o in outcomes])) if n else 0.0,
    )
