"""MaxBoxAcc / MaxBoxAccV2 conventions (method §6) and the 512-frame threshold sweep."""

from __future__ import annotations

import numpy as np
import pytest

from genpromp_annotate.errors import ConfigError
from genpromp_annotate.evaluation.layouts import EvalRecord
from genpromp_annotate.evaluation.maxboxacc import (
    MaxBoxAccEvaluator,
    best_threshold,
    boxes_at_thresholds,
    evaluate_map_folder,
    gt_boxes_to_eval_frame,
    map_file,
    normalize_map,
)


def indicator(box_inclusive: tuple[int, int, int, int], size: int = 224) -> np.ndarray:
    """A map that is 1 exactly on the pixels of an inclusive box, indexed [y][x]."""
    x1, y1, x2, y2 = box_inclusive
    m = np.zeros((size, size), dtype=np.float32)
    m[y1:y2 + 1, x1:x2 + 1] = 1.0
    return m


@pytest.mark.parametrize("k, reached", [(2, (30,)), (3, (30, 50)), (4, (30, 50)), (5, (30, 50)), (6, (30, 50, 70)),
                                        (9, (30, 50, 70))])
def test_indicator_of_a_k_by_k_gt_box(k, reached):
    # The map's contour has bounding rect x, w = k, so the predicted box is [x, y, x+k, y+k], read inclusively
    # as (k+1)² px; the GT box [x, y, x+k−1, y+k−1] is k² px inside it: IoU = k²/(k+1)².
    # k = 2: 4/9 = 0.444 (δ 30 only); k = 3: 9/16 = 0.5625 and k = 4: 16/25 = 0.64 (δ 30 and 50, not 70);
    # k = 5: 25/36 = 0.694; k = 6: 36/49 = 0.735, the smallest side that reaches every δ.
    gt = (100, 60, 100 + k - 1, 60 + k - 1)
    evaluator = MaxBoxAccEvaluator({"img": [gt]}, {"img": (224, 224)})  # 224 px: GT boxes stay as they are
    best = evaluator.accumulate(indicator(gt), "img")
    assert best == pytest.approx(np.full(100, k * k / (k + 1) ** 2))  # every τ < 1 keeps the indicator
    result = evaluator.compute()
    assert result.per_delta == {delta: 100.0 if delta in reached else 0.0 for delta in (30, 50, 70)}
    assert result.value == pytest.approx(100.0 * len(reached) / 3)


def test_golden_064_for_k_4():
    assert MaxBoxAccEvaluator({"a": [[0, 0, 3, 3]]}, {"a": (224, 224)}).accumulate(
        indicator((0, 0, 3, 3)), "a")[0] == pytest.approx(0.64)


def test_v2_uses_all_contours_v1_the_largest():
    # a small blob exactly on the 10×10 GT box and a large blob elsewhere, both at 1.0
    gt = (20, 20, 29, 29)
    m = indicator(gt) + indicator((100, 100, 199, 199))
    v2 = MaxBoxAccEvaluator({"a": [gt]}, {"a": (224, 224)}, version="v2")
    v1 = MaxBoxAccEvaluator({"a": [gt]}, {"a": (224, 224)}, version="v1")
    v2.accumulate(m, "a")
    v1.accumulate(m, "a")
    # V2: box [20, 20, 30, 30] (one past) → IoU 100/121 = 0.826 at every δ; v1 takes the 100×100 blob → 0
    assert v2.compute().per_delta == {30: 100.0, 50: 100.0, 70: 100.0}
    assert v1.compute().per_delta == {50: 0.0} and v1.compute().value == 0.0


def test_boxes_are_clipped_to_223_and_no_contour_gives_zeros():
    m = np.zeros((224, 224), dtype=np.float32)
    m[10:20, 200:224] = 1.0  # bounding rect x = 200, w = 24 → x + w = 224 → min(224, 223)
    assert boxes_at_thresholds(m, np.array([0.5]))[0].tolist() == [[200, 10, 223, 20]]
    assert boxes_at_thresholds(np.zeros((224, 224)), np.array([0.0, 0.5]))[1].tolist() == [[0, 0, 0, 0]]


def test_threshold_is_strictly_above_int_tau_max():
    # uint8 values 0, 100, 200, 255: at τ = 0.4 the cut is int(0.4·255) = 102, so 100 drops out, 200 stays
    m = np.zeros((224, 224), dtype=np.float32)
    m[0:10, 0:10] = 100 / 255 + 1e-6
    m[50:60, 50:60] = 200 / 255 + 1e-6
    m[100:110, 100:110] = 1.0
    (boxes,) = boxes_at_thresholds(m, np.array([0.4]))
    assert sorted(boxes.tolist()) == [[50, 50, 60, 60], [100, 100, 110, 110]]


def test_gt_boxes_to_224_multiply_divide_truncate():
    # 448×300 image: x1 = int(100·224/448) = 50, y1 = int(50·224/300) = int(37.33) = 37,
    # x2 = int(300·224/448) = 150, y2 = int(150·224/300) = 112; x = 448 gives 224 (no clipping)
    assert gt_boxes_to_eval_frame([[100, 50, 300, 150]], 448, 300).tolist() == [[50, 37, 150, 112]]
    assert gt_boxes_to_eval_frame([[0, 0, 448, 300]], 448, 300).tolist() == [[0, 0, 224, 224]]


def test_threshold_grid_is_np_arange():
    evaluator = MaxBoxAccEvaluator({}, {}, interval=0.001)
    assert len(evaluator.thresholds) == 1000
    np.testing.assert_array_equal(evaluator.thresholds, np.arange(0, 1, 0.001))


def test_maps_are_resized_and_normalised():
    # a 512 map with an overshooting range: resized to 224 and min-max normalised into [0, 1]
    m = np.zeros((512, 512), dtype=np.float32)
    m[:256, :256] = 3.0
    out = normalize_map(m)
    assert out.shape == (224, 224) and out.min() == 0.0 and out.max() == 1.0
    # GT of a 512×512 image [0,0,255,255] → int(255·224/512) = int(111.56) = 111
    evaluator = MaxBoxAccEvaluator({"a": [[0, 0, 255, 255]]}, {"a": (512, 512)})
    evaluator.accumulate(m, "a")
    assert evaluator.compute().per_delta[70] == 100.0


def test_errors_name_the_image():
    evaluator = MaxBoxAccEvaluator({"a": [[0, 0, 3, 3]]}, {"a": (224, 224)})
    with pytest.raises(ConfigError, match="'b'"):
        evaluator.accumulate(np.zeros((224, 224)), "b")
    evaluator.accumulate(np.zeros((224, 224)), "a")
    with pytest.raises(ConfigError, match="twice"):
        evaluator.accumulate(np.zeros((224, 224)), "a")


def test_map_folder_keeps_the_extension_in_the_file_name(tmp_path):
    assert map_file(tmp_path, "a/b.jpg") == tmp_path / "a/b.jpg.npy"
    gt = (100, 60, 105, 65)  # k = 6: IoU 36/49 ≥ 0.7 at every δ
    record = EvalRecord("a/b.jpg", tmp_path / "a/b.jpg", 0, None, np.array([gt], dtype=float), (224, 224), "a/b.jpg")
    map_file(tmp_path, "a/b.jpg").parent.mkdir()
    np.save(map_file(tmp_path, "a/b.jpg"), indicator(gt))
    assert evaluate_map_folder([record], tmp_path).value == 100.0
    with pytest.raises(ConfigError, match=r"c.jpg.npy: no map"):
        evaluate_map_folder([record, EvalRecord("c.jpg", tmp_path / "c.jpg", 0, None, np.array([gt], dtype=float),
                                                (224, 224), "c.jpg")], tmp_path)


def concentric_map() -> np.ndarray:
    """512 map: 1.0 on the inner square x, y 200…299 and 0.5 on the ring out to 100…399 (indexed [y][x])."""
    m = np.zeros((512, 512), dtype=np.float32)
    m[100:400, 100:400] = 0.5
    m[200:300, 200:300] = 1.0
    return m


def test_best_threshold_finds_the_plateau():
    # uint8: ring 127, inner 255. τ < 0.5 → cut ≤ int(0.49·255) = 124 keeps the ring: box 100…400, IoU with
    # the inner GT 100²/301² ≈ 0.11. τ ≥ 0.5 → cut ≥ 127 drops it: box [200,200,300,300], IoU 100²/101² ≈ 0.98.
    sweep = best_threshold([concentric_map()], [[[200, 200, 299, 299]]])
    assert sweep.accuracies[:50].max() == 0.0 and sweep.accuracies[50:].min() == 100.0
    assert sweep.threshold == pytest.approx(0.75)  # the middle of the 50 tied values 0.50…0.99
    assert best_threshold([concentric_map()], [[[200, 200, 299, 299]]], prefer=0.23).threshold == pytest.approx(0.5)


def test_best_threshold_rescales_original_gt_boxes():
    # 1024×512 image: GT [400, 200, 599, 299] → x = int(400/1024·512) = 200, int(599/1024·512 = 299.5) = 299,
    # y = 200, 299: the inner square again
    sweep = best_threshold([concentric_map()], [[[400, 200, 599, 299]]], image_sizes=[(1024, 512)], prefer=0.25)
    assert (sweep.threshold, sweep.accuracy) == (pytest.approx(0.5), 100.0)


@pytest.mark.slow
def test_best_threshold_agrees_with_the_engine(tiny_model, make_image):
    """Parity: GT = the engine's own boxes at τ0 on 512×512 images (original frame = map frame), so the
    sweep, which uses the engine's box rule on the engine's map_512, must score 100 % at τ0."""
    from PIL import Image

    from genpromp_annotate.engine.localizer import Localizer
    from genpromp_annotate.presets import LocalizeConfig

    config = LocalizeConfig(threshold=0.3, timesteps=(0,))
    images = [Image.open(make_image(f"{i}.png", size=(512, 512), seed=i)) for i in range(2)]
    results = Localizer(tiny_model, config).localize(images, ["goldfish", "bird"], keep_maps=True)
    gts = [[[b.x1, b.y1, b.x2, b.y2] for b in r.boxes] for r in results]
    grid = np.arange(0, 1, 0.05)
    sweep = best_threshold([r.map_512 for r in results], gts, thresholds=grid, prefer=0.3)
    assert sweep.accuracies[np.argmin(np.abs(grid - 0.3))] == 100.0
    assert sweep.accuracy == 100.0
