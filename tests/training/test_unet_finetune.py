"""Stage 2: the sample stream, the 0.5·f_r + 0.5·f_d conditioning, weights that move, saving by digest."""

from __future__ import annotations

import pytest
import torch

from genpromp_annotate.errors import ConfigError
from genpromp_annotate.training.data import AugmentConfig
from genpromp_annotate.training.unet_finetune import (
    UnetFinetuneConfig,
    UnetFinetuner,
    sample_stream,
    save_unet,
    steps_for_epochs,
)


def test_sample_stream_visits_every_pair_once_per_epoch(make_categories):
    categories = make_categories(["cat", "dog"], images=3)
    augment = AugmentConfig(resolution=64)
    stream = sample_stream(categories, 0, augment, 0, 12)
    for epoch in (0, 1):
        pairs = sorted((c, s.index) for c, s in stream if s.epoch == epoch)
        assert pairs == [(c, i) for c in (0, 1) for i in range(3)]
    # any window of the stream is the same samples, however it is cut (what sharding relies on)
    assert sample_stream(categories, 0, augment, 4, 5) == stream[4:9]


def test_defaults_are_the_papers_cub_run():
    config = UnetFinetuneConfig()
    assert (config.max_steps, config.learning_rate, config.representative_weight) == (250, 5e-6, 0.5)
    with pytest.raises(ConfigError):
        UnetFinetuneConfig(representative_weight=1.5)


@pytest.mark.slow
def test_finetune_moves_the_unet_only(tiny_model_dir, make_categories, tmp_path):
    from genpromp_annotate.engine.loading import load_stable_diffusion, weights_digest

    model = load_stable_diffusion(tiny_model_dir, device="cpu", dtype="float32", training=True)  # its UNet will change
    categories = make_categories(["cat", "dog"], images=2)
    table = model.text_encoder.get_input_embeddings().weight
    vectors = {c.token: table[c.meta_token_id].detach().clone() + 0.1 for c in categories}
    text_before, unet_before = weights_digest(model.text_encoder), weights_digest(model.unet)
    tuner = UnetFinetuner(model, categories, vectors,
                          UnetFinetuneConfig(max_steps=2, batch_size=2, resolution=64, learning_rate=1e-4))

    # the conditioning is the 50/50 mix of the concept-token and meta-token prompts
    mixed = tuner.conditioning([0], ["a photo of a {}"])
    tuner.config = tuner.config.replace(representative_weight=1.0)
    f_r = tuner.conditioning([0], ["a photo of a {}"])
    tuner.config = tuner.config.replace(representative_weight=0.0)
    f_d = tuner.conditioning([0], ["a photo of a {}"])
    tuner.config = tuner.config.replace(representative_weight=0.5)
    assert torch.allclose(mixed, 0.5 * f_r + 0.5 * f_d, atol=1e-6)
    assert not torch.allclose(f_r, f_d)

    losses = tuner.run()
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    unet = tuner.finetuned_unet()
    assert weights_digest(model.text_encoder) == text_before  # tokens and text encoder frozen
    assert weights_digest(unet) != unet_before
    path, digest = save_unet(unet, tmp_path / "unets")
    assert path.name == f"unet-{digest}" and (path / "config.json").is_file()
    assert save_unet(unet, tmp_path / "unets") == (path, digest)  # same weights, same folder


def test_stage_two_needs_every_token(tiny_model, make_categories):
    categories = make_categories(["cat"], images=1)
    with pytest.raises(ConfigError, match="cat"):
        UnetFinetuner(tiny_model, categories, {}, UnetFinetuneConfig(max_steps=1))


def test_steps_for_epochs(make_categories):
    categories = make_categories(["cat", "dog"], images=3)
    # 6 images, global batch 2 × 2 processes = 4 → 2 epochs need ceil(12 / 4) = 3 steps
    assert steps_for_epochs(categories, 2, batch_size=2, world_size=2) == 3


@pytest.mark.slow
def test_state_dict_resume_equals_an_uninterrupted_finetune(tiny_model_dir, make_categories):
    from genpromp_annotate.engine.loading import load_stable_diffusion

    categories = make_categories(["cat", "dog"], images=2)
    config = UnetFinetuneConfig(max_steps=2, batch_size=2, grad_accum=1, resolution=64, learning_rate=1e-4)

    def fresh() -> UnetFinetuner:
        model = load_stable_diffusion(tiny_model_dir, device="cpu", dtype="float32", training=True)
        table = model.text_encoder.get_input_embeddings().weight
        return UnetFinetuner(model, categories, {c.token: table[c.meta_token_id].detach().clone() for c in categories},
                             config)

    uninterrupted = fresh()
    uninterrupted.run()
    first = fresh()
    first.step()
    state = first.state_dict()
    second = fresh()
    second.load_state_dict(state)
    second.run()
    assert second.global_step == 2
    expected = uninterrupted.finetuned_unet().state_dict()
    for name, value in second.finetuned_unet().state_dict().items():
        assert torch.equal(value, expected[name]), name
