"""`run_benchmark` called as a library function, on the small folders of the CLI benchmark tests.

Each case runs the `benchmark` command and the library function on the same request and checks that
they give the same report (the CLI's JSON file against the returned dict, and against the library's own
JSON file). The maps are cached or saved ones: no model is loaded.
"""

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from genpromp_annotate.cli import cli
from genpromp_annotate.errors import ConfigError
from genpromp_annotate.evaluation.benchmark import BenchmarkRequest, run_benchmark
from tests.cli.test_benchmark import fill_cub_cache, make_cub, make_wsol_metadata


@pytest.fixture()
def no_model(monkeypatch):
    from genpromp_annotate.engine import loading

    monkeypatch.setattr(loading, "load_stable_diffusion", lambda *a, **k: pytest.fail("no model should load"))


def _cli_report(tmp_path, *args):
    out = tmp_path / "cli.json"
    result = CliRunner().invoke(cli, ["benchmark", *map(str, args), "--out", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out


def _cub_cached(tmp_path):
    root = make_cub(tmp_path / "cub")
    fill_cub_cache(root, tmp_path / "maps")
    args = ["--layout", "cub", "--root", root, "--model", "no-such-model", "--maps-dir", tmp_path / "maps",
            "--resume", "--grid-size", "1"]
    request = BenchmarkRequest(layout="cub", root=root, model="no-such-model", maps_dir=tmp_path / "maps",
                               resume=True, grid_size=1)
    return args, request


def _cub_calibrated(tmp_path):
    root = make_cub(tmp_path / "cub")
    fill_cub_cache(root, tmp_path / "maps", "all", extra=0.3)
    args = ["--layout", "cub", "--root", root, "--model", "no-such-model", "--maps-dir", tmp_path / "maps",
            "--resume", "--calibrate-on", "train", "--interval", "0.02"]
    request = BenchmarkRequest(layout="cub", root=root, model="no-such-model", maps_dir=tmp_path / "maps",
                               resume=True, calibrate_on="train", interval=0.02)
    return args, request


def _wsol_saved_maps(tmp_path):
    meta, _, boxes = make_wsol_metadata(tmp_path)
    maps = tmp_path / "cams"
    for image_id in ("a/one.jpg", "b/three.jpg"):  # a/two.png has no map: it is reported as failed
        map_ = np.zeros((224, 224), dtype=np.float32)
        x1, y1, x2, y2 = boxes[image_id][-1]
        map_[y1 : y2 + 1, x1 : x2 + 1] = 1.0
        (maps / image_id).parent.mkdir(parents=True, exist_ok=True)
        np.save(maps / f"{image_id}.npy", map_)
    args = ["--layout", "wsol", "--root", meta, "--maps", maps, "--threshold", "0.4", "--classes", "0"]
    request = BenchmarkRequest(layout="wsol", root=meta, maps_folder=maps, threshold=0.4, classes=("0",))
    return args, request


@pytest.mark.parametrize("case", [_cub_cached, _cub_calibrated, _wsol_saved_maps],
                         ids=["cub-cached", "cub-calibrated", "wsol-saved-maps"])
def test_run_benchmark_gives_the_cli_report(case, tmp_path, no_model):
    args, request = case(tmp_path)
    cli_json = _cli_report(tmp_path, *args)
    cli_report = json.loads(cli_json.read_text())
    result = run_benchmark(request)
    assert json.loads(json.dumps(result.report, default=str)) == cli_report
    for key in ("gt_known_loc", "maxboxacc", "maxboxacc_v2", "maxboxacc_v2_per_iou", "errors", "thresholds",
                "n_images", "per_class", "failed"):  # the numbers, spelled out
        assert result.report[key] == cli_report[key], key
    assert result.failed == [(f["image_id"], f["error"]) for f in cli_report["failed"]]
    assert result.computed == 0 and result.seconds == 0.0 and result.exported is None
    assert result.scores.loc.count == cli_report["n_images"]
    # the same request with an output file writes the same JSON
    from dataclasses import replace

    run_benchmark(replace(request, out=tmp_path / "lib.json"))
    assert (tmp_path / "lib.json").read_text() == cli_json.read_text()
    assert (tmp_path / "lib.md").is_file()


def test_known_numbers_and_progress(tmp_path, no_model):
    """The cached indicator maps of the CLI test: every box found; the callbacks see both stages' counts."""
    _, request = _cub_cached(tmp_path)
    stages: dict[str, list[int]] = {}
    news: list[str] = []

    @contextmanager
    def progress(stage, total):
        stages[stage] = [total, 0]

        def update(n):
            stages[stage][1] += n

        yield update

    result = run_benchmark(request, progress=progress, notify=news.append)
    assert result.report["gt_known_loc"] == 100.0 and result.report["n_images"] == 4
    assert result.report["maxboxacc_v2_per_iou"] == {"30": 100.0, "50": 100.0, "70": 100.0}
    assert result.report["thresholds"]["loc"] == 0.23 and result.report["thresholds"]["loc_source"] == "preset cub-paper"
    assert stages == {"evaluating": [4, 4]}  # nothing to localize: every map is cached
    assert len(news) == 1 and news[0].startswith("4 image(s), 0 to localize, 4 cached")
    assert not list(tmp_path.glob("*.json"))  # no output path: no file


@pytest.mark.parametrize(("request_", "message"), [
    (BenchmarkRequest(model="m"), "either --layout"),
    (BenchmarkRequest(layout="cub", model="m"), "needs --root"),
    (BenchmarkRequest(layout="cub", root=Path("r"), resume=True, overwrite=True), "pick one"),
    (BenchmarkRequest(layout="cub", root=Path("r"), threshold=0.3, calibrate_on="train"), "pick one"),
])
def test_requests_that_cannot_run(request_, message):
    with pytest.raises(ConfigError, match=message):
        run_benchmark(request_)
