"""`calibrate-scores` through click (SQLite and PostgreSQL): reliability tables before/after, a clear error
with too few human boxes, and `export --min-score` on the calibrated score."""

from __future__ import annotations

import csv

import pytest

from genpromp_annotate.store.database import open_store
from tests.test_project_scores import _calibrate, _project, _rows, _seed


@pytest.fixture()
def store(db_url):
    store = open_store(db_url)
    _project(store)
    yield store
    store.dispose()


def test_help_teaches_what_the_score_becomes(run):
    text = run("calibrate-scores", "--help")
    for fragment in ("IoU", "isotonic", "--min-boxes", "export --min-score", "Example"):
        assert fragment in text
    assert "calibrated score" in run("export", "--help")


def test_calibrate_prints_reliability_before_and_after_and_stores_the_fit(run, store):
    from genpromp_annotate import project as gp

    _seed(store, "gp-v", _rows(60, 3))
    out = run("calibrate-scores", "p", "--model-version", "gp-v")
    assert "project p, model version gp-v: 60 boxes on human-annotated images" in out
    assert "before (raw score), ECE" in out and "after (calibrated), ECE" in out
    assert out.count("0.9-1.0") == 2 and "hit rate" in out
    assert gp.load_score_calibration(store, "p", "gp-v").boxes == 60


def test_too_few_human_boxes_is_a_clear_error(run, store):
    _seed(store, "gp-v", _rows(3, 0))
    out = run("calibrate-scores", "p", "--model-version", "gp-v", code=1)
    assert "Error: " in out and "3 box(es) on human-annotated images, at least 20 needed" in out
    assert "calibrated" in run("calibrate-scores", "p", "--model-version", "gp-v", "--min-boxes", "3")


def test_export_min_score_uses_the_calibrated_score_and_writes_it(run, store, tmp_path):
    _seed(store, "gp-down", [(0.7, True)], human=False, start=0)
    _seed(store, "gp-up", [(0.3, True)], human=False, start=1)
    _calibrate(store, "gp-down", [0.0, 1.0], [0.0, 3 / 7])  # raw 0.7 → 0.3: dropped at 0.5
    _calibrate(store, "gp-up", [0.0, 1.0], [0.8, 0.8])  # raw 0.3 → 0.8: kept at 0.5
    out = run("export", "p", "--format", "csv", "--out", str(tmp_path / "b.csv"), "--min-score", "0.5",
              "--model-version", "all")
    assert "1 boxes on 2 images" in out
    rows = list(csv.DictReader((tmp_path / "b.csv").open()))
    kept = [r for r in rows if r["x1"]]
    assert [(r["model_version"], r["score"], r["calibrated_score"]) for r in kept] == [("gp-up", "0.3", "0.8")]
