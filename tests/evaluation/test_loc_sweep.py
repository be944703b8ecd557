"""The Loc sweep: the engine's one box at every τ, GT-known / Top-1 / Top-5 curves, and their best τ."""

from __future__ import annotations

import numpy as np
import pytest

from genpromp_annotate.engine.boxes import reference_box
from genpromp_annotate.errors import ConfigError
from genpromp_annotate.evaluation.loc_sweep import LocSweep, largest_boxes_at_thresholds

TAUS = np.arange(0, 1, 0.01)


def blobs(seed: int, size: int = 160, count: int = 4) -> np.ndarray:
    """A smooth map in [0, 1]: a sum of gaussian blobs of random centres, widths and heights."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    total = np.zeros((size, size))
    for _ in range(count):
        cx, cy = rng.uniform(0, size, 2)
        sigma = rng.uniform(size / 20, size / 5)
        total += rng.uniform(0.3, 1.0) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
    return (total - total.min()) / (total.max() - total.min())


MAPS = {"blobs-0": blobs(0), "blobs-1": blobs(1), "seven-blobs": blobs(2, count=7), "blobs-512": blobs(3, size=512),
        "zeros": np.zeros((64, 64)), "ones": np.ones((64, 64))}


@pytest.mark.parametrize("map_", MAPS.values(), ids=MAPS.keys())
def test_largest_boxes_are_the_engine_boxes(map_):
    expected = [[b.x1, b.y1, b.x2, b.y2] for b in (reference_box(map_, tau) for tau in TAUS)]
    np.testing.assert_array_equal(largest_boxes_at_thresholds(map_, TAUS), expected)


def test_all_zero_map_gives_the_empty_box():
    assert largest_boxes_at_thresholds(np.zeros((512, 512)), TAUS).tolist() == [[0, 0, 1, 1]] * 100


def two_level_map() -> np.ndarray:
    """0.5 on x, y 100…299 and 1.0 on the core x, y 150…249 (512 frame, indexed [y][x]).

    uint8: 0.5 → 127, 1.0 → 255. The ring survives while 127 > int(τ·255): τ ≤ 0.49 (cut 124), not τ = 0.5
    (cut 127). So the box is [100, 100, 300, 300] for τ ≤ 0.49 and [150, 150, 250, 250] from τ = 0.5 on.
    """
    m = np.zeros((512, 512), dtype=np.float32)
    m[100:300, 100:300] = 0.5
    m[150:250, 150:250] = 1.0
    return m


def elsewhere_map() -> np.ndarray:
    m = np.zeros((512, 512), dtype=np.float32)
    m[400:450, 400:450] = 1.0
    return m


@pytest.fixture()
def sweep() -> LocSweep:
    sweep = LocSweep()
    # 1: GT = the ring, in a 1024×1024 image: [200, 200, 599, 599] → [100, 100, int(299.5), 299] in 512.
    #    τ ≤ 0.49: box 201² px holding the 200² GT: IoU 40000/40401 = 0.990; later the core, 101² px: 0.255.
    ious = sweep.accumulate(two_level_map(), [[200, 200, 599, 599]], 1024, 1024, label=0, ranking=[0, 1, 2, 3, 4])
    assert ious[:50] == pytest.approx([40000 / 40401] * 50) and ious[50:] == pytest.approx([10201 / 40000] * 50)
    # 2: GT = the core (100² px): IoU 10000/40401 = 0.248 for τ ≤ 0.49, then 10000/10201 = 0.980.
    #    Class: top-1 wrong, label in the top 5.
    sweep.accumulate(two_level_map(), [[150, 150, 249, 249]], 512, 512, label=1, ranking=[2, 1, 3, 4, 5])
    # 3: the map is elsewhere: IoU 0 at every τ (classifier right)
    sweep.accumulate(elsewhere_map(), [[0, 0, 49, 49]], 512, 512, label=2, ranking=[2, 0, 1, 3, 4])
    # 4: GT = the core again; label 3 is not in the top 5
    sweep.accumulate(two_level_map(), [[150, 150, 249, 249]], 512, 512, label=3, ranking=[0, 1, 2, 4, 5])
    return sweep


def test_curves_and_best_thresholds(sweep):
    result = sweep.compute()
    assert result.count == 4 and result.thresholds.tolist() == TAUS.tolist()
    # GT-known: image 1 while τ ≤ 0.49 (25 %), images 2 and 4 from τ = 0.5 (50 %)
    np.testing.assert_allclose(result.curves["gt_known_loc"], [25.0] * 50 + [50.0] * 50)
    # Top-1: only image 1 has both the class and the box right (τ ≤ 0.49)
    np.testing.assert_allclose(result.curves["top1_loc"], [25.0] * 50 + [0.0] * 50)
    # Top-5: image 1 for τ ≤ 0.49, image 2 (label 2nd) from 0.5; image 4's label is not ranked
    np.testing.assert_allclose(result.curves["top5_loc"], [25.0] * 100)
    assert result.best("gt_known_loc") == (0.5, 50.0)  # lowest of the tied τ 0.5…0.99
    assert result.best("top1_loc") == (0.0, 25.0)
    assert result.as_dict()["gt_known_loc"] == {"threshold": 0.5, "value": 50.0}


def test_best_prefers_the_tied_threshold_closest_to_prefer(sweep):
    result = sweep.compute()
    assert result.best("top5_loc") == (0.0, 25.0)
    assert result.best("top5_loc", prefer=0.77) == pytest.approx((0.77, 25.0))
    assert result.best("gt_known_loc", prefer=0.23) == (0.5, 50.0)  # 0.23 is not among the best τ
    assert result.best("gt_known_loc", prefer=0.9) == pytest.approx((0.9, 50.0))


def test_gt_known_is_at_least_half_top1_strictly_above():
    # a 9×19 px blob: bounding rect [100, 100, 109, 119] read inclusively = 10×20 px, holding the 10×10 GT:
    # IoU exactly 100/200 = 0.5 at every τ
    m = np.zeros((512, 512), dtype=np.float32)
    m[100:119, 100:109] = 1.0
    sweep = LocSweep()
    sweep.accumulate(m, [[100, 100, 109, 109]], 512, 512, label=0, ranking=[0, 1, 2, 3, 4])
    result = sweep.compute()
    assert result.curves["gt_known_loc"].tolist() == [100.0] * 100
    assert result.curves["top1_loc"].tolist() == [0.0] * 100 and result.curves["top5_loc"].tolist() == [0.0] * 100


def test_without_rankings_top1_and_top5_are_none():
    sweep = LocSweep(thresholds=np.array([0.2, 0.6]))
    sweep.accumulate(two_level_map(), [[150, 150, 249, 249]], 512, 512, label=0, ranking=[0, 1, 2, 3, 4])
    sweep.accumulate(two_level_map(), [[150, 150, 249, 249]], 512, 512, label=0)  # one image without
    result = sweep.compute()
    assert result.curves["gt_known_loc"].tolist() == [0.0, 100.0]
    assert result.curves["top1_loc"] is None and result.curves["top5_loc"] is None
    assert result.best("top1_loc") is None
    assert result.as_dict() == {"gt_known_loc": {"threshold": 0.6, "value": 100.0}, "top1_loc": None,
                                "top5_loc": None}


def test_errors():
    with pytest.raises(ConfigError, match=r"map of shape \(256, 256\), expected \(512, 512\)"):
        LocSweep().accumulate(np.zeros((256, 256)), [[0, 0, 9, 9]], 512, 512, label=0)
    with pytest.raises(ConfigError, match="no image was accumulated"):
        LocSweep().compute()
    small = LocSweep(size=64)  # another frame size: maps and GT boxes in 64
    small.accumulate(np.ones((64, 64)), [[0, 0, 63, 63]], 64, 64, label=0)
    assert small.compute().curves["gt_known_loc"][0] == 100.0
