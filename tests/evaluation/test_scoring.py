"""score_split: Loc metrics at τ, the sweep and MaxBoxAcc from one map reader; failed and skipped images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genpromp_annotate.evaluation.layouts import EvalRecord
from genpromp_annotate.evaluation.map_sources import LoadedMap, MapReadError, to_frame
from genpromp_annotate.evaluation.maxboxacc import MaxBoxAccEvaluator
from genpromp_annotate.evaluation.scoring import score_split


def indicator(x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    """1 on the inclusive box, 0 elsewhere, in a 512×512 image (indexed [y][x])."""
    m = np.zeros((512, 512), dtype=np.float32)
    m[y1:y2 + 1, x1:x2 + 1] = 1.0
    return m


class DictMaps:
    """Maps held in memory by image id; an id without a map cannot be read."""

    def __init__(self, maps: dict[str, np.ndarray]) -> None:
        self.maps = maps

    def load(self, record: EvalRecord) -> LoadedMap:
        if record.image_id not in self.maps:
            raise MapReadError(f"{record.image_id}.npy: no map")
        raw = self.maps[record.image_id]
        return LoadedMap(raw, to_frame(raw, 512), *record.size)


def rec(image_id: str, label: int, box: list[float]) -> EvalRecord:
    return EvalRecord(image_id, Path(image_id), label, None, np.array([box], dtype=np.float64), (512, 512),
                      image_id.removesuffix(".jpg"))


RECORDS = [rec("a.jpg", 0, [100, 100, 299, 299]), rec("b.jpg", 1, [50, 50, 149, 149]),
           rec("c.jpg", 1, [0, 0, 99, 99]), rec("d.jpg", 0, [0, 0, 99, 99]), rec("e.jpg", 1, [50, 50, 149, 149])]
LABELS = ["albatross", "gull", "gull", "albatross", "gull"]
MAPS = {"a.jpg": indicator(100, 100, 299, 299),  # on the GT box
        "b.jpg": indicator(300, 300, 399, 399),  # far from the GT box: IoU 0
        "d.jpg": indicator(0, 0, 99, 99),  # skipped
        "e.jpg": indicator(50, 50, 149, 149)}  # c.jpg has no map
RANKINGS = {"a": np.array([0, 1, 2, 3, 4]), "b": np.array([1, 0, 2, 3, 4]), "c": np.array([1, 0, 2, 3, 4]),
            "d": np.array([0, 1, 2, 3, 4]), "e": np.array([0, 1, 2, 3, 4])}  # e: label 1 ranked 2nd


def test_loc_metrics_failed_and_skipped_images():
    calls = []
    scores = score_split(RECORDS, LABELS, DictMaps(MAPS), 0.23, RANKINGS, skip={"d.jpg"}, progress=calls.append)
    assert calls == [1] * 5  # every record, scored or not
    assert [item.record.image_id for item in scores.images] == ["a.jpg", "b.jpg", "e.jpg"]
    assert scores.failed == [("c.jpg", "c.jpg.npy: no map")]  # d.jpg is skipped, not failed
    # the indicator of [100, 100, 299, 299] gives the box [100, 100, 300, 300] (one past):
    # IoU 200²/201² = 40000/40401; e.jpg: 100²/101² = 10000/10201
    assert scores.images[0].box == (100.0, 100.0, 300.0, 300.0)
    assert [item.outcome.iou for item in scores.images] == pytest.approx([40000 / 40401, 0.0, 10000 / 10201])
    loc = scores.loc
    assert loc.count == 3
    assert loc.gt_known == pytest.approx(200 / 3)  # a and e
    assert loc.top1 == pytest.approx(100 / 3)  # a only: e's top-1 is class 0, b's box is wrong
    assert loc.top5 == pytest.approx(200 / 3)  # a and e
    # error breakdown: a correct, b Wrong (class right, no overlap), e Cls (top-1 is class 0)
    assert loc.errors == pytest.approx({"Cls": 100 / 3, "correct": 100 / 3, "M-Ins": 0.0, "Part": 0.0,
                                        "More": 0.0, "Wrong": 100 / 3})
    assert scores.sweep is not None and scores.sweep.count == 3
    # the sweep at τ = 0.23 is the fixed-τ result
    assert scores.sweep.curves["gt_known_loc"][23] == pytest.approx(loc.gt_known)


def test_per_class():
    scores = score_split(RECORDS, LABELS, DictMaps(MAPS), 0.23, RANKINGS, skip={"d.jpg"})
    assert scores.per_class() == {
        "albatross": {"n": 1, "gt_known_loc": 100.0, "mean_iou": pytest.approx(40000 / 40401)},
        "gull": {"n": 2, "gt_known_loc": 50.0, "mean_iou": pytest.approx((0 + 10000 / 10201) / 2)},
    }


def test_without_rankings_only_gt_known():
    scores = score_split(RECORDS[:2], LABELS[:2], DictMaps(MAPS), 0.23)
    assert scores.loc.gt_known == 50.0 and scores.loc.top1 is None and scores.loc.top5 is None
    assert scores.sweep is not None and scores.sweep.curves["top1_loc"] is None


def test_maxboxacc_equals_the_evaluator_on_the_raw_maps():
    scores = score_split(RECORDS, LABELS, DictMaps(MAPS), 0.23, skip={"d.jpg"})
    scored = [r for r in RECORDS if r.image_id in ("a.jpg", "b.jpg", "e.jpg")]
    for version, got in (("v1", scores.maxboxacc_v1), ("v2", scores.maxboxacc_v2)):
        evaluator = MaxBoxAccEvaluator({r.image_id: r.gt_boxes for r in scored},
                                       {r.image_id: r.size for r in scored}, version=version)
        for r in scored:
            evaluator.accumulate(MAPS[r.image_id], r.image_id)
        expected = evaluator.compute()
        assert got is not None and got.count == 3
        assert got.value == expected.value and got.per_delta == expected.per_delta
        for delta, curve in expected.curves.items():
            np.testing.assert_array_equal(got.curves[delta], curve)
    # a and e are large indicator boxes (side ≥ 6 in the 224 frame), b is elsewhere: 2 of 3 at every δ
    assert scores.maxboxacc_v2 is not None
    assert scores.maxboxacc_v2.per_delta == pytest.approx({30: 200 / 3, 50: 200 / 3, 70: 200 / 3})


def test_maxboxacc_off_and_nothing_scored():
    scores = score_split(RECORDS, LABELS, DictMaps(MAPS), 0.23, maxboxacc=False)
    assert scores.maxboxacc_v1 is None and scores.maxboxacc_v2 is None and scores.sweep is not None
    empty = score_split(RECORDS[2:3], LABELS[2:3], DictMaps(MAPS), 0.23)  # c.jpg only, which fails
    assert empty.loc.count == 0 and empty.sweep is None and empty.maxboxacc_v2 is None
    assert [image_id for image_id, _ in empty.failed] == ["c.jpg"]


def test_worker_processes_give_the_same_numbers(tmp_path):
    """`workers=2` (a spawned pool reading a --maps folder) equals scoring in this process, in order."""
    from genpromp_annotate.evaluation.map_sources import FolderMaps

    rng = np.random.default_rng(0)
    records = []
    for i in range(130):  # ≥ 2 × MIN_IMAGES_PER_WORKER, so the pool is really used
        x, y, side = (int(v) for v in rng.integers(0, 40, 3))
        map_ = np.zeros((64, 64), dtype=np.float32)
        map_[y : y + side // 2 + 4, x : x + side // 2 + 4] = rng.random()
        map_[20:24, 50:60] += 0.5 * rng.random()  # a second, weaker blob: V2 and v1 differ
        np.save(tmp_path / f"img{i:03d}.jpg.npy", map_)
        records.append(EvalRecord(f"img{i:03d}.jpg", tmp_path / f"img{i:03d}.jpg", i % 3, None,
                                  np.array([[x, y, x + side // 2 + 3, y + side // 2 + 3]], dtype=np.float64),
                                  (64, 64), f"img{i:03d}.jpg"))
    np.save(tmp_path / "img007.jpg.npy", np.zeros((2, 2, 2)))  # one bad map: failed in both
    labels = [str(r.label) for r in records]
    maps = FolderMaps(tmp_path, size=128)
    alone = score_split(records, labels, maps, 0.25, size=128)
    pooled = score_split(records, labels, maps, 0.25, size=128, workers=2)
    assert [f[0] for f in pooled.failed] == [f[0] for f in alone.failed] == ["img007.jpg"]
    assert pooled.loc == alone.loc and pooled.per_class() == alone.per_class()
    assert [(i.record.image_id, i.box) for i in pooled.images] == [(i.record.image_id, i.box) for i in alone.images]
    assert pooled.maxboxacc_v2.as_dict() == alone.maxboxacc_v2.as_dict()
    assert pooled.maxboxacc_v1.as_dict() == alone.maxboxacc_v1.as_dict()
    assert pooled.sweep.as_dict() == alone.sweep.as_dict()
