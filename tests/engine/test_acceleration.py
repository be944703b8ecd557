"""--compile and --channels-last: the same maps as eager code, and a clean fallback where compilation fails."""

from __future__ import annotations

import logging

import pytest
import torch

from genpromp_annotate.engine.acceleration import SpeedOptions, accelerate, compile_model
from genpromp_annotate.engine.loading import load_stable_diffusion
from genpromp_annotate.engine.localizer import Localizer
from genpromp_annotate.presets import preset
from genpromp_annotate.toy.evaluate import render_with_gt
from genpromp_annotate.toy.world import split_images


@pytest.fixture()
def toy_batch():
    items = split_images("test", 4, seed=0)
    return [render_with_gt(item)[0] for item in items], [item.label for item in items]


def _fresh(toy_model_dir):
    return load_stable_diffusion(toy_model_dir, device="cpu", dtype="float32")


def _maps(model, batch) -> torch.Tensor:
    return Localizer(model, preset("toy")).compute_maps(*batch)


def test_compiled_parts_give_the_eager_maps(toy_model_dir, toy_batch):
    eager = _maps(_fresh(toy_model_dir), toy_batch)
    model = _fresh(toy_model_dir)
    state = compile_model(model, backend="eager")  # dynamo traces every part; no C++ toolchain needed
    assert state.parts > 10  # VAE encoder + UNet ResNet / feed-forward / time-embedding blocks
    compiled = _maps(model, toy_batch)
    assert state.failed is None
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=0)
    assert compile_model(model, backend="eager").parts == 0  # a second call leaves compiled parts alone


def test_a_failing_compiler_falls_back_to_eager_with_one_warning(toy_model_dir, toy_batch, caplog):
    def broken_backend(*_graph_and_inputs):
        raise RuntimeError("no C++ compiler on this machine")

    eager = _maps(_fresh(toy_model_dir), toy_batch)
    model = _fresh(toy_model_dir)
    state = compile_model(model, backend=broken_backend)
    with caplog.at_level(logging.WARNING, logger="genpromp_annotate"):
        maps = _maps(model, toy_batch)
        again = _maps(model, toy_batch)
    assert state.failed is not None and "no C++ compiler" in state.failed
    torch.testing.assert_close(maps, eager, atol=1e-6, rtol=0)
    torch.testing.assert_close(again, eager, atol=1e-6, rtol=0)
    assert sum("torch.compile is not usable" in r.getMessage() for r in caplog.records) == 1
    assert all("forward" not in m.__dict__ for m in model.unet.modules())  # eager forwards restored


def test_channels_last_gives_the_same_maps(toy_model_dir, toy_batch):
    eager = _maps(_fresh(toy_model_dir), toy_batch)
    model = accelerate(_fresh(toy_model_dir), SpeedOptions(channels_last=True))
    conv = next(m for m in model.unet.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(_maps(model, toy_batch), eager, atol=1e-4, rtol=0)
