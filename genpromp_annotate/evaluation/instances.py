"""Several objects per image: predicted boxes matched one-to-one to GT boxes, recall and precision.

GT-known Loc asks whether *one* box hits *any* GT box, which cannot tell a box per object from one box
on the largest object. Here each GT box can be claimed by one predicted box only (IoU ≥ 0.5,
inclusive-pixel as `iou.py`), so a duplicate box is a false positive and a box over two objects counts
at most once: recall = TP / GT boxes, precision = TP / predicted boxes.

Matching is greedy by IoU: all pairs at or above the threshold, highest IoU first, each box and each GT
used once (ties: lower predicted index, then lower GT index). It ignores box scores, so rules that score
boxes differently (the paper's one box, multi-box) are matched the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from genpromp_annotate.evaluation.iou import check_box_convention, iou_inclusive


@dataclass(frozen=True)
class InstanceCounts:
    """True positives, predicted boxes and GT boxes of one image or, summed, of a split."""

    true_positives: int
    predicted: int
    ground_truth: int

    def __add__(self, other: InstanceCounts) -> InstanceCounts:
        return InstanceCounts(self.true_positives + other.true_positives, self.predicted + other.predicted,
                              self.ground_truth + other.ground_truth)

    @property
    def recall(self) -> float:
        """TP / GT (0 when there is no GT)."""
        return self.true_positives / self.ground_truth if self.ground_truth else 0.0

    @property
    def precision(self) -> float:
        """TP / predicted (0 when nothing was predicted: no box claims nothing)."""
        return self.true_positives / self.predicted if self.predicted else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def matched_pairs(predicted: object, ground_truth: object, iou_threshold: float = 0.5) -> list[tuple[int, int]]:
    """The one-to-one `(predicted index, GT index)` matches of `(N, 4)` and `(K, 4)` boxes `[x1, y1, x2, y2]`,
    greedy by IoU (module docstring). Either may be empty (a `(0, 4)` array or `[]`)."""
    preds = _boxes_or_empty(predicted, "predicted")
    gts = _boxes_or_empty(ground_truth, "ground_truth")
    if not len(preds) or not len(gts):
        return []
    ious = iou_inclusive(preds, gts)
    pred_idx, gt_idx = np.nonzero(ious >= iou_threshold)
    # lexsort's last key is the primary one: IoU descending, then predicted index, then GT index
    order = np.lexsort((gt_idx, pred_idx, -ious[pred_idx, gt_idx]))
    pairs: list[tuple[int, int]] = []
    used_pred: set[int] = set()
    used_gt: set[int] = set()
    for k in order:
        p, g = int(pred_idx[k]), int(gt_idx[k])
        if p not in used_pred and g not in used_gt:
            used_pred.add(p)
            used_gt.add(g)
            pairs.append((p, g))
    return pairs


def match_boxes(predicted: object, ground_truth: object, iou_threshold: float = 0.5) -> InstanceCounts:
    """The InstanceCounts of one image: `matched_pairs` counted against both sides' box counts."""
    pairs = matched_pairs(predicted, ground_truth, iou_threshold)
    return InstanceCounts(len(pairs), len(_boxes_or_empty(predicted, "predicted")),
                          len(_boxes_or_empty(ground_truth, "ground_truth")))


def match_split(predicted: Iterable[object], ground_truth: Iterable[object],
                iou_threshold: float = 0.5) -> InstanceCounts:
    """`match_boxes` per image, summed over the images (micro-averaged recall and precision)."""
    total = InstanceCounts(0, 0, 0)
    for preds, gts in zip(predicted, ground_truth, strict=True):
        total = total + match_boxes(preds, gts, iou_threshold)
    return total


def _boxes_or_empty(boxes: object, name: str) -> np.ndarray:
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, 4))
    return check_box_convention(array, name)
