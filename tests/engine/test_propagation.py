"""Self-attention propagation (beyond the paper): equal to the explicit affinity product, and wired
into the Localizer without changing anything when off."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from genpromp_annotate.engine.capture import CaptureState, capture_columns, probe_attention_layers
from genpromp_annotate.engine.localizer import Localizer
from genpromp_annotate.engine.maps import propagate_with_affinity
from genpromp_annotate.errors import ConfigError
from genpromp_annotate.presets import LocalizeConfig


def _explicit(maps, affinities, n_timesteps, steps, product):
    """The slow, obvious way: materialise A = mean over layers, heads, timesteps of softmax(QKᵀ·s)."""
    batch, side = maps.shape[0], maps.shape[-1]
    flat = maps.flatten(1)
    m = (flat - flat.min(1, keepdim=True).values) / (flat.max(1, keepdim=True).values - flat.min(1, keepdim=True).values)
    total = affinities[0][0].shape[0]
    matrices = []
    for query, key, scale in affinities:
        probs = torch.softmax(query.double() @ key.double().transpose(-1, -2) * scale, dim=-1)  # (T·B, H, N, N)
        matrices.append(probs.mean(dim=1).view(total // batch, batch, side * side, side * side).mean(dim=0))
    a = torch.stack(matrices).mean(dim=0)  # (B, N, N)
    current = m.double()
    for _ in range(steps):
        current = torch.einsum("bij,bj->bi", a, current)
    if product:
        low, high = current.min(1, keepdim=True).values, current.max(1, keepdim=True).values
        current = (current - low) / (high - low) * m.double()
    return current.view(batch, side, side).float()


@pytest.mark.parametrize(("steps", "product"), [(1, False), (2, False), (1, True)])
def test_propagation_equals_the_explicit_affinity_product_on_a_16x16_map(steps, product):
    generator = torch.Generator().manual_seed(0)
    batch, timesteps, heads, dim, side = 2, 2, 3, 8, 16
    maps = torch.rand(batch, side, side, generator=generator)
    affinities = [(torch.randn(timesteps * batch, heads, side * side, dim, generator=generator),
                   torch.randn(timesteps * batch, heads, side * side, dim, generator=generator), dim ** -0.5)
                  for _ in range(2)]
    fast = propagate_with_affinity(maps, affinities, timesteps, steps, product)
    torch.testing.assert_close(fast, _explicit(maps, affinities, timesteps, steps, product), atol=1e-5, rtol=1e-4)


def test_affinity_capture_keeps_the_unet_output(tiny_model):
    """The capture processor is plain self-attention: the UNet's output does not change."""
    unet = tiny_model.unet
    layers = probe_attention_layers(unet)
    selfs = [layer for layer in layers if not layer.is_cross]
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(2, unet.config.in_channels, 16, 16, generator=generator)
    context = torch.randn(2, 77, unet.config.cross_attention_dim, generator=generator)
    steps = torch.tensor([0, 99])
    with torch.inference_mode():
        plain = unet(latents, steps, encoder_hidden_states=context).sample
        state = CaptureState()
        with capture_columns(unet, [], state, early_exit=False, affinity_layers=selfs):
            captured = unet(latents, steps, encoder_hidden_states=context).sample
    torch.testing.assert_close(captured, plain, atol=1e-5, rtol=1e-4)
    assert set(state.affinities) == {layer.name for layer in selfs}


def test_off_by_default_on_in_the_version_and_the_maps(tiny_model):
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)) for _ in range(2)]
    base = LocalizeConfig(image_size=256)
    on = base.replace(propagation_side=32, propagation_product=True)
    assert base.refinement_key == "" and base.box_settings_key.endswith("mb0:0.01")  # old versions unchanged
    assert on.box_settings_key != base.box_settings_key
    plain = Localizer(tiny_model, base).compute_maps(images, ["cat", "cat"])
    refined = Localizer(tiny_model, on).compute_maps(images, ["cat", "cat"])
    assert refined.shape == plain.shape and not torch.allclose(refined, plain)
    assert float(refined.min()) == 0.0 and float(refined.max()) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="propagation_side 7"):
        Localizer(tiny_model, base.replace(propagation_side=7)).compute_maps(images, ["cat", "cat"])


def _images(n=2):
    rng = np.random.default_rng(3)
    return [Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)) for _ in range(n)]


def test_flip_tta_is_the_mean_of_the_map_and_the_mirrored_map(tiny_model):
    images = _images()
    base = LocalizeConfig(image_size=256)
    plain = Localizer(tiny_model, base)
    mirrored = plain.latent_maps([im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for im in images], ["cat"] * 2)
    expected = (plain.latent_maps(images, ["cat"] * 2) + mirrored.flip(-1)) / 2
    both = Localizer(tiny_model, base.replace(flip_tta=True)).latent_maps(images, ["cat"] * 2)
    torch.testing.assert_close(both, expected, atol=1e-4, rtol=1e-3)
    assert base.replace(flip_tta=True).box_settings_key.endswith("|flip")


def test_resolution_weights_weigh_the_groups_of_each_side(tiny_model):
    images = _images()
    base = LocalizeConfig(image_size=256)
    only_8 = Localizer(tiny_model, base.replace(resolutions=(8,))).latent_maps(images, ["cat"] * 2)
    weighted = Localizer(tiny_model, base.replace(resolution_weights=(1.0, 0.0))).latent_maps(images, ["cat"] * 2)
    torch.testing.assert_close(weighted, only_8, atol=1e-5, rtol=1e-4)
    equal = Localizer(tiny_model, base.replace(resolution_weights=(1.0, 1.0))).latent_maps(images, ["cat"] * 2)
    torch.testing.assert_close(equal, Localizer(tiny_model, base).latent_maps(images, ["cat"] * 2))
    with pytest.raises(ConfigError, match="resolution_weights"):
        base.replace(resolution_weights=(1.0,))
