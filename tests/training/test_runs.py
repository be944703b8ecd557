"""train_project over the store: tokens and run rows, retrain, skipped labels, SIGKILL + resume, stage 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from genpromp_annotate.store import queries as q
from genpromp_annotate.store.models import TrainingRun
from genpromp_annotate.training.checkpoints import load_checkpoint
from genpromp_annotate.training.concept_tokens import ConceptTrainer, ConceptTrainingConfig
from genpromp_annotate.training.runs import (
    TrainOptions,
    _categories_for,
    run_checkpoint_dir,
    stored_embedding,
    train_project,
    unfinished_runs,
)
from genpromp_annotate.training.unet_finetune import UnetFinetuneConfig

FAST = ConceptTrainingConfig(resolution=64, batch_size=2, max_steps=2, learning_rate=5e-3)


def runs_of(store, project: str) -> list[TrainingRun]:
    with store.read() as session:
        return list(q.get_project(session, project).runs)


def states_of(store, project: str) -> dict[str, str]:
    with store.read() as session:
        return {c.name: c.training_state for c in q.list_categories(session, q.get_project(session, project))}


def test_tokens_and_run_row_are_stored(db, make_project, tiny_model, tmp_path):
    make_project(db, "demo", {"cat": 2, "dog": 3})
    events = []
    summary = train_project(db, "demo", TrainOptions(concept=FAST, export_dir=tmp_path / "tokens"),
                            on_event=events.append, model=tiny_model)
    assert sorted(summary.trained) == ["cat", "dog"] and summary.skipped == []
    assert states_of(db, "demo") == {"cat": "trained", "dog": "trained"}
    width = tiny_model.text_encoder.config.hidden_size
    for label in ("cat", "dog"):
        embedding = stored_embedding(db, "demo", label)
        assert embedding.shape == (width,) and embedding.dtype == torch.float32
    (run,) = runs_of(db, "demo")
    assert (run.kind, run.status, run.progress, run.error) == ("concept_tokens", "done", 1.0, None)
    assert run.config["categories"] == ["cat", "dog"]
    assert run.config["training"]["max_steps"] == 2 and run.config["training"]["effective_lr"] == pytest.approx(1e-2)
    assert run.metrics["categories_done"] == 2 and run.metrics["images"] == summary.images
    assert run.started_at <= run.finished_at
    assert events[0].kind == "plan" and {e.label for e in events if e.kind == "category"} == {"cat", "dog"}
    # diffusers-format files of every stored token, and the run's checkpoints are gone
    assert sorted(p.parent.name for p in summary.exported) == ["cat", "dog"]
    assert not run_checkpoint_dir("demo", run.project_id, run.id).exists()


def test_the_project_localizer_uses_the_learned_tokens(db, make_project, tiny_model):
    from genpromp_annotate.project import build_localizer

    make_project(db, "demo", {"cat": 2})
    before = build_localizer(db, "demo", model=tiny_model).localizer.tokens_digest
    train_project(db, "demo", TrainOptions(concept=FAST), model=tiny_model)
    assert before == "none"
    assert build_localizer(db, "demo", model=tiny_model).localizer.tokens_digest != "none"


def test_only_untrained_labels_unless_retrain(db, make_project, tiny_model):
    make_project(db, "demo", {"cat": 2})
    train_project(db, "demo", TrainOptions(concept=FAST), model=tiny_model)
    first = stored_embedding(db, "demo", "cat")
    again = train_project(db, "demo", TrainOptions(concept=FAST), model=tiny_model)
    assert again.run_id is None and again.trained == [] and len(runs_of(db, "demo")) == 1
    retrained = train_project(db, "demo", TrainOptions(concept=FAST.replace(seed=5), retrain=True), model=tiny_model)
    assert retrained.trained == ["cat"] and len(runs_of(db, "demo")) == 2
    assert not torch.equal(first, stored_embedding(db, "demo", "cat"))


def test_a_label_without_images_is_skipped_and_stays_untrained(db, make_project, tiny_model):
    make_project(db, "demo", {"cat": 2}, extra_labels=("heron",))
    summary = train_project(db, "demo", TrainOptions(concept=FAST), model=tiny_model)
    assert summary.trained == ["cat"] and summary.skipped == ["heron"]
    assert states_of(db, "demo") == {"cat": "trained", "heron": "untrained"}


@pytest.mark.slow
def test_resume_after_sigkill_keeps_finished_labels(db_url, make_project, tiny_model, tmp_path):
    from genpromp_annotate.store.database import open_store

    store = open_store(db_url)
    make_project(store, "demo", {"cat": 2, "dog": 2, "bird": 2})
    args = ["--steps", "8", "--batch-size", "1", "--resolution", "64", "--lr", "5e-3",
            "--categories-per-step", "1", "--checkpoint-every", "1"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "genpromp_annotate", "--db", db_url, "train-project", "demo",
                                *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    # Kill it once the first label is stored and the second has a checkpoint of its own.
    deadline = time.monotonic() + 240
    killed_with: dict[str, str] = {}
    while time.monotonic() < deadline and process.poll() is None:
        states = states_of(store, "demo")
        runs = runs_of(store, "demo")
        folder = run_checkpoint_dir("demo", runs[0].project_id, runs[0].id) if runs else None
        if 1 <= list(states.values()).count("trained") < 3 and folder is not None and (folder / "rank0.pt").exists():
            state = load_checkpoint(folder / "rank0.pt")  # atomic writes: always a whole checkpoint
            in_flight = [item["token"].strip("<>") for item in state["active"]]
            if in_flight and all(states[label] == "training" for label in in_flight):
                process.send_signal(signal.SIGKILL)
                killed_with = states
                break
        time.sleep(0.1)
    output = process.communicate(timeout=60)[0].decode(errors="replace")
    assert process.returncode == -signal.SIGKILL, f"the run was not killed in time:\n{output}"
    assert killed_with["cat"] == "trained" and "training" in killed_with.values()
    assert unfinished_runs(store, "demo") == [(runs_of(store, "demo")[0].id, "concept_tokens")]
    (run,) = runs_of(store, "demo")
    assert run.status == "running" and run.finished_at is None  # SIGKILL leaves no chance to clean up
    cat_before = stored_embedding(store, "demo", "cat")

    config = ConceptTrainingConfig(resolution=64, batch_size=1, max_steps=8, learning_rate=5e-3, categories_per_step=1)
    # `train-project --resume` as a user types it; the run's stored settings win over the command line's.
    from click.testing import CliRunner

    from genpromp_annotate.cli import cli

    result = CliRunner().invoke(cli, ["--db", db_url, "train-project", "demo", "--resume", "--steps", "1"])
    assert result.exit_code == 0, result.output
    assert f"run #{run.id}: trained 2 label(s)" in result.output  # dog and bird; cat is not trained again
    assert states_of(store, "demo") == {"cat": "trained", "dog": "trained", "bird": "trained"}
    assert torch.equal(stored_embedding(store, "demo", "cat"), cat_before)
    (run,) = runs_of(store, "demo")
    assert (run.status, run.progress) == ("done", 1.0)
    assert unfinished_runs(store, "demo") == []

    # The resumed result equals an uninterrupted run of the stored config (same seeded draws). Tolerance:
    # the killed process ran with 1 thread, this one may use more, so float sums may be ordered differently.
    categories, _, _ = _categories_for(store, "demo", ["cat", "dog", "bird"])
    reference = ConceptTrainer(tiny_model, categories, config).run()
    for category in categories:
        assert torch.allclose(stored_embedding(store, "demo", category.label), reference[category.token].embedding,
                              atol=1e-5, rtol=0), category.label
    store.dispose()


@pytest.mark.slow
def test_finetune_unet_saves_and_selects_a_new_unet(db, make_project, tiny_model):
    from genpromp_annotate.engine.loading import weights_digest
    from genpromp_annotate.project import build_localizer

    make_project(db, "demo", {"cat": 2, "dog": 1})
    unet = UnetFinetuneConfig(max_steps=2, batch_size=2, resolution=64, learning_rate=1e-4)
    # model=None: stage 2 changes the UNet in place, so it loads its own copy of the base model.
    summary = train_project(db, "demo", TrainOptions(concept=FAST, unet=unet))
    assert summary.unet_path is not None
    with db.read() as session:
        project = q.get_project(session, "demo")
        assert (project.unet_path, project.unet_digest) == (summary.unet_path, summary.unet_digest)
        unet_run = next(r for r in project.runs if r.kind == "unet_finetune")
    assert unet_run.status == "done" and unet_run.output_path == summary.unet_path
    assert unet_run.metrics["steps"] == 2
    assert summary.unet_digest != weights_digest(tiny_model.unet)
    # annotation picks the selected UNet up: a different model version than the base UNet's
    localizer = build_localizer(db, "demo", device="cpu", dtype="float32")
    assert weights_digest(localizer.localizer.model.unet) == summary.unet_digest
    assert localizer.version.unet == summary.unet_digest


@pytest.mark.slow
def test_unet_finetune_resumes_after_a_crash(db, make_project):
    make_project(db, "demo", {"cat": 2, "dog": 1})
    unet = UnetFinetuneConfig(max_steps=3, batch_size=2, resolution=64, learning_rate=1e-4)

    class Crash(Exception):
        pass

    def crash_at_step_two(event):
        if event.kind == "unet-step" and event.step == 2:
            raise Crash

    options = TrainOptions(concept=FAST, unet=unet, checkpoint_every=1)
    with pytest.raises(Crash):
        train_project(db, "demo", options, on_event=crash_at_step_two)
    unet_run = next(r for r in runs_of(db, "demo") if r.kind == "unet_finetune")
    assert unet_run.status == "failed" and "Crash" in unet_run.error
    steps = []
    summary = train_project(db, "demo", TrainOptions(concept=FAST, unet=unet, resume=True, checkpoint_every=1),
                            on_event=lambda e: steps.append(e.step) if e.kind == "unet-step" else None)
    assert summary.unet_run_id == unet_run.id and steps == [2, 3]  # continued from the step-1 checkpoint
    unet_run = next(r for r in runs_of(db, "demo") if r.kind == "unet_finetune")
    assert (unet_run.status, unet_run.metrics["steps"]) == ("done", 3)


def test_checkpoints_of_two_processes_resume_in_one(tiny_model, make_categories, tmp_path):
    # Two "ranks" each train their shard and checkpoint mid-way; one process then resumes from both files
    # and ends exactly where an uninterrupted one-process run ends (per-label trajectories are independent).
    from genpromp_annotate.training.checkpoints import save_checkpoint
    from genpromp_annotate.training.distributed import shard
    from genpromp_annotate.training.runs import _merge_checkpoints

    categories = make_categories(["cat", "dog", "bird"], images=2)
    config = FAST.replace(max_steps=3, categories_per_step=2)
    for rank in (0, 1):
        trainer = ConceptTrainer(tiny_model, shard(categories, rank, 2), config)
        trainer.step()
        save_checkpoint(tmp_path / f"rank{rank}.pt", trainer.state_dict())
    resumed = ConceptTrainer(tiny_model, categories, config)
    resumed.load_state_dict(_merge_checkpoints(tmp_path))
    assert sorted(e.category.token for e in resumed.active) == ["<bird>", "<cat>", "<dog>"]
    results = resumed.run()
    uninterrupted = ConceptTrainer(tiny_model, categories, config).run()
    for token, result in uninterrupted.items():
        assert results[token].steps == 3
        # Tolerance: the packs differ (shards of 2 + 1 vs 3 together), so float32 sums differ by ~1e-7.
        assert torch.allclose(results[token].embedding, result.embedding, atol=1e-5, rtol=0), token
