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


def test_report_is_json_ready_and_holds_the_evaluators_numbers(tmp_path):
    loc, v1, v2 = _inputs()
    report = build_report({"layout": "cub", "split": "test", "maps_version": "gp-x"}, loc, v1, v2,
                          failed=[("bad.jpg", "bad.jpg: empty file (0 bytes)")], images={"total": 3})
    path = write_report_json(report, tmp_path / "r.json")
    loaded = json.loads(path.read_text())
    assert loaded == report  # δ keys are already strings
    assert loaded["loc"]["top1_loc"] == 50.0 and loaded["loc"]["top5_loc"] == 50.0  # image 2: Cls, label in top-2
    assert loaded["loc"]["errors"]["Cls"] == 50.0 and loaded["loc"]["errors"]["correct"] == 50.0
    assert loaded["maxboxacc"]["v2"]["value"] == pytest.approx(v2.value)
    assert loaded["maxboxacc"]["v2"]["per_delta"] == {str(k): v for k, v in v2.per_delta.items()}
    assert loaded["maxboxacc"]["v1"]["per_delta"] == {"50": v1.per_delta[50]}
    assert loaded["failed"] == [{"image_id": "bad.jpg", "error": "bad.jpg: empty file (0 bytes)"}]
    assert loaded["paper"] == PAPER_NUMBERS["cub"] == {"top1_loc": 87.0, "top5_loc": 96.1, "gt_known_loc": 98.0}
    assert PAPER_NUMBERS["imagenet"] == {"top1_loc": 65.2, "top5_loc": 73.4, "gt_known_loc": 75.0}


def test_table_and_markdown_show_the_numbers():
    loc, v1, v2 = _inputs()
    report = build_report({"layout": "imagenet", "maps_version": "gp-x", "model": "sd"}, loc, v1, v2,
                          images={"total": 2})
    table = report_table(report)
    assert "imagenet: 2 image(s) evaluated of 2, 0 failed; maps version gp-x" in table
    assert any(line.startswith("Top-1 Loc") and line.split()[-2:] == ["50.00", "65.20"] for line in table.splitlines())
    assert f"{v2.value:.2f}" in table and "δ=70" in table and "Cls 50.0%" in table
    markdown = report_markdown(report)
    assert "| metric | value | paper |" in markdown and "| GT-known Loc | 50.00 | 75.00 |" in markdown
    assert "| model | `sd` |" in markdown


def test_no_classifier_and_no_paper_numbers():
    loc, _, v2 = _inputs(with_scores=False)
    report = build_report({"layout": "wsol"}, loc, None, v2, failed=[("x.jpg", "x.jpg: no such file")])
    assert report["paper"] is None and report["maxboxacc"]["v1"] is None
    table = report_table(report)
    assert "paper" not in table and "MaxBoxAcc (δ=50)" not in table
    assert any(line.startswith("Top-1 Loc") and line.split()[-1] == "—" for line in table.splitlines())
    assert "failed images: 1" in table
    assert "## Failed images" in report_markdown(report) and "`x.jpg`: x.jpg: no such file" in report_markdown(report)
