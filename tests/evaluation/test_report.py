"""build_report: JSON-ready, numbers as the evaluators give them; table and Markdown show them."""

import json

import numpy as np
import pytest

from genpromp_annotate.evaluation.loc_metrics import LocEvaluator
from genpromp_annotate.evaluation.maxboxacc import MaxBoxAccEvaluator
from genpromp_annotate.evaluation.report import (
    PAPER_NUMBERS,
    build_report,
    report_markdown,
    report_table,
    write_report_json,
)


def _inputs(with_scores=True):
    # two 100×100 images, GT [10, 10, 59, 59]; predictions in the 512 frame (×5.12)
    gt = np.array([[10.0, 10.0, 59.0, 59.0]])
    loc = LocEvaluator()
    loc.accumulate([51, 51, 307, 307], gt, 100, 100, 0, [0.9, 0.1] if with_scores else None)  # right class, IoU≈1
    loc.accumulate([0, 0, 511, 511], gt, 100, 100, 1, [0.9, 0.1] if with_scores else None)  # wrong class, big box
    indicator = np.zeros((100, 100), dtype=np.float32)
    indicator[10:60, 10:60] = 1.0
    evaluators = {v: MaxBoxAccEvaluator({"a": gt, "b": gt}, {"a": (100, 100), "b": (100, 100)}, v) for v in ("v1", "v2")}
    for evaluator in evaluators.values():
        evaluator.accumulate(indicator, "a")
        evaluator.accumulate(np.ones((100, 100), dtype=np.float32), "b")
    return loc.compute(), evaluators["v1"].compute(), evaluators["v2"].compute()


TOP_LEVEL = {"gt_known_loc", "top1_loc", "top5_loc", "maxboxacc", "maxboxacc_v2", "maxboxacc_v2_per_iou", "errors",
             "thresholds", "n_images"}


def test_report_is_json_ready_and_holds_the_evaluators_numbers(tmp_path):
    loc, v1, v2 = _inputs()
    report = build_report({"dataset": "cub", "split": "test", "maps_version": "gp-x"}, loc, v1, v2,
                          thresholds={"loc": 0.23, "loc_source": "preset cub-paper"},
                          failed=[("bad.jpg", "bad.jpg: empty file (0 bytes)")], images={"total": 3},
                          per_class={"a": {"n": 2, "gt_known_loc": 50.0, "mean_iou": 0.5}}, paper="cub")
    path = write_report_json(report, tmp_path / "r.json")
    loaded = json.loads(path.read_text())
    assert loaded == report  # δ keys are already strings
    assert TOP_LEVEL <= set(loaded) and loaded["n_images"] == 2
    assert loaded["top1_loc"] == 50.0 and loaded["top5_loc"] == 50.0  # image 2: Cls, label in top-2
    assert loaded["gt_known_loc"] == 50.0 and loaded["classifier"] is True
    assert loaded["errors"]["Cls"] == 50.0 and loaded["errors"]["correct"] == 50.0
    assert loaded["maxboxacc_v2"] == pytest.approx(v2.value) and loaded["maxboxacc"] == pytest.approx(v1.value)
    assert loaded["maxboxacc_v2_per_iou"] == {str(k): v for k, v in v2.per_delta.items()}
    assert set(loaded["maxboxacc_v2_per_iou"]) == {"30", "50", "70"}
    assert loaded["thresholds"]["loc"] == 0.23 and loaded["thresholds"]["maxboxacc"] == v1.best_threshold[50]
    assert loaded["thresholds"]["maxboxacc_v2"] == {str(k): t for k, t in v2.best_threshold.items()}
    assert loaded["failed"] == [{"image_id": "bad.jpg", "error": "bad.jpg: empty file (0 bytes)"}]
    assert loaded["paper"] == PAPER_NUMBERS["cub"] == {"top1_loc": 87.0, "top5_loc": 96.1, "gt_known_loc": 98.0}
    assert PAPER_NUMBERS["imagenet"] == {"top1_loc": 65.2, "top5_loc": 73.4, "gt_known_loc": 75.0}


def test_table_and_markdown_show_the_numbers():
    loc, v1, v2 = _inputs()
    report = build_report({"dataset": "imagenet", "maps_version": "gp-x", "model": "sd"}, loc, v1, v2,
                          thresholds={"loc": 0.25, "loc_source": "preset imagenet-paper",
                                      "best_on_this_split": {"gt_known_loc": {"threshold": 0.3, "value": 50.0},
                                                             "top1_loc": None, "top5_loc": None}},
                          images={"total": 2}, per_class={"goldfish": {"n": 1, "gt_known_loc": 0.0, "mean_iou": 0.1},
                                                          "tench": {"n": 1, "gt_known_loc": 100.0, "mean_iou": 0.9}},
                          paper="imagenet")
    table = report_table(report)
    assert "imagenet: 2 image(s) evaluated of 2, 0 failed; maps gp-x" in table
    assert any(line.startswith("Top-1 Loc") and line.split()[-2:] == ["50.00", "65.20"] for line in table.splitlines())
    assert f"{v2.value:.2f}" in table and "δ=70" in table and "Cls 50.0%" in table
    assert "τ of the Loc metrics: 0.25 (preset imagenet-paper)" in table
    assert "GT-known Loc 50.00 at τ=0.30" in table and "oracle" in table
    markdown = report_markdown(report, "report.png")
    assert "| metric | value | paper |" in markdown and "| GT-known Loc | 50.00 | 75.00 |" in markdown
    assert "| model | `sd` |" in markdown and "![best and worst images](report.png)" in markdown
    assert markdown.index("| goldfish | 1 | 0.00") < markdown.index("| tench | 1 | 100.00")  # worst class first


def test_no_classifier_and_no_paper_numbers():
    loc, _, v2 = _inputs(with_scores=False)
    report = build_report({"dataset": "wsol"}, loc, None, v2, failed=[("x.jpg", "x.jpg: no such file")])
    assert report["paper"] is None and report["maxboxacc"] is None and report["classifier"] is False
    assert report["top1_loc"] is None and report["top5_loc"] is None and report["gt_known_loc"] == 50.0
    table = report_table(report)
    assert "paper" not in table and "MaxBoxAcc (δ=50" not in table
    assert any(line.startswith("Top-1 Loc") and line.split()[-1] == "—" for line in table.splitlines())
    assert "no classifier given: only GT-known Loc" in table
    assert "failed images: 1" in table
    markdown = report_markdown(report)
    assert "## Failed images" in markdown and "`x.jpg`: x.jpg: no such file" in markdown
    assert "no classifier given" in markdown
