"""`train-project` through click: the demo-sized flow init → import → train-project → status."""

from __future__ import annotations

import re

from click.testing import CliRunner

from genpromp_annotate.cli import cli


def test_help_has_an_example():
    result = CliRunner().invoke(cli, ["train-project", "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output and "accelerate launch" in result.output


def test_train_project_trains_every_label_and_status_shows_it(tiny_model_dir, tmp_path, monkeypatch, make_image):
    monkeypatch.setenv("GENPROMP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    db = ["--db", f"sqlite:///{tmp_path / 'p.db'}"]
    for k, label in enumerate(("cat", "dog", "bird")):
        for i in range(2):
            make_image(f"{label}-{i}.png", size=(48, 40), seed=10 * k + i, folder=tmp_path / "data" / label)
    runner = CliRunner()
    for args in (["init", "demo", "--model", str(tiny_model_dir), "--label", "cat", "--label", "dog",
                  "--label", "bird"],
                 ["import", "demo", str(tmp_path / "data"), "--format", "imagefolder"]):
        result = runner.invoke(cli, db + args)
        assert result.exit_code == 0, result.output

    result = runner.invoke(cli, db + ["train-project", "demo", "--steps", "2", "--batch-size", "2",
                                      "--resolution", "64", "--categories-per-step", "2", "--lr", "1e-3",
                                      "--no-scale-lr", "--seed", "3", "--export-tokens", str(tmp_path / "tokens")])
    assert result.exit_code == 0, result.output
    assert "run #1: trained 3 label(s)" in result.output
    # the options end up in the run's recorded config
    from genpromp_annotate.store import queries as q
    from genpromp_annotate.store.database import open_store

    store = open_store(db[1])
    with store.read() as session:
        (run,) = q.get_project(session, "demo").runs
        training = run.config["training"]
    store.dispose()
    assert (training["max_steps"], training["batch_size"], training["resolution"], training["categories_per_step"],
            training["seed"], training["effective_lr"]) == (2, 2, 64, 2, 3, 1e-3)
    assert (tmp_path / "tokens" / "bird" / "learned_embeds.safetensors").is_file()

    status = runner.invoke(cli, db + ["status", "demo"])
    assert status.exit_code == 0, status.output
    assert "3 (3 with a learned concept token)" in status.output
    # the learned tokens make a new model version: every image is to be annotated again
    assert re.search(r"current:   gp-[0-9a-f]{12}, \d+ image\(s\) to annotate with it", status.output)
    assert re.search(r"#1 concept_tokens done 100%", status.output)

    again = runner.invoke(cli, db + ["train-project", "demo"])
    assert again.exit_code == 0 and "already has a token" in again.output


def test_unknown_project_is_one_line_naming_init(tmp_path):
    result = CliRunner().invoke(cli, ["--db", f"sqlite:///{tmp_path / 'p.db'}", "train-project", "nope"])
    assert result.exit_code == 1
    assert "no project named 'nope'" in result.output and "genpromp-annotate init" in result.output
