"""Test helper: write a diffusers-format SD v1 folder as one original (LDM/CompVis) checkpoint file.

The original single-file layout keeps the three models under three prefixes:

    model.diffusion_model.*          the UNet, in LDM's input_blocks / middle_block / output_blocks numbering
    first_stage_model.*              the VAE, in LDM's encoder.down.i.block.j / decoder.up.i.block.j naming
    cond_stage_model.transformer.*   the CLIP text encoder, as transformers' CLIPTextModel with `text_model.`

This is the inverse of the LDM → diffusers conversion that `from_single_file` performs, written here so that
a test can build a real original-format checkpoint from the tiny model and check that loading it gives back
exactly the folder's weights. Every diffusers key must map to exactly one LDM key: anything unmapped or
mapped twice raises, so a layout change in diffusers shows up here instead of as silently missing weights.

The UNet numbering (SD v1, `layers_per_block` = L, one downsampler after every down block but the last):

    conv_in                                  → input_blocks.0.0
    down_blocks.b.resnets.j / attentions.j   → input_blocks.{1 + b·(L+1) + j}.0 / .1
    down_blocks.b.downsamplers.0.conv        → input_blocks.{1 + b·(L+1) + L}.0.op
    mid_block.resnets.0, attentions.0, resnets.1 → middle_block.0, .1, .2
    up_blocks.b.resnets.j / attentions.j     → output_blocks.{b·(L+1) + j}.0 / .1   (j < L+1: L+1 per up block)
    up_blocks.b.upsamplers.0.conv            → output_blocks.{b·(L+1) + L}.{1, or 2 after an attention}.conv
    time_embedding.linear_1/2                → time_embed.0/2;  conv_norm_out → out.0;  conv_out → out.2

inside a ResNet: norm1 → in_layers.0, conv1 → in_layers.2, time_emb_proj → emb_layers.1, norm2 →
out_layers.0, conv2 → out_layers.3, conv_shortcut → skip_connection. Transformer blocks keep their names.

The VAE: down_blocks.i.resnets.j → down.i.block.j, downsamplers.0 → down.i.downsample; the decoder's
up_blocks are numbered in reverse (up_blocks.i → up.{n−1−i}); mid_block.resnets.k → mid.block_{k+1};
mid_block.attentions.0 → mid.attn_1 with group_norm → norm, to_q/to_k/to_v → q/k/v, to_out.0 → proj_out,
and the four projections stored as 1×1 convolutions `(C, C, 1, 1)` instead of linear `(C, C)`;
conv_shortcut → nin_shortcut; conv_norm_out → norm_out.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer."

UNET_RESNET_NAMES = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
VAE_ATTENTION_NAMES = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename_inner(inner: str, names: dict[str, str]) -> str:
    """`inner` is e.g. 'conv_shortcut.weight': rename its module part when it is one of `names`."""
    module, _, param = inner.rpartition(".")
    return f"{names.get(module, module)}.{param}"


def _unet_prefix_map(config: dict) -> list[tuple[str, str, dict[str, str] | None]]:
    """(diffusers prefix, LDM prefix, inner renames or None) for every block of an SD-v1-layout UNet."""
    per_block = config["layers_per_block"]
    n_blocks = len(config["block_out_channels"])
    rules: list[tuple[str, str, dict[str, str] | None]] = [
        ("time_embedding.linear_1.", "time_embed.0.", None),
        ("time_embedding.linear_2.", "time_embed.2.", None),
        ("conv_in.", "input_blocks.0.0.", None),
        ("conv_norm_out.", "out.0.", None),
        ("conv_out.", "out.2.", None),
        ("mid_block.resnets.0.", "middle_block.0.", UNET_RESNET_NAMES),
        ("mid_block.attentions.0.", "middle_block.1.", None),
        ("mid_block.resnets.1.", "middle_block.2.", UNET_RESNET_NAMES),
    ]
    for b in range(n_blocks):
        first = 1 + b * (per_block + 1)
        for j in range(per_block):
            rules.append((f"down_blocks.{b}.resnets.{j}.", f"input_blocks.{first + j}.0.", UNET_RESNET_NAMES))
            rules.append((f"down_blocks.{b}.attentions.{j}.", f"input_blocks.{first + j}.1.", None))
        rules.append((f"down_blocks.{b}.downsamplers.0.conv.", f"input_blocks.{first + per_block}.0.op.", None))
    for b, block_type in enumerate(config["up_block_types"]):
        first = b * (per_block + 1)
        for j in range(per_block + 1):
            rules.append((f"up_blocks.{b}.resnets.{j}.", f"output_blocks.{first + j}.0.", UNET_RESNET_NAMES))
            rules.append((f"up_blocks.{b}.attentions.{j}.", f"output_blocks.{first + j}.1.", None))
        slot = 2 if "CrossAttn" in block_type else 1
        rules.append((f"up_blocks.{b}.upsamplers.0.conv.", f"output_blocks.{first + per_block}.{slot}.conv.", None))
    return rules


def _vae_prefix_map(config: dict) -> list[tuple[str, str, dict[str, str] | None]]:
    resnet = {"conv_shortcut": "nin_shortcut"}
    n_blocks = len(config["block_out_channels"])
    rules: list[tuple[str, str, dict[str, str] | None]] = [
        ("quant_conv.", "quant_conv.", None),
        ("post_quant_conv.", "post_quant_conv.", None),
    ]
    for part in ("encoder", "decoder"):
        rules += [
            (f"{part}.conv_in.", f"{part}.conv_in.", None),
            (f"{part}.conv_out.", f"{part}.conv_out.", None),
            (f"{part}.conv_norm_out.", f"{part}.norm_out.", None),
            (f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1.", resnet),
            (f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2.", resnet),
            (f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.", VAE_ATTENTION_NAMES),
        ]
    for i in range(n_blocks):
        rules.append((f"encoder.down_blocks.{i}.downsamplers.0.conv.", f"encoder.down.{i}.downsample.conv.", None))
        rules.append((f"decoder.up_blocks.{i}.upsamplers.0.conv.", f"decoder.up.{n_blocks - 1 - i}.upsample.conv.", None))
        for j in range(config["layers_per_block"] + 1):  # the decoder has one more resnet per block
            rules.append((f"encoder.down_blocks.{i}.resnets.{j}.", f"encoder.down.{i}.block.{j}.", resnet))
            rules.append((f"decoder.up_blocks.{i}.resnets.{j}.", f"decoder.up.{n_blocks - 1 - i}.block.{j}.", resnet))
    return rules


def _convert(state: dict[str, torch.Tensor], rules, out_prefix: str, what: str) -> dict[str, torch.Tensor]:
    """Rename every key of `state` by the longest matching rule; raise on unmapped or duplicate keys."""
    rules = sorted(rules, key=lambda rule: len(rule[0]), reverse=True)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        match = next((rule for rule in rules if key.startswith(rule[0])), None)
        if match is None:
            raise KeyError(f"{what}: no LDM name for diffusers key {key!r}")
        source, target, inner_names = match
        inner = key[len(source):]
        new_key = out_prefix + target + (_rename_inner(inner, inner_names) if inner_names else inner)
        if new_key in out:
            raise KeyError(f"{what}: two diffusers keys map to {new_key!r}")
        out[new_key] = tensor
    return out


def _vae_attention_to_conv(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """LDM's VAE attention projections are 1×1 convolutions: linear (C, C) → (C, C, 1, 1)."""
    projections = tuple(f".mid.attn_1.{name}.weight" for name in ("q", "k", "v", "proj_out"))
    return {k: (v[:, :, None, None] if k.endswith(projections) and v.ndim == 2 else v) for k, v in state.items()}


def ldm_state_dict(diffusers_folder: str | Path) -> dict[str, torch.Tensor]:
    """All UNet, VAE and text-encoder weights of a diffusers SD v1 folder under their LDM single-file names."""
    folder = Path(diffusers_folder)
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    vae_config = json.loads((folder / "vae" / "config.json").read_text())
    unet = load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")
    vae = load_file(folder / "vae" / "diffusion_pytorch_model.safetensors")
    text = load_file(folder / "text_encoder" / "model.safetensors")

    out = _convert(unet, _unet_prefix_map(unet_config), UNET_PREFIX, "unet")
    out.update(_vae_attention_to_conv(_convert(vae, _vae_prefix_map(vae_config), VAE_PREFIX, "vae")))
    # Original checkpoints hold transformers' CLIPTextModel state dict, whose keys start with `text_model.`
    # (newer transformers save the text model flattened, without that level).
    out.update({TEXT_PREFIX + (k if k.startswith("text_model.") else f"text_model.{k}"): v for k, v in text.items()})
    if len(out) != len(unet) + len(vae) + len(text):
        raise KeyError("the UNet, VAE and text encoder share an LDM key")
    return out


def write_ldm_checkpoint(diffusers_folder: str | Path, out_file: str | Path) -> Path:
    """Write `diffusers_folder` as one LDM-layout checkpoint: `.safetensors`, or `.ckpt` ({"state_dict": ...})."""
    out_file = Path(out_file)
    state = {k: v.contiguous() for k, v in ldm_state_dict(diffusers_folder).items()}
    if out_file.suffix == ".safetensors":
        save_file(state, str(out_file))
    elif out_file.suffix == ".ckpt":
        torch.save({"state_dict": state}, out_file)
    else:
        raise ValueError(f"{out_file}: write .safetensors or .ckpt")
    return out_file
