"""Sharding helpers, and a real 2-process accelerate launch (gloo on CPU) that matches one process."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest
import torch

from genpromp_annotate.training.distributed import process_context, shard, shard_by_weight


def test_shard_gives_every_item_to_exactly_one_rank():
    items = list(range(11))
    shards = [shard(items, r, 3) for r in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    with pytest.raises(ValueError):
        shard(items, 3, 3)


def test_shard_by_weight_balances_image_counts():
    labels = ["a", "b", "c", "d", "e"]
    images = [10, 1, 1, 7, 3]
    shards = [shard_by_weight(labels, images, r, 2) for r in range(2)]
    # greedy, heaviest first, to the lighter rank (ties to rank 0): a(10)→0 [10, 0], d(7)→1 [10, 7],
    # e(3)→1 [10, 10], b(1)→0 (tie) [11, 10], c(1)→1 [11, 11]; each shard keeps the input order.
    assert shards == [["a", "b"], ["c", "d", "e"]]
    assert sorted(shards[0] + shards[1]) == labels


def test_an_unlaunched_process_is_a_world_of_one():
    context = process_context("cpu")
    assert (context.rank, context.world_size, context.is_main, context.device.type) == (0, 1, True, "cpu")
    assert context.broadcast("x") == "x" and context.gather(3) == [3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_train_each_label_once_and_match_one_process(db_url, make_project, tiny_model):
    from genpromp_annotate.store import queries as q
    from genpromp_annotate.store.database import open_store
    from genpromp_annotate.training.concept_tokens import ConceptTrainer, ConceptTrainingConfig
    from genpromp_annotate.training.runs import _categories_for, stored_embedding

    store = open_store(db_url)
    labels = {"cat": 2, "dog": 1, "bird": 2, "fish": 1}
    make_project(store, "demo", labels)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()),
               "-m", "genpromp_annotate", "--db", db_url, "train-project", "demo",
               "--steps", "2", "--batch-size", "2", "--resolution", "64", "--lr", "5e-3",
               "--finetune-unet", "--unet-steps", "2", "--unet-batch-size", "1", "--unet-lr", "1e-4"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    trained_by = {}
    for rank, names in re.findall(r"process (\d)/2 trained \d label\(s\): (.*)", result.stdout):
        for name in filter(None, names.strip().split(", ")):
            assert name not in trained_by, f"{name} trained twice"
            trained_by[name] = int(rank)
    assert sorted(trained_by) == sorted(labels)  # every label exactly once …
    assert set(trained_by.values()) == {0, 1}  # … and both processes did work

    with store.read() as session:
        project = q.get_project(session, "demo")
        run, unet_run = project.runs
        assert (run.status, run.progress, run.metrics["processes"]) == ("done", 1.0, 2)
        assert (unet_run.status, unet_run.config["processes"]) == ("done", 2)
        assert {c.training_state for c in q.list_categories(session, project)} == {"trained"}
        unet_path = project.unet_path
        assert unet_path is not None and [r.kind for r in project.runs] == ["concept_tokens", "unet_finetune"]

    # One process, same config and seed: the same tokens. Tolerance: the two runs pack different labels
    # together (other batch shapes, so other float32 summation orders), ≈1e-6 per op.
    config = ConceptTrainingConfig(resolution=64, batch_size=2, max_steps=2, learning_rate=5e-3)
    categories, _, _ = _categories_for(store, "demo", list(labels))
    single = ConceptTrainer(tiny_model, categories, config).run()
    for category in categories:
        stored = stored_embedding(store, "demo", category.label)
        assert torch.allclose(stored, single[category.token].embedding, atol=1e-5, rtol=0), category.label

    # Stage 2 split the data: 2 processes × batch 1 with DDP gradient averaging take the same steps as one
    # process with batch 2. Tolerance: all-reduced float32 gradient sums, ≈1e-6 after 2 Adam steps.
    from diffusers import UNet2DConditionModel

    from genpromp_annotate.engine.loading import load_stable_diffusion
    from genpromp_annotate.training.unet_finetune import UnetFinetuneConfig, UnetFinetuner

    model = load_stable_diffusion(tiny_model.source, device="cpu", dtype="float32", training=True)
    vectors = {c.token: stored_embedding(store, "demo", c.label) for c in categories}
    tuner = UnetFinetuner(model, categories, vectors,
                          UnetFinetuneConfig(max_steps=2, batch_size=2, resolution=64, learning_rate=1e-4))
    tuner.run()
    one_process = tuner.finetuned_unet().state_dict()
    two_processes = UNet2DConditionModel.from_pretrained(unet_path).state_dict()
    for name, value in one_process.items():
        assert torch.allclose(value, two_processes[name], atol=1e-5), name
    store.dispose()
