"""The convolutional pieces of SD v1's UNet and VAE, named as in diffusers so checkpoints load key for key."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genpromp_annotate.engine.native.uninitialised import Conv2d, GroupNorm, Linear


class ResnetBlock2D(nn.Module):
    """GroupNorm → SiLU → conv, plus the projected time embedding (UNet only), twice; 1×1 shortcut when the
    width changes; `(x + h) / output_scale_factor`."""

    def __init__(self, in_channels: int, out_channels: int, temb_channels: int | None, groups: int, eps: float,
                 output_scale_factor: float = 1.0) -> None:
        super().__init__()
        self.norm1 = GroupNorm(groups, in_channels, eps=eps, affine=True)
        self.conv1 = Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_emb_proj = Linear(temb_channels, out_channels) if temb_channels else None
        self.norm2 = GroupNorm(groups, out_channels, eps=eps, affine=True)
        self.dropout = nn.Dropout(0.0)
        self.conv2 = Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        self.output_scale_factor = output_scale_factor

    def forward(self, input_tensor: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.conv1(F.silu(self.norm1(input_tensor)))
        if self.time_emb_proj is not None and temb is not None:
            hidden = hidden + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        hidden = self.conv2(self.dropout(F.silu(self.norm2(hidden))))
        if self.conv_shortcut is not None:  # no .contiguous(): a channels-last input stays channels-last
            input_tensor = self.conv_shortcut(input_tensor)
        return (input_tensor + hidden) / self.output_scale_factor


class Downsample2D(nn.Module):
    """Stride-2 3×3 conv; with padding 0 (the VAE) the input is first padded by one on the right and bottom."""

    def __init__(self, channels: int, padding: int) -> None:
        super().__init__()
        self.padding = padding
        self.conv = Conv2d(channels, channels, 3, stride=2, padding=padding)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.padding == 0:
            hidden = F.pad(hidden, (0, 1, 0, 1), mode="constant", value=0)
        return self.conv(hidden)


class Upsample2D(nn.Module):
    """Nearest 2× (or to the skip connection's size when the latent side is odd), then a 3×3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, padding=1)

    def forward(self, hidden: torch.Tensor, output_size: tuple[int, int] | None = None) -> torch.Tensor:
        if hidden.shape[0] >= 64:
            hidden = hidden.contiguous()  # nearest upsampling of large non-contiguous batches fails on CUDA
        if output_size is None:
            hidden = F.interpolate(hidden, scale_factor=2.0, mode="nearest")
        else:
            hidden = F.interpolate(hidden, size=output_size, mode="nearest")
        return self.conv(hidden)


class Timesteps(nn.Module):
    """Sinusoidal timestep features (DDPM's), `cos, sin` order with `flip_sin_to_cos`."""

    def __init__(self, channels: int, flip_sin_to_cos: bool, downscale_freq_shift: float) -> None:
        super().__init__()
        self.channels = channels
        self.flip_sin_to_cos = flip_sin_to_cos
        self.downscale_freq_shift = downscale_freq_shift

    def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
        half = self.channels // 2
        exponent = -math.log(10000) * torch.arange(half, dtype=torch.float32, device=timesteps.device)
        frequencies = torch.exp(exponent / (half - self.downscale_freq_shift))
        angles = timesteps[:, None].float() * frequencies[None, :]
        features = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
        if self.flip_sin_to_cos:
            features = torch.cat([features[:, half:], features[:, :half]], dim=-1)
        if self.channels % 2 == 1:
            features = F.pad(features, (0, 1, 0, 0))
        return features


class TimestepEmbedding(nn.Module):
    """Linear → SiLU → linear over the timestep features."""

    def __init__(self, in_channels: int, time_embed_dim: int) -> None:
        super().__init__()
        self.linear_1 = Linear(in_channels, time_embed_dim)
        self.act = nn.SiLU()
        self.linear_2 = Linear(time_embed_dim, time_embed_dim)

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(sample)))
