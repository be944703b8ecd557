"""Loading from a folder, refusing what is not Stable Diffusion, device and dtype choice."""

import json

import pytest
import torch

from genpromp_annotate.engine.loading import choose_dtype, load_stable_diffusion, weights_digest
from genpromp_annotate.errors import ModelLoadError


def test_folder_loads_with_sd_v1_schedule(tiny_model):
    assert tiny_model.device.type == "cpu" and tiny_model.dtype == torch.float32
    s = tiny_model.scheduler.config
    assert (s.num_train_timesteps, s.beta_start, s.beta_end, s.beta_schedule) == (1000, 0.00085, 0.012, "scaled_linear")
    assert tiny_model.latent_scale == 8 and tiny_model.scaling_factor == pytest.approx(0.18215)
    assert not any(p.requires_grad for p in tiny_model.unet.parameters())


def test_dtype_override(tiny_model_dir):
    model = load_stable_diffusion(tiny_model_dir, device="cpu", dtype="bfloat16")
    assert model.unet.dtype == torch.bfloat16 and model.text_encoder.dtype == torch.bfloat16


def test_default_dtypes():
    assert choose_dtype(torch.device("cpu")) == torch.float32
    assert choose_dtype(torch.device("cpu"), "fp16") == torch.float16
    with pytest.raises(ModelLoadError, match="--dtype must be one of"):
        choose_dtype(torch.device("cpu"), "int8")


def test_folder_that_is_not_stable_diffusion(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="not a Stable Diffusion model folder.*missing vae/, text_encoder/, tokenizer/"):
        load_stable_diffusion(tmp_path)


def test_unet_without_cross_attention_is_refused(tiny_model_dir, tmp_path):
    import shutil

    copy = tmp_path / "m"
    shutil.copytree(tiny_model_dir, copy)
    config = json.loads((copy / "unet" / "config.json").read_text())
    config["cross_attention_dim"] = None
    (copy / "unet" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="no cross-attention"):
        load_stable_diffusion(copy)


def test_missing_path_and_bad_single_file(tmp_path):
    with pytest.raises(ModelLoadError, match="no such folder or file"):
        load_stable_diffusion(tmp_path / "absent")
    text = tmp_path / "model.txt"
    text.write_text("x")
    with pytest.raises(ModelLoadError, match="must end in .safetensors"):
        load_stable_diffusion(text)
    junk = tmp_path / "model.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="model.safetensors: cannot load"):
        load_stable_diffusion(junk)


def test_hub_id_offline_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    with pytest.raises(ModelLoadError, match="offline \\(HF_HUB_OFFLINE is set\\)"):
        load_stable_diffusion("someone/not-cached-model")


def test_weights_digest_names_weights_exactly(tiny_model, tiny_model_dir):
    again = load_stable_diffusion(tiny_model_dir, device="cpu")
    assert weights_digest(tiny_model.unet) == weights_digest(again.unet)
    with torch.no_grad():
        next(again.unet.parameters()).view(-1)[0] += 1
    assert weights_digest(tiny_model.unet) != weights_digest(again.unet)
