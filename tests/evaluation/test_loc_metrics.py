"""GT-known / Top-1 / Top-5 Loc and the error breakdown, on hand-made boxes (512 frame unless said)."""

from __future__ import annotations

import numpy as np
import pytest

from genpromp_annotate.evaluation.loc_metrics import (
    ERROR_KINDS,
    LocEvaluator,
    class_ranking,
    error_kind,
    evaluate_image,
    gt_boxes_to_frame,
)


def test_gt_boxes_into_the_512_frame():
    # 1000×500 image: x1 = int(100/1000·512) = int(51.2) = 51, y1 = int(50/500·512) = 51,
    # x2 = int(min(999.9/1000·512 = 511.95, 511)) = 511, y2 = int(499/500·512 = 510.976) = 510
    got = gt_boxes_to_frame([[100, 50, 999.9, 499]], 1000, 500)
    assert got.tolist() == [[51, 51, 511, 510]]
    # negative coordinates are clipped to 0 before truncation
    assert gt_boxes_to_frame([[-3, -1, 10, 10]], 512, 512).tolist() == [[0, 0, 10, 10]]


@pytest.mark.parametrize("pred, gts, class_correct, kind", [
    ([0, 0, 29, 29], [[0, 0, 29, 29]], False, "Cls"),  # wrong class comes first, whatever the box
    ([0, 0, 29, 29], [[0, 0, 29, 29]], True, "correct"),
    # covers two 10×10 GT boxes entirely (|P∩G|/|G| = 1 > 0.3 for both); IoU 100/300 each
    ([0, 0, 29, 9], [[0, 0, 9, 9], [20, 0, 29, 9]], True, "M-Ins"),
    # a 30×30 prediction inside a 100×100 GT: IoU 900/10000, |P∩G|/|P| = 1 > 0.5
    ([0, 0, 29, 29], [[0, 0, 99, 99]], True, "Part"),
    # the reverse: |P∩G|/|P| = 0.09, |P∩G|/|G| = 1 ≥ 0.7
    ([0, 0, 99, 99], [[0, 0, 29, 29]], True, "More"),
    ([200, 200, 250, 250], [[0, 0, 29, 29]], True, "Wrong"),
])
def test_error_kinds(pred, gts, class_correct, kind):
    assert error_kind(pred, gts, class_correct) == kind


def test_m_ins_needs_two_covered_gt_boxes():
    # only the first GT box is covered beyond 0.3: falls through to More (|P∩G*|/|G*| = 1)
    assert error_kind([0, 0, 29, 9], [[0, 0, 9, 9], [100, 100, 109, 109]]) == "More"


def test_iou_exactly_half_is_gt_known_but_not_top1():
    # W = H = 512 keeps GT boxes as they are. GT [0,0,9,9] = 100 px; pred [0,0,9,4] = 50 px inside it:
    # IoU = 50/100 = 0.5 → GT-known (≥ 0.5) but not Top-1 / Top-5 (> 0.5)
    outcome = evaluate_image([0, 0, 9, 4], [[0, 0, 9, 9]], 512, 512, label=0, scores=[0.9, 0.1])
    assert outcome.iou == 0.5
    assert (outcome.gt_known, outcome.top1, outcome.top5) == (True, False, False)
    assert outcome.error == "Part"  # the class is right and all of P lies in G


def test_top5_counts_a_label_ranked_third():
    scores = [0.1, 0.5, 0.3, 0.2, 0.0, 0.05]  # ranking 1, 2, 3, 0, 5, 4: label 3 is fourth
    assert class_ranking(scores).tolist() == [1, 2, 3, 0, 5, 4]
    outcome = evaluate_image([0, 0, 9, 9], [[0, 0, 9, 9]], 512, 512, label=3, scores=scores)
    assert (outcome.top1, outcome.top5, outcome.error) == (False, True, "Cls")
    assert evaluate_image([0, 0, 9, 9], [[0, 0, 9, 9]], 512, 512, label=4, scores=scores).top5 is False


def test_several_gt_boxes_take_the_best():
    outcome = evaluate_image([100, 100, 199, 199], [[0, 0, 9, 9], [100, 100, 199, 199]], 512, 512, label=0)
    assert outcome.iou == 1.0 and outcome.gt_known


def test_summary_percentages():
    evaluator = LocEvaluator()
    gt = [[0, 0, 99, 99]]
    evaluator.accumulate([0, 0, 99, 99], gt, 512, 512, 0, scores=[1.0, 0.0])  # correct
    evaluator.accumulate([0, 0, 99, 99], gt, 512, 512, 0, scores=[0.0, 1.0])  # Cls, still GT-known
    evaluator.accumulate([0, 0, 29, 29], gt, 512, 512, 0, scores=[1.0, 0.0])  # Part
    evaluator.accumulate([300, 300, 310, 310], gt, 512, 512, 0, scores=[1.0, 0.0])  # Wrong
    summary = evaluator.compute()
    assert summary.count == 4
    assert (summary.gt_known, summary.top1, summary.top5) == (50.0, 25.0, 50.0)  # top-5 of 2 classes: both
    assert summary.errors == {"Cls": 25.0, "correct": 25.0, "M-Ins": 0.0, "Part": 25.0, "More": 0.0, "Wrong": 25.0}
    assert sum(summary.errors.values()) == 100.0 and tuple(summary.errors) == ERROR_KINDS


def test_without_classifier_only_gt_known():
    evaluator = LocEvaluator()
    evaluator.accumulate(np.array([0, 0, 99, 99]), [[0, 0, 99, 99]], 512, 512, 0)
    summary = evaluator.compute()
    assert (summary.gt_known, summary.top1, summary.top5) == (100.0, None, None)
