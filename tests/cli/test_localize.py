"""`make-tiny-model` and `localize`, through click and as real processes."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from genpromp_annotate.cli import cli
from genpromp_annotate.engine.tokens import write_learned_embeds


def test_localize_writes_boxes_and_cams(tiny_model_dir, make_image, tmp_path):
    a = make_image("a.jpg", size=(320, 200), seed=1)
    b = make_image("b.png", size=(64, 128), seed=2)
    out, cams = tmp_path / "boxes.json", tmp_path / "cams"
    result = CliRunner().invoke(cli, ["localize", "--model", str(tiny_model_dir), "--label", "cat",
                                      "--save-cams", str(cams), "--out", str(out), str(a), str(b)])
    assert result.exit_code == 0, result.output
    entries = json.loads(out.read_text())
    assert [(e["image"], e["label"], e["width"], e["height"]) for e in entries] == [
        (str(a), "cat", 320, 200), (str(b), "cat", 64, 128)]
    for entry in entries:
        assert len(entry["boxes"]) == 1 and set(entry["boxes"][0]) == {"x1", "y1", "x2", "y2", "score"}
        box = entry["boxes"][0]
        assert 0 <= box["x1"] < box["x2"] <= entry["width"] and 0 <= box["y1"] < box["y2"] <= entry["height"]
    for stem in ("a", "b"):
        cam = np.load(cams / f"{stem}.npy")
        assert cam.shape == (512, 512) and cam.dtype == np.float32 and cam.min() == 0 and cam.max() == 1


def test_compile_and_channels_last_give_the_same_boxes(tiny_model_dir, make_image, tmp_path, monkeypatch):
    image = make_image("a.jpg", size=(320, 200), seed=1)
    base = ["localize", "--model", str(tiny_model_dir), "--label", "cat", str(image)]
    plain = CliRunner().invoke(cli, base + ["--out", str(tmp_path / "plain.json")])
    monkeypatch.setenv("GENPROMP_COMPILE_BACKEND", "eager")  # dynamo without a C++ build: fast in tests
    fast = CliRunner().invoke(cli, base + ["--compile", "--channels-last", "--out", str(tmp_path / "fast.json")])
    assert plain.exit_code == 0 and fast.exit_code == 0, fast.output
    a, b = (json.loads((tmp_path / f"{n}.json").read_text())[0]["boxes"] for n in ("plain", "fast"))
    assert len(a) == len(b) == 1
    assert all(abs(a[0][k] - b[0][k]) <= 1 for k in ("x1", "y1", "x2", "y2"))


def test_bad_image_is_reported_and_the_rest_goes_on(tiny_model_dir, make_image, tmp_path):
    good = make_image("good.jpg")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    result = CliRunner().invoke(cli, ["localize", "--model", str(tiny_model_dir), "--label", "cat",
                                      str(empty), str(good)])
    assert result.exit_code == 0
    entries = json.loads(result.stdout)
    assert entries[0]["image"] == str(empty) and "empty file" in entries[0]["error"]
    assert entries[1]["image"] == str(good) and len(entries[1]["boxes"]) == 1


def test_tokens_file_and_engine_options(tiny_model_dir, make_image, tmp_path):
    image = make_image("x.jpg")
    tokens = write_learned_embeds(tmp_path / "learned_embeds.safetensors", {"<cat>": torch.randn(32) * 4})
    base = ["localize", "--model", str(tiny_model_dir), "--label", "cat", "--latent", "mean", "--no-noise"]
    plain = CliRunner().invoke(cli, base + ["--save-cams", str(tmp_path / "p"), str(image)])
    learned = CliRunner().invoke(cli, base + ["--tokens", str(tokens), "--save-cams", str(tmp_path / "l"), str(image)])
    assert plain.exit_code == 0 and learned.exit_code == 0, learned.output
    assert not np.allclose(np.load(tmp_path / "p" / "x.npy"), np.load(tmp_path / "l" / "x.npy"))


def test_errors_are_one_line(tmp_path, make_image):
    result = CliRunner().invoke(cli, ["localize", "--model", str(tmp_path / "none"), "--label", "cat",
                                      str(make_image())])
    assert result.exit_code == 1
    assert result.output.strip().startswith("Error:") and "no such folder or file" in result.output
    assert "Traceback" not in result.output
    bad = CliRunner().invoke(cli, ["localize", "--model", str(tmp_path), "--label", "cat", "--timesteps", "a,b",
                                   str(make_image())])
    assert bad.exit_code == 1 and "--timesteps takes comma-separated integers" in bad.output


@pytest.mark.slow
def test_readme_smoke_commands_as_processes(tmp_path, make_image):
    exe = shutil.which("genpromp-annotate") or f"{sys.executable} -m genpromp_annotate"
    image = make_image("some.jpg")
    model, cams = tmp_path / "m", tmp_path / "c"
    subprocess.run(f"{exe} make-tiny-model {model}", shell=True, check=True)
    done = subprocess.run(f"{exe} localize --model {model} --label cat --save-cams {cams} {image}",
                          shell=True, check=True, capture_output=True, text=True)
    assert json.loads(done.stdout)[0]["label"] == "cat"
    assert (cams / "some.npy").is_file()
