"""Single original-format checkpoints (.safetensors, .ckpt) load to exactly the folder's weights and maps.

The checkpoints are the tiny model written in the LDM/CompVis single-file layout by `ldm_checkpoint.py`
(the inverse of diffusers' conversion), so the happy path of `load_stable_diffusion(file,
single_file_config=folder)` runs for real, offline.
"""

import numpy as np
import pytest
import torch
from ldm_checkpoint import TEXT_PREFIX, UNET_PREFIX, VAE_PREFIX, ldm_state_dict, write_ldm_checkpoint
from PIL import Image

from genpromp_annotate.engine.loading import load_stable_diffusion, weights_digest
from genpromp_annotate.engine.localizer import Localizer
from genpromp_annotate.errors import ModelLoadError
from genpromp_annotate.presets import LocalizeConfig

PARTS = ("unet", "vae", "text_encoder")
# 128 px keeps the maps cheap on CPU; at latent side 16 the two coarsest attention sides are 2 and 4
SMALL = LocalizeConfig(image_size=128, resolutions=(2, 4))


def _assert_same_weights(loaded, reference) -> None:
    for name in PARTS:
        got, want = getattr(loaded, name).state_dict(), getattr(reference, name).state_dict()
        assert got.keys() == want.keys(), name
        different = [k for k in want if not torch.equal(got[k], want[k])]
        assert not different, f"{name}: {len(different)} tensors differ, e.g. {different[:3]}"
        assert weights_digest(getattr(loaded, name)) == weights_digest(getattr(reference, name))


def _assert_same_maps(loaded, reference) -> None:
    rng = np.random.default_rng(3)
    images = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in [(96, 64), (80, 120)]]
    labels = ["goldfish, Carassius auratus", "cat"]
    got = Localizer(loaded, SMALL).localize(images, labels, keep_maps=True)
    want = Localizer(reference, SMALL).localize(images, labels, keep_maps=True)
    assert len(got) == len(want) == 2
    for a, b in zip(got, want):
        assert a.map_512.shape == (128, 128) and a.map_512.max() == 1
        assert np.array_equal(a.map_512, b.map_512)
        assert a.as_dict() == b.as_dict()


@pytest.fixture(scope="module")
def folder_model(tiny_model_dir):
    """The folder opened with diffusers, as a single file is: every weight, the VAE decoder included."""
    return load_stable_diffusion(tiny_model_dir, device="cpu", dtype="float32", runtime="diffusers")


def test_ldm_layout_covers_every_weight(tiny_model_dir):
    state = ldm_state_dict(tiny_model_dir)
    # the keys diffusers looks for to recognise an SD v1 checkpoint with a CLIP text encoder
    assert f"{UNET_PREFIX}output_blocks.11.0.skip_connection.weight" in state
    assert f"{TEXT_PREFIX}text_model.embeddings.position_embedding.weight" in state
    # the VAE's attention projections are 1×1 convolutions in the original layout
    assert state[f"{VAE_PREFIX}encoder.mid.attn_1.q.weight"].shape == (32, 32, 1, 1)
    assert state[f"{VAE_PREFIX}decoder.mid.attn_1.proj_out.weight"].shape == (32, 32, 1, 1)
    # the decoder is stored in reverse block order: diffusers' up_blocks.0 is LDM's up.3
    assert f"{VAE_PREFIX}decoder.up.3.upsample.conv.weight" in state
    assert f"{VAE_PREFIX}decoder.up.0.upsample.conv.weight" not in state


def test_safetensors_checkpoint_loads_to_the_same_model(folder_model, tiny_model_dir, tmp_path):
    path = write_ldm_checkpoint(tiny_model_dir, tmp_path / "tiny.safetensors")
    loaded = load_stable_diffusion(path, device="cpu", single_file_config=str(tiny_model_dir))
    assert loaded.dtype == torch.float32 and loaded.tokenizer("a cat").input_ids == folder_model.tokenizer("a cat").input_ids
    assert loaded.scheduler.config.beta_schedule == "scaled_linear" and loaded.scheduler.config.num_train_timesteps == 1000
    _assert_same_weights(loaded, folder_model)
    _assert_same_maps(loaded, folder_model)


def test_ckpt_checkpoint_loads_to_the_same_model(folder_model, tiny_model_dir, tmp_path):
    path = write_ldm_checkpoint(tiny_model_dir, tmp_path / "tiny.ckpt")
    assert set(torch.load(path, weights_only=True)) == {"state_dict"}
    loaded = load_stable_diffusion(path, device="cpu", single_file_config=str(tiny_model_dir))
    _assert_same_weights(loaded, folder_model)
    _assert_same_maps(loaded, folder_model)


def test_weights_come_from_the_file_not_the_config_folder(folder_model, tiny_model_dir, tmp_path):
    """Guards the two tests above: a changed tensor in the file shows up in the loaded model."""
    from safetensors.torch import save_file

    state = ldm_state_dict(tiny_model_dir)
    changed = {
        f"{UNET_PREFIX}output_blocks.11.0.skip_connection.weight": ("unet", "up_blocks.3.resnets.2.conv_shortcut.weight"),
        f"{VAE_PREFIX}decoder.mid.attn_1.k.weight": ("vae", "decoder.mid_block.attentions.0.to_k.weight"),
        f"{TEXT_PREFIX}text_model.final_layer_norm.bias": ("text_encoder", None),
    }
    for key in changed:
        state[key] = state[key] + 1.0
    path = tmp_path / "changed.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    loaded = load_stable_diffusion(path, device="cpu", single_file_config=str(tiny_model_dir))
    for key, (part, name) in changed.items():
        got, want = getattr(loaded, part).state_dict(), getattr(folder_model, part).state_dict()
        name = name or next(k for k in want if k.endswith("final_layer_norm.bias"))
        assert torch.equal(got[name], want[name] + 1.0), key


def test_offline_without_config_names_the_model_config_option(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    path = write_ldm_checkpoint(tiny_model_dir, tmp_path / "tiny.safetensors")
    with pytest.raises(ModelLoadError, match="tiny.safetensors: cannot load.*--model-config"):
        load_stable_diffusion(path, device="cpu")
