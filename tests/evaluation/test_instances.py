"""One-to-one matching of predicted to GT boxes: hand-built boxes, duplicates, a box over two objects."""

from __future__ import annotations

import numpy as np
import pytest

from genpromp_annotate.evaluation.instances import InstanceCounts, match_boxes, match_split, matched_pairs
from genpromp_annotate.evaluation.iou import BoxFormatError, iou_inclusive

LEFT, RIGHT = [0, 0, 9, 9], [10, 0, 19, 9]  # two 10×10 objects side by side (inclusive pixels)


def test_a_box_per_object_recalls_every_object():
    counts = match_boxes([RIGHT, LEFT], [LEFT, RIGHT])
    assert counts == InstanceCounts(true_positives=2, predicted=2, ground_truth=2)
    assert counts.recall == counts.precision == counts.f1 == 1.0


def test_a_duplicate_box_is_a_false_positive():
    counts = match_boxes([LEFT, LEFT, [0, 0, 9, 8]], [LEFT, RIGHT])
    assert counts == InstanceCounts(1, 3, 2)
    assert counts.recall == 0.5 and counts.precision == pytest.approx(1 / 3)
    assert counts.f1 == pytest.approx(2 * 0.5 / 3 / (0.5 + 1 / 3))


def test_one_box_over_two_objects_claims_at_most_one():
    both = [0, 0, 19, 9]
    assert iou_inclusive([both], [LEFT, RIGHT]).tolist() == [[0.5, 0.5]]  # at the threshold with each
    assert match_boxes([both], [LEFT, RIGHT]) == InstanceCounts(1, 1, 2)
    assert match_boxes([both], [LEFT, RIGHT], iou_threshold=0.51) == InstanceCounts(0, 1, 2)


def test_greedy_by_iou_not_by_box_order():
    # Box 0 overlaps both (IoU 0.74 with G0, 0.6 with G1), box 1 is exactly G0 and misses G1 (0.43).
    # Taking boxes in order would give G0 to box 0 and leave box 1 without a GT (1 TP); the highest
    # IoU first gives G0 to box 1 and G1 to box 0 (2 TP).
    gts = [[0, 0, 19, 9], [8, 0, 27, 9]]
    preds = [[3, 0, 22, 9], [0, 0, 19, 9]]
    ious = iou_inclusive(preds, gts)
    assert ious[0, 0] > ious[0, 1] >= 0.5 > ious[1, 1] and ious[1, 0] == 1.0
    assert match_boxes(preds, gts).true_positives == 2


def test_empty_sides_and_a_split_sum():
    assert match_boxes([], [LEFT]) == InstanceCounts(0, 0, 1)
    assert match_boxes(np.zeros((0, 4)), []) == InstanceCounts(0, 0, 0)
    assert match_boxes([LEFT], []) == InstanceCounts(0, 1, 0)
    empty = InstanceCounts(0, 0, 0)
    assert empty.recall == empty.precision == empty.f1 == 0.0
    total = match_split([[LEFT, RIGHT], [], [LEFT]], [[LEFT, RIGHT], [LEFT], [RIGHT]])
    assert total == InstanceCounts(2, 3, 4)
    assert total.recall == 0.5 and total.precision == pytest.approx(2 / 3)


def test_misformed_boxes_are_refused():
    with pytest.raises(BoxFormatError, match="predicted"):
        match_boxes([[5, 5, 2, 2]], [LEFT])  # x2 < x1: an x, y, w, h box
    with pytest.raises(ValueError):
        match_split([[LEFT]], [[LEFT], [RIGHT]])  # one list per image on both sides


def test_matched_pairs_name_which_box_took_which_object():
    assert matched_pairs([[0, 0, 19, 9], RIGHT, LEFT], [LEFT, RIGHT]) == [(1, 1), (2, 0)]  # IoU 1 pairs first
    assert matched_pairs([], [LEFT]) == [] and matched_pairs([LEFT], np.zeros((0, 4))) == []
