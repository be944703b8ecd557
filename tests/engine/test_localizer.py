"""Batch = singles for mixed sizes and labels; options; boxes in original pixels."""

import numpy as np
import pytest
import torch
from PIL import Image

from genpromp_annotate.engine.localizer import Localizer
from genpromp_annotate.errors import ConfigError
from genpromp_annotate.presets import LocalizeConfig


def _images():
    rng = np.random.default_rng(7)
    sizes = [(320, 240), (100, 180), (512, 512), (77, 300)]
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


LABELS = ["cat", "goldfish, Carassius auratus", "tench, Tinca tinca", "cat"]


def test_batch_equals_singles(tiny_model):
    localizer = Localizer(tiny_model)
    images = _images()
    batched = localizer.compute_maps(images, LABELS)
    singles = torch.cat([localizer.compute_maps([img], [label]) for img, label in zip(images, LABELS)])
    # batched convolutions may sum in another order: float32 rounding only
    torch.testing.assert_close(batched, singles, rtol=1e-4, atol=1e-4)
    r_batch = localizer.localize(images, LABELS, batch_size=4)
    r_single = localizer.localize(images, LABELS, batch_size=1)
    assert [r.as_dict() for r in r_batch] == [r.as_dict() for r in r_single]


def test_results_are_in_original_pixels(tiny_model):
    results = Localizer(tiny_model).localize(_images(), LABELS, names=["a", "b", "c", "d"], keep_maps=True)
    for result, (w, h) in zip(results, [(320, 240), (100, 180), (512, 512), (77, 300)]):
        assert (result.width, result.height) == (w, h)
        assert result.map_512.shape == (512, 512) and result.map_512.min() == 0 and result.map_512.max() == 1
        for box in result.boxes:
            assert 0 <= box.x1 < box.x2 <= w and 0 <= box.y1 < box.y2 <= h
    assert [r.image for r in results] == ["a", "b", "c", "d"]


def test_seed_noise_and_latent_options(tiny_model):
    images, labels = _images()[:2], LABELS[:2]
    base = Localizer(tiny_model).compute_maps(images, labels)
    same = Localizer(tiny_model, LocalizeConfig(seed=0)).compute_maps(images, labels)
    other_seed = Localizer(tiny_model, LocalizeConfig(seed=1)).compute_maps(images, labels)
    no_noise = Localizer(tiny_model, LocalizeConfig(add_noise=False)).compute_maps(images, labels)
    mean_a = Localizer(tiny_model, LocalizeConfig(latent="mean", seed=0)).compute_maps(images, labels)
    mean_b = Localizer(tiny_model, LocalizeConfig(latent="mean", seed=0, add_noise=False)).compute_maps(images, labels)
    assert torch.equal(base, same)
    assert not torch.allclose(base, other_seed)
    assert not torch.allclose(base, no_noise)
    assert not torch.allclose(mean_a, mean_b)
    # without noise and with the posterior mean, nothing random is left: the seed has no effect
    det = [Localizer(tiny_model, LocalizeConfig(latent="mean", add_noise=False, seed=s)).compute_maps(images, labels)
           for s in (0, 5)]
    assert torch.equal(det[0], det[1])


def test_single_resolution_and_timestep(tiny_model):
    config = LocalizeConfig(resolutions=(16,), timesteps=(99,))
    maps = Localizer(tiny_model, config).compute_maps(_images()[:1], ["cat"])
    assert maps.shape == (1, 512, 512)
    with pytest.raises(ConfigError, match="no cross-attention layer runs at \\[12\\]"):
        Localizer(tiny_model, LocalizeConfig(resolutions=(12,))).compute_maps(_images()[:1], ["cat"])


def test_concept_token_changes_the_map_and_the_digest(tiny_model_dir):
    from genpromp_annotate.engine.loading import load_stable_diffusion

    model = load_stable_diffusion(tiny_model_dir, device="cpu")  # own copy: tokens are added
    localizer = Localizer(model)
    before = localizer.compute_maps(_images()[:1], ["cat"])
    assert localizer.tokens_digest == "none"
    torch.manual_seed(0)
    token = localizer.set_concept_token("cat", torch.randn(model.text_encoder.config.hidden_size) * 5)
    assert token == "<cat>" and localizer.tokens_digest != "none"
    after = localizer.compute_maps(_images()[:1], ["cat"])
    assert not torch.allclose(before, after)
    # ω = 0 ignores f_r: back to the f_d map
    f_d_only = Localizer(model, LocalizeConfig(omega=0.0))
    f_d_only.set_concept_token("cat", torch.randn(model.text_encoder.config.hidden_size))
    torch.testing.assert_close(f_d_only.compute_maps(_images()[:1], ["cat"]), before)


def test_mismatched_lengths_are_refused(tiny_model):
    with pytest.raises(ConfigError, match="2 images but 1 labels"):
        Localizer(tiny_model).compute_maps(_images()[:2], ["cat"])


def test_with_config_keeps_the_tokens_and_equals_a_fresh_localizer(tiny_model_dir, make_image):
    """Another ω through `with_config` gives the maps a fresh Localizer with that ω and the same token gives."""
    import torch
    from PIL import Image

    from genpromp_annotate.engine.loading import load_stable_diffusion
    from genpromp_annotate.engine.localizer import Localizer
    from genpromp_annotate.presets import LocalizeConfig

    model = load_stable_diffusion(tiny_model_dir, device="cpu", dtype="float32")
    vector = torch.linspace(-0.5, 0.5, model.text_encoder.config.hidden_size)
    config = LocalizeConfig(image_size=256, latent="mean")
    base = Localizer(model, config)
    base.set_concept_token("cat", vector, "<with-config-cat>")
    other = base.with_config(config.replace(omega=0.2))
    fresh = Localizer(model, config.replace(omega=0.2))
    fresh.set_concept_token("cat", vector, "<with-config-cat>")
    image = Image.open(make_image("c.png", size=(64, 48))).convert("RGB")
    assert other.config.omega == 0.2 and base.config.omega == 0.6 and other.tokens_digest == base.tokens_digest
    assert torch.allclose(other.compute_maps([image], ["cat"]), fresh.compute_maps([image], ["cat"]), atol=1e-6)
    assert not torch.allclose(other.compute_maps([image], ["cat"]), base.compute_maps([image], ["cat"]), atol=1e-4)
