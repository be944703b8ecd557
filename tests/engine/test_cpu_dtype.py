"""The CPU dtype default (bf16 only on CPUs with native bf16) and bf16 maps against fp32 maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genpromp_annotate.engine import cpu
from genpromp_annotate.engine.loading import (
    CPU_DTYPE_ENV,
    choose_dtype,
    default_cpu_dtype,
    load_stable_diffusion,
)
from genpromp_annotate.engine.localizer import Localizer
from genpromp_annotate.errors import ModelLoadError
from genpromp_annotate.presets import preset
from genpromp_annotate.toy.evaluate import render_with_gt
from genpromp_annotate.toy.world import split_images

CPU = torch.device("cpu")


@pytest.mark.parametrize(("fast_bf16", "expected"), [(True, torch.bfloat16), (False, torch.float32)])
def test_cpu_default_follows_the_bf16_capability(monkeypatch, fast_bf16, expected):
    monkeypatch.delenv(CPU_DTYPE_ENV, raising=False)
    monkeypatch.setattr(cpu, "cpu_has_fast_bf16", lambda flags=None: fast_bf16)
    assert default_cpu_dtype() == expected
    assert choose_dtype(CPU) == expected
    assert choose_dtype(CPU, training=True) == torch.float32  # training keeps fp32 on every CPU
    assert choose_dtype(CPU, "float32") == torch.float32  # an explicit dtype always wins


def test_env_overrides_the_cpu_default_and_rejects_nonsense(monkeypatch):
    monkeypatch.setattr(cpu, "cpu_has_fast_bf16", lambda flags=None: False)
    monkeypatch.setenv(CPU_DTYPE_ENV, "bfloat16")
    assert choose_dtype(CPU) == torch.bfloat16
    monkeypatch.setenv(CPU_DTYPE_ENV, "int4")
    with pytest.raises(ModelLoadError, match=CPU_DTYPE_ENV):
        choose_dtype(CPU)


def test_the_loaded_model_takes_the_default(monkeypatch, toy_model_dir):
    monkeypatch.delenv(CPU_DTYPE_ENV, raising=False)
    monkeypatch.setattr(cpu, "cpu_has_fast_bf16", lambda flags=None: True)
    model = load_stable_diffusion(toy_model_dir, device="cpu")
    assert model.dtype == torch.bfloat16
    assert next(model.unet.parameters()).dtype == torch.bfloat16


def test_bf16_maps_agree_with_fp32_on_the_toy_model(toy_model_dir):
    """Measured on 40 toy test images: min Pearson 0.9987, same GT-known (85 % both); SD-v1.5 size with
    random weights gave 0.995 (bench/cpu_dtype.py). The tolerance is the lower of the two."""
    items = split_images("test", 12, seed=0)
    images = [render_with_gt(item)[0] for item in items]
    labels = [item.label for item in items]
    config = preset("toy")
    maps = {}
    for dtype in ("float32", "bfloat16"):
        model = load_stable_diffusion(toy_model_dir, device="cpu", dtype=dtype)
        maps[dtype] = Localizer(model, config).compute_maps(images, labels).float().numpy()
    pearson = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(maps["float32"], maps["bfloat16"])]
    assert min(pearson) >= 0.995, pearson
    assert not np.allclose(maps["float32"], maps["bfloat16"])  # bf16 really ran
