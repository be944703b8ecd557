"""SD v1's UNet (diffusers' `UNet2DConditionModel` layout) in plain torch, for inference.

The state dict and every module name are diffusers' own, so `diffusion_pytorch_model.safetensors` loads
key for key and `engine.capture` finds the same attention layers. Only the configs SD v1.x and this
project's small models use are implemented; any other value raises UnsupportedCheckpoint (see `ACCEPTED`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from genpromp_annotate.engine.native.attention import Attention, Transformer2DModel
from genpromp_annotate.engine.native.config import ModuleConfig, checked_config, read_config
from genpromp_annotate.engine.native.errors import UnsupportedCheckpoint
from genpromp_annotate.engine.native.layers import (
    Downsample2D,
    ResnetBlock2D,
    TimestepEmbedding,
    Timesteps,
    Upsample2D,
)
from genpromp_annotate.engine.native.uninitialised import Conv2d, GroupNorm
from genpromp_annotate.engine.native.weights import load_strict, read_tensors

WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"


def _positive_ints(value: Any) -> bool:
    values = value if isinstance(value, list) else [value]
    return all(isinstance(v, int) and v > 0 for v in values)


# Values that change nothing here (or that SD v1 always has); any other value of these keys is refused.
ACCEPTED: dict[str, Any] = {
    "act_fn": frozenset({"silu"}),
    "addition_embed_type": frozenset({None}),
    "addition_time_embed_dim": frozenset({None}),
    "attention_type": frozenset({"default"}),
    "center_input_sample": frozenset({False}),
    "class_embed_type": frozenset({None}),
    "class_embeddings_concat": frozenset({False}),
    "conv_in_kernel": frozenset({3}),
    "conv_out_kernel": frozenset({3}),
    "cross_attention_norm": frozenset({None}),
    "down_block_types": lambda v: all(t in ("CrossAttnDownBlock2D", "DownBlock2D") for t in v),
    "dropout": frozenset({0.0}),
    "dual_cross_attention": frozenset({False}),
    "encoder_hid_dim": frozenset({None}),
    "encoder_hid_dim_type": frozenset({None}),
    "mid_block_only_cross_attention": frozenset({None, False}),
    "mid_block_type": frozenset({"UNetMidBlock2DCrossAttn"}),
    "num_attention_heads": frozenset({None}),  # diffusers refuses it too: `attention_head_dim` is the head count
    "num_class_embeds": frozenset({None}),
    "only_cross_attention": frozenset({False}),
    "projection_class_embeddings_input_dim": frozenset({None}),
    "resnet_out_scale_factor": frozenset({1.0}),
    "resnet_skip_time_act": frozenset({False}),
    "resnet_time_scale_shift": frozenset({"default"}),
    "reverse_transformer_layers_per_block": frozenset({None}),
    "time_cond_proj_dim": frozenset({None}),
    "time_embedding_act_fn": frozenset({None}),
    "time_embedding_dim": frozenset({None}),
    "time_embedding_type": frozenset({"positional"}),
    "timestep_post_act": frozenset({None}),
    "transformer_layers_per_block": frozenset({1}),
    "up_block_types": lambda v: all(t in ("CrossAttnUpBlock2D", "UpBlock2D") for t in v),
    "upcast_attention": frozenset({False, None}),  # True changes fp16/bf16 arithmetic: diffusers does it
    "use_linear_projection": frozenset({False, True}),
    "attention_head_dim": _positive_ints,
    "block_out_channels": _positive_ints,
    "cross_attention_dim": lambda v: isinstance(v, int) and v > 0,
    # diffusers also takes a per-block list of layers; not implemented here (a TypeError would skip the fallback)
    "layers_per_block": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
    "norm_num_groups": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
    "addition_embed_type_num_heads": lambda v: True,  # read only with an addition embedding (refused above)
    "sample_size": lambda v: True,  # a default for pipelines; the forward takes any latent side
}

DEFAULTS: dict[str, Any] = {
    "sample_size": None, "in_channels": 4, "out_channels": 4, "flip_sin_to_cos": True, "freq_shift": 0,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"], "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, "only_cross_attention": False,
    "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "downsample_padding": 1,
    "mid_block_scale_factor": 1.0, "dropout": 0.0, "act_fn": "silu", "norm_num_groups": 32, "norm_eps": 1e-5,
    "cross_attention_dim": 1280, "transformer_layers_per_block": 1, "attention_head_dim": 8,
    "num_attention_heads": None, "use_linear_projection": False, "upcast_attention": False,
    "resnet_time_scale_shift": "default",
}


class CrossAttnDownBlock2D(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, temb: int, layers: int, heads: int, cfg: ModuleConfig,
                 add_downsample: bool) -> None:
        super().__init__()
        groups, eps = cfg.norm_num_groups, cfg.norm_eps
        # registered before the ResNets, as diffusers does, so named_modules() runs in the same order
        self.attentions = nn.ModuleList([
            Transformer2DModel(heads, out_channels // heads, out_channels, cfg.cross_attention_dim, groups,
                               cfg.use_linear_projection) for _ in range(layers)])
        self.resnets = nn.ModuleList([ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, temb,
                                                    groups, eps) for i in range(layers)])
        self.downsamplers = nn.ModuleList([Downsample2D(out_channels, cfg.downsample_padding)]) if add_downsample else None

    def forward(self, hidden: torch.Tensor, temb: torch.Tensor, context: torch.Tensor
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        outputs: tuple[torch.Tensor, ...] = ()
        for resnet, attention in zip(self.resnets, self.attentions):
            hidden = attention(resnet(hidden, temb), context)
            outputs += (hidden,)
        if self.downsamplers is not None:
            hidden = self.downsamplers[0](hidden)
            outputs += (hidden,)
        return hidden, outputs


class DownBlock2D(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, temb: int, layers: int, cfg: ModuleConfig,
                 add_downsample: bool) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([ResnetBlock2D(in_channels if i == 0 else out_channels, out_channels, temb,
                                                    cfg.norm_num_groups, cfg.norm_eps) for i in range(layers)])
        self.downsamplers = nn.ModuleList([Downsample2D(out_channels, cfg.downsample_padding)]) if add_downsample else None

    def forward(self, hidden: torch.Tensor, temb: torch.Tensor, context: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        outputs: tuple[torch.Tensor, ...] = ()
        for resnet in self.resnets:
            hidden = resnet(hidden, temb)
            outputs += (hidden,)
        if self.downsamplers is not None:
            hidden = self.downsamplers[0](hidden)
            outputs += (hidden,)
        return hidden, outputs


class UNetMidBlock2DCrossAttn(nn.Module):
    def __init__(self, channels: int, temb: int, heads: int, cfg: ModuleConfig) -> None:
        super().__init__()
        groups, eps, scale = cfg.norm_num_groups, cfg.norm_eps, cfg.mid_block_scale_factor
        self.attentions = nn.ModuleList([Transformer2DModel(heads, channels // heads, channels,
                                                            cfg.cross_attention_dim, groups, cfg.use_linear_projection)])
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, channels, temb, groups, eps, scale) for _ in range(2)])

    def forward(self, hidden: torch.Tensor, temb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        hidden = self.resnets[0](hidden, temb)
        return self.resnets[1](self.attentions[0](hidden, context), temb)


class UpBlock2D(nn.Module):
    """ResNets over the input concatenated with the matching down-path outputs (last first), then upsampling."""

    def __init__(self, in_channels: int, prev_channels: int, out_channels: int, temb: int, layers: int,
                 cfg: ModuleConfig, add_upsample: bool) -> None:
        super().__init__()
        self._add_resnets(in_channels, prev_channels, out_channels, temb, layers, cfg, add_upsample)

    def _add_resnets(self, in_channels: int, prev_channels: int, out_channels: int, temb: int, layers: int,
                     cfg: ModuleConfig, add_upsample: bool) -> None:
        self.resnets = nn.ModuleList([
            ResnetBlock2D((prev_channels if i == 0 else out_channels) + (in_channels if i == layers - 1 else out_channels),
                          out_channels, temb, cfg.norm_num_groups, cfg.norm_eps) for i in range(layers)])
        self.upsamplers = nn.ModuleList([Upsample2D(out_channels)]) if add_upsample else None

    def _step(self, i: int, hidden: torch.Tensor, skip: torch.Tensor, temb: torch.Tensor,
              context: torch.Tensor | None) -> torch.Tensor:
        return self.resnets[i](torch.cat([hidden, skip], dim=1), temb)

    def forward(self, hidden: torch.Tensor, skips: tuple[torch.Tensor, ...], temb: torch.Tensor,
                context: torch.Tensor | None = None, upsample_size: tuple[int, int] | None = None) -> torch.Tensor:
        for i in range(len(self.resnets)):
            hidden = self._step(i, hidden, skips[-1 - i], temb, context)
        if self.upsamplers is not None:
            hidden = self.upsamplers[0](hidden, upsample_size)
        return hidden


class CrossAttnUpBlock2D(UpBlock2D):
    def __init__(self, in_channels: int, prev_channels: int, out_channels: int, temb: int, layers: int, heads: int,
                 cfg: ModuleConfig, add_upsample: bool) -> None:
        nn.Module.__init__(self)
        self.attentions = nn.ModuleList([  # before the ResNets, as in diffusers
            Transformer2DModel(heads, out_channels // heads, out_channels, cfg.cross_attention_dim,
                               cfg.norm_num_groups, cfg.use_linear_projection) for _ in range(layers)])
        self._add_resnets(in_channels, prev_channels, out_channels, temb, layers, cfg, add_upsample)

    def _step(self, i: int, hidden: torch.Tensor, skip: torch.Tensor, temb: torch.Tensor,
              context: torch.Tensor | None) -> torch.Tensor:
        return self.attentions[i](super()._step(i, hidden, skip, temb, context), context)


class UNetOutput:
    """`.sample`, as diffusers' output object."""

    def __init__(self, sample: torch.Tensor) -> None:
        self.sample = sample


class NativeUNet(nn.Module):
    """The conditional UNet of SD v1: time embedding, down path, mid block, up path, output conv."""

    def __init__(self, config: ModuleConfig) -> None:
        super().__init__()
        self.config = config
        channels = list(config.block_out_channels)
        n_blocks = len(channels)
        if len(config.down_block_types) != n_blocks or len(config.up_block_types) != n_blocks:
            raise UnsupportedCheckpoint("down/up block types and block_out_channels differ in length")
        heads = config.attention_head_dim
        heads = list(heads) if isinstance(heads, list) else [heads] * n_blocks
        temb = channels[0] * 4
        self.conv_in = Conv2d(config.in_channels, channels[0], 3, padding=1)
        self.time_proj = Timesteps(channels[0], config.flip_sin_to_cos, config.freq_shift)
        self.time_embedding = TimestepEmbedding(channels[0], temb)
        self.down_blocks = nn.ModuleList()
        self.up_blocks = nn.ModuleList()  # registered here, filled below: diffusers' module order
        for i, kind in enumerate(config.down_block_types):
            in_ch, out_ch, last = channels[max(i - 1, 0)], channels[i], i == n_blocks - 1
            if kind == "CrossAttnDownBlock2D":
                self.down_blocks.append(CrossAttnDownBlock2D(in_ch, out_ch, temb, config.layers_per_block, heads[i],
                                                             config, not last))
            else:
                self.down_blocks.append(DownBlock2D(in_ch, out_ch, temb, config.layers_per_block, config, not last))
        self.mid_block = UNetMidBlock2DCrossAttn(channels[-1], temb, heads[-1], config)
        reversed_channels, reversed_heads = channels[::-1], heads[::-1]
        for i, kind in enumerate(config.up_block_types):
            prev_ch, out_ch = reversed_channels[max(i - 1, 0)], reversed_channels[i]
            in_ch, last = reversed_channels[min(i + 1, n_blocks - 1)], i == n_blocks - 1
            layers = config.layers_per_block + 1
            if kind == "CrossAttnUpBlock2D":
                self.up_blocks.append(CrossAttnUpBlock2D(in_ch, prev_ch, out_ch, temb, layers, reversed_heads[i],
                                                         config, not last))
            else:
                self.up_blocks.append(UpBlock2D(in_ch, prev_ch, out_ch, temb, layers, config, not last))
        self.conv_norm_out = GroupNorm(config.norm_num_groups, channels[0], eps=config.norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = Conv2d(channels[0], config.out_channels, 3, padding=1)

    @classmethod
    def from_folder(cls, folder: str | Path, dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu") -> NativeUNet:
        """`config.json` + `diffusion_pytorch_model.safetensors` of a diffusers UNet folder."""
        folder = Path(folder)
        config = checked_config(read_config(folder / "config.json"), DEFAULTS, ACCEPTED, str(folder / "config.json"))
        unet = cls(config)  # uninitialised layers: every tensor comes from the file
        load_strict(unet, read_tensors(folder / WEIGHTS_FILE), folder / WEIGHTS_FILE)
        return unet.to(device=device, dtype=dtype).eval()

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv_in.weight.device

    # ---- attention processors, as diffusers names them ---------------------------------------------------
    def _attention_modules(self) -> dict[str, Attention]:
        return {name: module for name, module in self.named_modules() if isinstance(module, Attention)}

    @property
    def attn_processors(self) -> dict[str, Any]:
        """`<module name>.processor` → processor, for every attention layer."""
        return {f"{name}.processor": module.processor for name, module in self._attention_modules().items()}

    def set_attn_processor(self, processor: Any) -> None:
        """One processor for every layer, or a dict keyed as `attn_processors` holding every layer."""
        modules = self._attention_modules()
        if isinstance(processor, dict):
            if len(processor) != len(modules):
                raise ValueError(f"{len(processor)} processors given for {len(modules)} attention layers")
            for name, module in modules.items():
                module.processor = processor[f"{name}.processor"]
        else:
            for module in modules.values():
                module.processor = processor

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float, encoder_hidden_states: torch.Tensor,
                return_dict: bool = True) -> UNetOutput | tuple[torch.Tensor]:
        timesteps = torch.as_tensor(timestep, device=sample.device)
        if timesteps.ndim == 0:
            timesteps = timesteps[None]
        timesteps = timesteps.expand(sample.shape[0])
        temb = self.time_embedding(self.time_proj(timesteps).to(dtype=sample.dtype))
        # odd latent sides: upsample to each skip connection's size, not by 2
        factor = 2 ** sum(block.upsamplers is not None for block in self.up_blocks)
        forward_size = any(side % factor != 0 for side in sample.shape[-2:])
        hidden = self.conv_in(sample)
        skips: tuple[torch.Tensor, ...] = (hidden,)
        for down in self.down_blocks:
            hidden, outputs = down(hidden, temb, encoder_hidden_states)
            skips += outputs
        hidden = self.mid_block(hidden, temb, encoder_hidden_states)
        for i, up in enumerate(self.up_blocks):
            used = len(cast(UpBlock2D, up).resnets)  # each ResNet takes one skip connection, last first
            taken, skips = skips[-used:], skips[:-used]
            size = tuple(skips[-1].shape[2:]) if forward_size and i < len(self.up_blocks) - 1 else None
            hidden = up(hidden, taken, temb, encoder_hidden_states, size)
        hidden = self.conv_out(self.conv_act(self.conv_norm_out(hidden)))
        return UNetOutput(hidden) if return_dict else (hidden,)
