"""The paper's training recipes (`train-project --preset`): their numbers, and what a run prints and uses."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from genpromp_annotate.training.recipes import RECIPES, describe, recipe
from genpromp_annotate.training.unet_finetune import UnetFinetuneConfig, UnetFinetuner


def test_the_recipes_are_the_reference_configs():
    cub, imagenet = RECIPES["cub-paper"], RECIPES["imagenet-paper"]
    assert (cub.concept.batch_size, cub.concept.grad_accum, cub.concept.learning_rate, cub.concept.scale_lr,
            cub.concept.epochs) == (4, 1, 5e-5, True, 2)
    assert (cub.unet.batch_size, cub.unet.grad_accum, cub.unet.learning_rate, cub.unet.scale_lr,
            cub.unet.max_steps) == (4, 16, 5e-6, False, 250)
    assert (imagenet.concept.batch_size, imagenet.concept.grad_accum, imagenet.concept.learning_rate,
            imagenet.concept.scale_lr, imagenet.concept.epochs) == (2, 2, 5e-5, True, 2)
    assert (imagenet.unet.batch_size, imagenet.unet.grad_accum, imagenet.unet.learning_rate, imagenet.unet.scale_lr,
            imagenet.unet.max_steps) == (2, 32, 5e-8, True, 600)
    for r in (cub, imagenet):
        for config in (r.concept, r.unet):
            assert (config.adam_beta1, config.adam_beta2, config.weight_decay, config.adam_epsilon) == \
                (0.9, 0.999, 1e-2, 1e-8)
    assert not cub.uses_finetuned_unet and imagenet.uses_finetuned_unet
    assert recipe("toy").name == recipe(None).name == "default"


def test_effective_batch_and_lr_are_printed_in_the_papers_terms():
    cub, imagenet = RECIPES["cub-paper"], RECIPES["imagenet-paper"]
    cub_lines = describe(cub.concept, cub.unet)
    assert "= 4 images per token update, LR 5e-05 × 4 = 0.0002" in cub_lines[0]
    assert "batch 4 × accumulation 16 × 1 process(es) = 64 images per UNet update, LR 5e-06 (not scaled)" in cub_lines[1]
    image_lines = describe(imagenet.concept, imagenet.unet, world_size=2)
    assert "batch 2 × accumulation 2 = 4 images per token update, LR 5e-05 × 4 = 0.0002" in image_lines[0]
    assert "= 128 images per UNet update, LR 5e-08 × 128 = 6.4e-06" in image_lines[1]


def test_the_optimizer_gets_the_scaled_stage_two_lr(tiny_model, make_categories):
    categories = make_categories(["cat"], images=1)
    table = tiny_model.text_encoder.get_input_embeddings().weight
    vectors = {c.token: table[c.meta_token_id].detach().clone() for c in categories}
    config = UnetFinetuneConfig(max_steps=1, batch_size=2, grad_accum=32, learning_rate=5e-8, scale_lr=True,
                                resolution=64)
    tuner = UnetFinetuner(tiny_model, categories, vectors, config)
    try:
        assert tuner.optimizer.param_groups[0]["lr"] == pytest.approx(5e-8 * 64)
    finally:
        tiny_model.unet.requires_grad_(False)
        tiny_model.unet.eval()


def test_train_project_prints_the_recipe(db_url, tiny_model_dir, tmp_path):
    from genpromp_annotate.cli import cli as main

    runner = CliRunner()
    args = ["--db", db_url]
    assert runner.invoke(main, [*args, "init", "p", "--model", str(tiny_model_dir), "--label", "cat",
                                "--preset", "cub-paper"]).exit_code == 0
    done = runner.invoke(main, [*args, "train-project", "p", "--steps", "1", "--resolution", "64"])
    assert done.exit_code == 0, done.output
    assert "recipe: cub-paper" in done.output
    assert "stage 1: batch 4 × accumulation 1 = 4 images per token update, LR 5e-05 × 4 = 0.0002" in done.output
    done = runner.invoke(main, [*args, "train-project", "p", "--preset", "imagenet-paper", "--retrain", "--steps", "1",
                                "--grad-accum", "1", "--resolution", "64"])
    assert done.exit_code == 0, done.output
    assert "recipe: imagenet-paper" in done.output and "batch 2 × accumulation 1 = 2 images" in done.output
