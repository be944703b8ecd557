"""The shipped toy model: small, fp16, and an ordinary SD v1 diffusers folder once written out."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from genpromp_annotate.cli import cli
from genpromp_annotate.toy.weights import (
    pack_toy_weights,
    packaged_weights_path,
    toy_weights_meta,
    write_toy_model,
)


def test_shipped_file_is_fp16_and_under_15_mb():
    from safetensors import safe_open

    path = packaged_weights_path()
    assert path.stat().st_size <= 15 * 1024 * 1024
    with safe_open(str(path), framework="pt") as handle:
        dtypes = {handle.get_tensor(k).dtype for k in list(handle.keys())[:20]}
    assert dtypes == {torch.float16}
    meta = toy_weights_meta()
    assert meta["step"] > 0 and "val" in meta  # the training step and validation scores it was chosen by


def test_toy_model_folder_is_a_sd_v1_layout_with_the_toy_geometry(toy_model, toy_model_dir):
    assert json.loads((toy_model_dir / "model_index.json").read_text())["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert toy_model.latent_scale == 4  # 64-px images → 16×16 latents
    assert toy_model.unet.config.cross_attention_dim == toy_model.text_encoder.config.hidden_size
    ids = toy_model.tokenizer("a photo of a circle").input_ids
    assert ids[:6] == [49406, 320, 1125, 539, 320, 7117]  # the real CLIP vocabulary


def test_cross_attention_runs_where_sd_reads_its_maps(toy_model):
    """8×8: the mid block (1 layer); 16×16: the first down block (2) and the last up block (3), as SD v1."""
    from genpromp_annotate.engine.capture import probe_cross_attention_layers

    layers = probe_cross_attention_layers(toy_model.unet)
    by_group: dict[tuple[str, int], int] = {}
    for layer in layers:
        key = (layer.part, layer.query_side(16))
        by_group[key] = by_group.get(key, 0) + 1
    assert by_group == {("down", 16): 2, ("mid", 8): 1, ("up", 16): 3}


def test_pack_then_write_round_trips_the_weights(toy_model_dir, tmp_path):
    from genpromp_annotate.engine.loading import load_stable_diffusion

    # packing reads diffusers' configs and every weight (the VAE decoder too): open it with diffusers
    toy_model = load_stable_diffusion(toy_model_dir, device="cpu", dtype="float32", runtime="diffusers")
    parts = {"text_encoder": toy_model.text_encoder, "unet": toy_model.unet, "vae": toy_model.vae,
             "scheduler": toy_model.scheduler}
    packed = pack_toy_weights(parts, tmp_path / "again.safetensors", meta={"step": 1})
    folder = write_toy_model(tmp_path / "again", weights=packed)

    again = load_stable_diffusion(folder, device="cpu", dtype="float32", runtime="diffusers")
    for name in ("unet", "vae", "text_encoder"):
        for (key, a), (_, b) in zip(getattr(toy_model, name).state_dict().items(),
                                    getattr(again, name).state_dict().items()):
            assert torch.equal(a, b), (name, key)  # fp16 → fp32 → fp16 is exact
    assert again.scaling_factor == pytest.approx(toy_model.scaling_factor)


def test_toy_model_command_writes_the_folder(tmp_path):
    result = CliRunner().invoke(cli, ["toy-model", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m" / "unet" / "config.json").is_file() and "trained" in result.output


def test_a_file_that_is_no_toy_model_is_refused(tmp_path):
    from safetensors.torch import save_file

    from genpromp_annotate.errors import ModelLoadError

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelLoadError, match="not a toy model file"):
        write_toy_model(tmp_path / "m", weights=tmp_path / "other.safetensors")
