"""The UNet stops inside the last needed layer; maps equal those of a full forward."""

import numpy as np
import pytest
import torch
from PIL import Image

from genpromp_annotate.engine.localizer import Localizer


@pytest.fixture()
def images():
    rng = np.random.default_rng(3)
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in [(320, 240), (128, 200)]]


def _count_calls(unet, names):
    calls = dict.fromkeys(names, 0)
    handles = [dict(unet.named_modules())[n].register_forward_hook(
        lambda _mod, args, out, n=n: calls.__setitem__(n, calls[n] + 1)) for n in names]
    return calls, handles


def test_late_blocks_never_run_and_maps_match(tiny_model, images):
    localizer = Localizer(tiny_model)
    late = ["up_blocks.2", "up_blocks.3", "conv_out", "conv_norm_out"]
    calls, handles = _count_calls(tiny_model.unet, late + ["up_blocks.1.attentions.1", "mid_block"])
    try:
        early = localizer.compute_maps(images, ["cat", "goldfish"], early_exit=True)
        assert all(calls[n] == 0 for n in late), calls
        assert calls["mid_block"] == 1 and calls["up_blocks.1.attentions.1"] == 1
        full = localizer.compute_maps(images, ["cat", "goldfish"], early_exit=False)
        assert all(calls[n] == 1 for n in late), calls
    finally:
        for h in handles:
            h.remove()
    # Identical arithmetic up to the last captured layer: equal to float32 rounding.
    torch.testing.assert_close(early, full, rtol=0, atol=1e-6)


def test_both_timesteps_share_one_unet_call(tiny_model, images):
    localizer = Localizer(tiny_model)
    batches = []
    handle = tiny_model.unet.register_forward_pre_hook(lambda _mod, args: batches.append(args[0].shape[0]))
    try:
        localizer.compute_maps(images, ["cat", "cat"])
    finally:
        handle.remove()
    assert batches == [4]  # 2 images × 2 timesteps in one forward
