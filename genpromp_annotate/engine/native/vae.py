"""The encoder half of SD v1's VAE (diffusers' `AutoencoderKL` layout): image → latent distribution.

Only `encoder.*` and `quant_conv.*` are read from the checkpoint; the decoder is never needed to localize.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from genpromp_annotate.engine.native.attention import Attention
from genpromp_annotate.engine.native.config import ModuleConfig, checked_config, read_config
from genpromp_annotate.engine.native.layers import Downsample2D, ResnetBlock2D
from genpromp_annotate.engine.native.unet import _positive_ints
from genpromp_annotate.engine.native.uninitialised import Conv2d, GroupNorm
from genpromp_annotate.engine.native.weights import load_strict, read_tensors

WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
EPS = 1e-6  # the VAE's norms use 1e-6 whatever the config says

ACCEPTED: dict[str, Any] = {
    "act_fn": frozenset({"silu"}),
    "down_block_types": lambda v: all(t == "DownEncoderBlock2D" for t in v),
    "up_block_types": lambda v: True,  # the decoder is not built
    "block_out_channels": _positive_ints,
    "latents_mean": frozenset({None}),
    "latents_std": frozenset({None}),
    "shift_factor": frozenset({None}),
    "mid_block_add_attention": frozenset({True, False}),
    "use_quant_conv": frozenset({True, False}),
    "use_post_quant_conv": lambda v: True,  # decoder side
    "force_upcast": lambda v: True,  # a decoding precaution; encoding runs in the model's dtype
    "scaling_factor": lambda v: isinstance(v, (int, float)),
}

DEFAULTS: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D"], "block_out_channels": [64], "layers_per_block": 1, "act_fn": "silu",
    "latent_channels": 4, "norm_num_groups": 32, "sample_size": 32, "scaling_factor": 0.18215,
    "shift_factor": None, "latents_mean": None, "latents_std": None, "force_upcast": True,
    "use_quant_conv": True, "use_post_quant_conv": True, "mid_block_add_attention": True,
}


class DownEncoderBlock2D(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, layers: int, groups: int, add_downsample: bool) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, None,
                                                    groups, EPS) for i in range(layers)])
        self.downsamplers = nn.ModuleList([Downsample2D(out_channels, padding=0)]) if add_downsample else None

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            hidden = resnet(hidden)
        if self.downsamplers is not None:
            hidden = self.downsamplers[0](hidden)
        return hidden


class UNetMidBlock2D(nn.Module):
    """ResNet, single-head self-attention over all positions (optional), ResNet."""

    def __init__(self, channels: int, groups: int, add_attention: bool) -> None:
        super().__init__()
        attention = Attention(channels, heads=1, dim_head=channels, bias=True, group_norm_groups=groups, eps=EPS,
                              residual_connection=True)
        self.attentions = nn.ModuleList([attention]) if add_attention else None  # before the ResNets, as diffusers
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, channels, None, groups, EPS) for _ in range(2)])

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = self.resnets[0](hidden)
        if self.attentions is not None:
            hidden = self.attentions[0](hidden)
        return self.resnets[1](hidden)


class Encoder(nn.Module):
    def __init__(self, config: ModuleConfig) -> None:
        super().__init__()
        channels, groups = list(config.block_out_channels), config.norm_num_groups
        self.conv_in = Conv2d(config.in_channels, channels[0], 3, padding=1)
        self.down_blocks = nn.ModuleList([
            DownEncoderBlock2D(channels[max(i - 1, 0)], channels[i], config.layers_per_block, groups,
                               add_downsample=i < len(channels) - 1) for i in range(len(channels))])
        self.mid_block = UNetMidBlock2D(channels[-1], groups, config.mid_block_add_attention)
        self.conv_norm_out = GroupNorm(groups, channels[-1], eps=EPS)
        self.conv_act = nn.SiLU()
        self.conv_out = Conv2d(channels[-1], 2 * config.latent_channels, 3, padding=1)

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        hidden = self.conv_in(sample)
        for block in self.down_blocks:
            hidden = block(hidden)
        hidden = self.mid_block(hidden)
        return self.conv_out(self.conv_act(self.conv_norm_out(hidden)))


class DiagonalGaussian:
    """The encoder's posterior: mean and log-variance (clamped to [−30, 20]) from the moments."""

    def __init__(self, moments: torch.Tensor) -> None:
        self.mean, logvar = torch.chunk(moments, 2, dim=1)
        self.logvar = torch.clamp(logvar, -30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        device = generator.device if generator is not None else self.mean.device
        noise = torch.randn(self.mean.shape, generator=generator, device=device, dtype=self.mean.dtype)
        return self.mean + self.std * noise.to(self.mean.device)

    def mode(self) -> torch.Tensor:
        return self.mean


class EncoderOutput:
    """`.latent_dist`, as diffusers' output object."""

    def __init__(self, latent_dist: DiagonalGaussian) -> None:
        self.latent_dist = latent_dist


class NativeAutoencoderKL(nn.Module):
    """`encoder` (+ `quant_conv`) of the VAE; `encode(x).latent_dist` as diffusers'."""

    def __init__(self, config: ModuleConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        latent = 2 * config.latent_channels
        self.quant_conv = Conv2d(latent, latent, 1) if config.use_quant_conv else None

    @classmethod
    def from_folder(cls, folder: str | Path, dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu") -> NativeAutoencoderKL:
        folder = Path(folder)
        config = checked_config(read_config(folder / "config.json"), DEFAULTS, ACCEPTED, str(folder / "config.json"))
        vae = cls(config)  # uninitialised layers: every tensor comes from the file
        tensors = read_tensors(folder / WEIGHTS_FILE, prefixes=("encoder.", "quant_conv."))
        load_strict(vae, tensors, folder / WEIGHTS_FILE)
        return vae.to(device=device, dtype=dtype).eval()

    def encode(self, sample: torch.Tensor) -> EncoderOutput:
        moments = self.encoder(sample)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        return EncoderOutput(DiagonalGaussian(moments))
