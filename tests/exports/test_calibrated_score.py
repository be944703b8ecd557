"""The optional `calibrated_score` column: `min_score` compares it where present (raw otherwise), csv and
parquet write it, Label Studio tasks carry it as their score, other formats keep the raw one."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from genpromp_annotate.exports import export_boxes, filter_boxes


@pytest.fixture()
def calibrated(box_table) -> pd.DataFrame:
    # a.jpg raw 0.9 → 0.2 (calibrated down), b.png v1 raw 0.5 → no calibration, b.png v2 raw 0.3 → 0.7
    return box_table.assign(calibrated_score=[0.2, math.nan, 0.7, math.nan])


def test_min_score_compares_the_calibrated_score_where_there_is_one(calibrated):
    kept = filter_boxes(calibrated, min_score=0.4).dropna(subset=["x1"])
    assert sorted(zip(kept["image_uri"], kept["score"])) == [("http://example.org/media/b.png", 0.3),
                                                              ("http://example.org/media/b.png", 0.5)]
    lost = filter_boxes(calibrated, min_score=0.4)
    a = lost[lost["image_uri"] == "imgs/a.jpg"].iloc[0]
    assert math.isnan(a["x1"]) and math.isnan(a["calibrated_score"])  # the image stays, without its box


def test_without_the_column_min_score_is_on_the_raw_score(box_table):
    kept = filter_boxes(box_table, min_score=0.4).dropna(subset=["x1"])
    assert sorted(kept["score"]) == [0.5, 0.9]


def test_csv_and_parquet_write_both_scores(calibrated, tmp_path):
    csv = pd.read_csv(export_boxes(calibrated, "csv", tmp_path / "b.csv"))
    assert list(csv.columns)[-2:] == ["model_version", "calibrated_score"]
    assert csv["calibrated_score"].tolist()[::2] == [0.2, 0.7]
    parquet = pd.read_parquet(export_boxes(calibrated, "parquet", tmp_path / "b.parquet"))
    assert parquet["score"].tolist()[:3] == [0.9, 0.5, 0.3]


def test_label_studio_tasks_carry_the_calibrated_score_coco_the_raw_one(calibrated, tmp_path):
    tasks = json.loads(export_boxes(calibrated, "label-studio", tmp_path / "t.json").read_text())
    a = tasks[0]["predictions"][0]
    assert a["score"] == 0.2 and a["result"][0]["score"] == 0.2
    b = {p["model_version"]: p["score"] for p in tasks[1]["predictions"]}
    assert b == {"v1": 0.5, "v2": 0.7}  # v1 has no calibration: raw
    coco = json.loads(export_boxes(calibrated, "coco", tmp_path / "c.json").read_text())
    assert [a["score"] for a in coco["annotations"]] == [0.9, 0.5, 0.3]
