"""Score calibration: isotonic (PAV) equals the slow min-max formula, monotone whatever the input,
smoothed away from 0/1, JSON round trip, reliability table and ECE goldens, box hits."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from genpromp_annotate.evaluation.calibration import (
    CalibrationError,
    ScoreCalibration,
    box_hits,
    expected_calibration_error,
    fit_calibration,
    isotonic_fit,
    reliability_table,
)


def slow_isotonic(values, weights):
    """The textbook closed form: fitted_i = max over j ≤ i of min over k ≥ i of the weighted mean of j..k."""
    v, w = np.asarray(values, float), np.asarray(weights, float)
    n = len(v)

    def mean(j, k):
        return float((v[j:k + 1] * w[j:k + 1]).sum() / w[j:k + 1].sum())

    return np.array([max(min(mean(j, k) for k in range(i, n)) for j in range(i + 1)) for i in range(n)])


@pytest.mark.parametrize("seed", range(25))
def test_isotonic_fit_equals_the_slow_formula(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 12))
    values = rng.integers(0, 4, n) / 3 if seed % 2 else rng.random(n)
    weights = rng.integers(1, 5, n).astype(float)
    assert isotonic_fit(values, weights) == pytest.approx(slow_isotonic(values, weights), abs=1e-12)


@pytest.mark.parametrize("seed", range(25))
def test_fit_without_prior_equals_the_slow_fit_at_every_score(seed):
    """Ties pooled into one point per distinct score, then PAV: the knots give the slow fit at each score."""
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(1, 15))
    scores = rng.integers(0, 6, n) / 5  # many ties
    hits = rng.random(n) < 0.5
    xs = np.unique(scores)
    counts = np.array([(scores == x).sum() for x in xs])
    rates = np.array([hits[scores == x].mean() for x in xs])
    calibration = fit_calibration(scores, hits, prior=0.0)
    assert calibration.apply(xs) == pytest.approx(slow_isotonic(rates, counts), abs=1e-12)


ADVERSARIAL = {
    "decreasing": (np.linspace(0, 1, 50), np.arange(50) < 25),
    "alternating": (np.linspace(0, 1, 51), np.arange(51) % 2 == 0),
    "one score": (np.full(20, 0.4), np.arange(20) % 3 == 0),
    "all hits": (np.linspace(0.2, 0.3, 7), np.ones(7, bool)),
    "all misses": (np.linspace(0.2, 0.3, 7), np.zeros(7, bool)),
    "tiny gaps": (0.5 + np.arange(30) * 1e-12, np.arange(30) % 4 == 1),
    "outside [0, 1]": (np.array([-3.0, 7.0, 2.0, -1.0, 0.5]), np.array([1, 0, 1, 0, 1], bool)),
    "random": (np.random.default_rng(7).random(500), np.random.default_rng(8).random(500) < 0.3),
}


@pytest.mark.parametrize("prior", [0.0, 2.0, 50.0])
@pytest.mark.parametrize("case", sorted(ADVERSARIAL))
def test_calibration_is_monotone_and_within_0_1_on_adversarial_inputs(case, prior):
    scores, hits = ADVERSARIAL[case]
    calibration = fit_calibration(scores, hits, prior=prior)
    grid = np.concatenate([np.linspace(-5, 8, 2001), np.sort(scores)])
    grid.sort()
    out = calibration.apply(grid)
    assert (np.diff(out) >= 0).all()
    assert ((0 <= out) & (out <= 1)).all()
    assert calibration.boxes == len(scores) and calibration.hits == int(np.sum(hits))


def test_the_prior_keeps_a_handful_of_boxes_from_certainty_and_fades_with_many():
    assert 0.5 < fit_calibration([0.2, 0.3, 0.4], [1, 1, 1]).probability(0.3) < 1.0
    assert 0.0 < fit_calibration([0.2, 0.3, 0.4], [0, 0, 0]).probability(0.3) < 0.5
    assert fit_calibration([0.2, 0.3, 0.4], [1, 1, 1], prior=0.0).probability(0.3) == 1.0
    many = fit_calibration(np.full(2000, 0.3), np.arange(2000) % 4 == 0)  # 25 % hits
    assert many.probability(0.3) == pytest.approx(0.25, abs=1e-3)


def test_one_score_gives_the_smoothed_hit_rate_everywhere():
    calibration = fit_calibration([0.4] * 4, [1, 0, 1, 1], prior=2.0)
    overall = (3 + 1) / (4 + 2)
    expected = (3 + 2 * overall) / (4 + 2)
    assert calibration.scores == (0.4,)
    assert calibration.apply([0.0, 0.4, 1.0]) == pytest.approx([expected] * 3)


def test_between_blocks_the_map_is_linear_and_within_a_block_flat():
    calibration = fit_calibration([0.1, 0.2, 0.6, 0.7], [0, 0, 1, 1], prior=0.0)
    assert calibration.scores == (0.1, 0.2, 0.6, 0.7) and calibration.probabilities == (0, 0, 1, 1)
    assert calibration.apply([0.15, 0.3, 0.4, 0.65]) == pytest.approx([0.0, 0.25, 0.5, 1.0])


def test_unscored_boxes_stay_unscored():
    calibration = fit_calibration([0.1, 0.9], [0, 1])
    out = calibration.apply([math.nan, 0.5])
    assert math.isnan(out[0]) and 0 < out[1] < 1


def test_round_trip_through_a_json_dict():
    rng = np.random.default_rng(3)
    scores = rng.random(300)
    calibration = fit_calibration(scores, rng.random(300) < scores)
    again = ScoreCalibration.from_dict(json.loads(json.dumps(calibration.as_dict())))
    assert again == calibration
    assert np.array_equal(again.apply(scores), calibration.apply(scores))


@pytest.mark.parametrize("data, message", [
    ({"format": "platt", "a": 1}, "expected format 'isotonic-v1'"),
    ({"format": "isotonic-v1", "scores": [0.1]}, "incomplete or malformed"),
    ({"format": "isotonic-v1", "scores": [0.2, 0.1], "probabilities": [0, 1], "boxes": 2, "hits": 1},
     "increasing scores"),
    ({"format": "isotonic-v1", "scores": [0.1, 0.2], "probabilities": [0.9, 0.1], "boxes": 2, "hits": 1},
     "non-decreasing probabilities"),
    ({"format": "isotonic-v1", "scores": [0.1], "probabilities": [1.5], "boxes": 2, "hits": 1}, r"\[0, 1\]"),
    ({"format": "isotonic-v1", "scores": [], "probabilities": [], "boxes": 0, "hits": 0}, "at least one"),
    ([1, 2], "expected format"),
])
def test_a_bad_stored_calibration_is_refused_clearly(data, message):
    with pytest.raises(CalibrationError, match=message):
        ScoreCalibration.from_dict(data)


@pytest.mark.parametrize("scores, hits, message", [
    ([], [], "no boxes"),
    ([0.1, 0.2], [1], "differ in length"),
    ([0.1, math.nan], [1, 0], "finite"),
    ([0.1, 0.2], [1, 2], "0/1"),
])
def test_bad_inputs_are_refused_clearly(scores, hits, message):
    with pytest.raises(CalibrationError, match=message):
        fit_calibration(scores, hits)


def test_reliability_table_and_ece_golden():
    scores, hits = [0.05, 0.15, 0.15, 0.95, 1.0], [0, 1, 0, 1, 1]
    table = reliability_table(scores, hits, bins=10)
    assert [row.count for row in table] == [1, 2, 0, 0, 0, 0, 0, 0, 0, 2]  # 1.0 is in the last bin
    assert table[1].mean_score == pytest.approx(0.15) and table[1].hit_rate == 0.5
    assert table[2].mean_score is None and table[2].as_dict()["hit_rate"] is None
    assert (table[9].low, table[9].high) == (0.9, 1.0)
    # (1·|0.05 − 0| + 2·|0.15 − 0.5| + 2·|0.975 − 1|) / 5
    assert expected_calibration_error(scores, hits) == pytest.approx((0.05 + 0.7 + 0.05) / 5)
    with pytest.raises(CalibrationError, match=r"cover \[0, 1\]"):
        reliability_table([0.5, 1.2], [1, 0])
    with pytest.raises(CalibrationError, match="no boxes"):
        expected_calibration_error([], [])


def test_calibration_lowers_ece_on_held_out_boxes():
    """Scores that are too confident (P(hit) = score²): fitted on one half, measured on the other."""
    rng = np.random.default_rng(0)
    scores = rng.random(4000)
    hits = rng.random(4000) < scores ** 2
    calibration = fit_calibration(scores[:2000], hits[:2000])
    raw = expected_calibration_error(scores[2000:], hits[2000:])
    calibrated = expected_calibration_error(calibration.apply(scores[2000:]), hits[2000:])
    assert raw > 0.1 and calibrated < 0.03


def test_box_hits_use_the_inclusive_pixels_a_box_covers():
    truth = np.array([[10.0, 10.0, 20.0, 20.0]])  # pixels 10..19
    predicted = np.array([[10.0, 10.0, 20.0, 20.0], [10.0, 10.0, 15.0, 20.0], [14.0, 10.0, 20.0, 20.0],
                          [50.0, 50.0, 60.0, 60.0]])
    # IoU 1, exactly 0.5 (a hit: ≥), 0.6 … and no overlap
    assert box_hits(predicted, truth).tolist() == [True, True, True, False]
    assert box_hits(predicted, np.zeros((0, 4))).tolist() == [False] * 4
    assert box_hits(np.zeros((0, 4)), truth).tolist() == []
