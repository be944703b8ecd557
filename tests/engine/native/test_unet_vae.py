"""The native UNet, VAE encoder and noise schedule against diffusers' own classes on the same folders."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

from genpromp_annotate.engine.capture import probe_attention_layers, run_unet_capturing, select_layers
from genpromp_annotate.engine.native.errors import UnsupportedCheckpoint
from genpromp_annotate.engine.native.schedule import NoiseSchedule
from genpromp_annotate.engine.native.unet import NativeUNet
from genpromp_annotate.engine.native.vae import NativeAutoencoderKL
from genpromp_annotate.errors import ModelLoadError


def _pair_unet(folder, dtype=torch.float32):
    return (NativeUNet.from_folder(folder, dtype=dtype),
            UNet2DConditionModel.from_pretrained(folder, torch_dtype=dtype).eval())


def _unet_inputs(unet, side, batch=2, seed=0, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, unet.config.in_channels, side, side, generator=generator).to(dtype)
    context = torch.randn(batch, 77, unet.config.cross_attention_dim, generator=generator).to(dtype)
    return latents, torch.tensor([0, 99] * (batch // 2)), context


@pytest.fixture(scope="module")
def sd_layout_folders(tmp_path_factory):
    """SD v1.5's UNet layout (8 heads everywhere) at small widths, with conv and with linear projections."""
    folders = {}
    for linear in (False, True):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            sample_size=8, block_out_channels=(32, 64, 64, 64), layers_per_block=2, attention_head_dim=8,
            cross_attention_dim=48, norm_num_groups=8, use_linear_projection=linear)
        folder = tmp_path_factory.mktemp(f"sd-layout-linear-{linear}")
        unet.save_pretrained(folder)
        folders[linear] = folder
    return folders


@pytest.mark.parametrize("which", ["tiny", "toy", "sd-conv", "sd-linear"])
def test_the_unet_equals_diffusers(which, tiny_model_dir, toy_model_dir, sd_layout_folders):
    folder = {"tiny": tiny_model_dir / "unet", "toy": toy_model_dir / "unet",
              "sd-conv": sd_layout_folders[False], "sd-linear": sd_layout_folders[True]}[which]
    native, reference = _pair_unet(folder)
    assert list(native.state_dict()) == list(reference.state_dict())
    assert list(native.attn_processors) == list(reference.attn_processors)
    with torch.inference_mode():
        for side in (16, 8, 12):  # 12: an odd side at the bottom, where the up path takes the skip's size
            latents, timesteps, context = _unet_inputs(native, side)
            ours = native(latents, timesteps, encoder_hidden_states=context, return_dict=False)[0]
            theirs = reference(latents, timesteps, encoder_hidden_states=context, return_dict=False)[0]
            assert ours.shape == theirs.shape
            assert (ours - theirs).abs().max().item() <= 1e-5
        assert torch.equal(native(latents, 7, context).sample, native(latents, torch.tensor(7), context).sample)


def test_bf16_is_bit_equal_to_diffusers_also_on_channels_last_input(tiny_model_dir):
    native, reference = _pair_unet(tiny_model_dir / "unet", torch.bfloat16)
    latents, timesteps, context = _unet_inputs(native, 64, dtype=torch.bfloat16)
    latents = latents.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ours = native(latents, timesteps, encoder_hidden_states=context, return_dict=False)[0]
        theirs = reference(latents, timesteps, encoder_hidden_states=context, return_dict=False)[0]
    assert torch.equal(ours, theirs)


def test_the_capture_finds_and_reads_the_same_layers(tiny_model_dir):
    native, reference = _pair_unet(tiny_model_dir / "unet")
    layers = [probe_attention_layers(unet) for unet in (native, reference)]
    assert layers[0] == layers[1]
    cross = select_layers([layer for layer in layers[0] if layer.is_cross], 64, (8, 16))
    affinity = [layer for layer in layers[0] if not layer.is_cross and layer.query_side(64) == 16][:1]
    latents, timesteps, context = _unet_inputs(native, 64)
    positions = torch.tensor([5, 5])
    states = [run_unet_capturing(unet, latents, timesteps, context, cross, positions, affinity_layers=affinity)
              for unet in (native, reference)]
    assert states[0].columns.keys() == states[1].columns.keys() == {layer.name for layer in cross}
    for name in states[0].columns:
        assert (states[0].columns[name] - states[1].columns[name]).abs().max().item() <= 1e-5
    for name in states[0].affinities:
        assert (states[0].affinities[name][0] - states[1].affinities[name][0]).abs().max().item() <= 1e-5
    assert all(type(p).__name__ == "SdpaProcessor" for p in native.attn_processors.values())  # restored


@pytest.mark.parametrize("which", ["tiny", "toy"])
def test_the_vae_encoder_equals_diffusers_and_holds_no_decoder(which, tiny_model_dir, toy_model_dir):
    folder = (tiny_model_dir if which == "tiny" else toy_model_dir) / "vae"
    native = NativeAutoencoderKL.from_folder(folder)
    reference = AutoencoderKL.from_pretrained(folder).eval()
    assert not any(name.startswith(("decoder.", "post_quant_conv.")) for name in native.state_dict())
    encoder_keys = [k for k in reference.state_dict() if k.startswith(("encoder.", "quant_conv."))]
    assert list(native.state_dict()) == encoder_keys  # diffusers' names in diffusers' order
    assert native.config.scaling_factor == reference.config.scaling_factor
    side = 64 if which == "toy" else 128
    images = torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode():
        ours, theirs = native.encode(images).latent_dist, reference.encode(images).latent_dist
        for attribute in ("mean", "std", "logvar"):
            assert (getattr(ours, attribute) - getattr(theirs, attribute)).abs().max().item() <= 1e-5
        assert (ours.var - theirs.var).abs().max().item() <= 1e-5
        drawn = [d.sample(torch.Generator().manual_seed(2)) for d in (ours, theirs)]
        assert (drawn[0] - drawn[1]).abs().max().item() <= 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_add_noise_equals_ddpm(tiny_model_dir, dtype):
    native = NoiseSchedule.from_folder(tiny_model_dir / "scheduler")
    reference = DDPMScheduler.from_pretrained(tiny_model_dir / "scheduler")
    assert torch.equal(native.alphas_cumprod, reference.alphas_cumprod)
    generator = torch.Generator().manual_seed(0)
    samples, noise = (torch.randn(4, 4, 8, 8, generator=generator).to(dtype) for _ in range(2))
    timesteps = torch.tensor([0, 99, 500, 999])
    assert torch.equal(native.add_noise(samples, noise, timesteps), reference.add_noise(samples, noise, timesteps))
    linear = NoiseSchedule(beta_schedule="linear")
    assert torch.equal(linear.alphas_cumprod, DDPMScheduler(beta_schedule="linear").alphas_cumprod)


def _copy_config(folder, tmp_path, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "diffusion_pytorch_model.safetensors").symlink_to(folder / "diffusion_pytorch_model.safetensors")
    return tmp_path


@pytest.mark.parametrize(("key", "value"), [("resnet_time_scale_shift", "scale_shift"),
                                            ("class_embed_type", "timestep"), ("upcast_attention", True),
                                            ("layers_per_block", [2, 2, 2, 2]), ("norm_num_groups", None),
                                            ("some_future_option", 1)])
def test_an_unsupported_unet_config_names_its_key(tiny_model_dir, tmp_path, key, value):
    folder = _copy_config(tiny_model_dir / "unet", tmp_path, **{key: value})
    with pytest.raises(UnsupportedCheckpoint, match=key):
        NativeUNet.from_folder(folder)


def test_unsupported_vae_and_schedule_values_name_their_key(tiny_model_dir, tmp_path):
    with pytest.raises(UnsupportedCheckpoint, match="shift_factor"):
        NativeAutoencoderKL.from_folder(_copy_config(tiny_model_dir / "vae", tmp_path, shift_factor=0.1))
    with pytest.raises(UnsupportedCheckpoint, match="squaredcos_cap_v2"):
        NoiseSchedule(beta_schedule="squaredcos_cap_v2")


def test_weights_of_another_layout_are_a_clear_error(tiny_model_dir, toy_model_dir, tmp_path):
    (tmp_path / "config.json").write_text((tiny_model_dir / "unet" / "config.json").read_text())
    (tmp_path / "diffusion_pytorch_model.safetensors").symlink_to(
        toy_model_dir / "unet" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(ModelLoadError, match="weights do not fit the config"):
        NativeUNet.from_folder(tmp_path)
    (tmp_path / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="missing"):
        NativeUNet.from_folder(tmp_path)
    (tmp_path / "diffusion_pytorch_model.bin").write_bytes(b"")
    with pytest.raises(UnsupportedCheckpoint, match="weights in diffusion_pytorch_model.bin"):  # diffusers reads it
        NativeUNet.from_folder(tmp_path)


def test_the_native_modules_run_without_importing_diffusers_or_transformers(tiny_model_dir):
    script = (
        "import sys, torch\n"
        "from genpromp_annotate.engine.native.unet import NativeUNet\n"
        "from genpromp_annotate.engine.native.vae import NativeAutoencoderKL\n"
        "from genpromp_annotate.engine.native.schedule import NoiseSchedule\n"
        f"root = {str(tiny_model_dir)!r}\n"
        "unet = NativeUNet.from_folder(root + '/unet')\n"
        "vae = NativeAutoencoderKL.from_folder(root + '/vae')\n"
        "noisy = NoiseSchedule.from_folder(root + '/scheduler').add_noise(\n"
        "    vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean, torch.zeros(1, 4, 8, 8), torch.tensor([99]))\n"
        "unet(noisy, 99, torch.zeros(1, 77, 32))\n"
        "print(sorted({'diffusers', 'transformers', 'torch._dynamo'} & set(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
