"""Cross-attention capture: keep only the category token's column, on the selected layers only.

Layers are chosen by the spatial size of their query (method §4 step 5), found once per UNet by a probe
forward at a small latent, so other SD layouts and input sizes work without a hard-coded name list.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from genpromp_annotate.errors import ConfigError


class EarlyExit(Exception):
    """Raised by the last needed capture processor: nothing after it in the UNet is needed."""


@dataclass(frozen=True)
class AttentionLayer:
    """One cross-attention layer: processor name, UNet part, query side at a latent side, run order."""

    name: str  # e.g. "mid_block.attentions.0.transformer_blocks.0.attn2.processor"
    part: str  # "down" | "mid" | "up"
    query_ratio: float  # query side / latent side (1, 1/2, 1/4, 1/8 in SD v1)
    order: int  # position in the forward pass

    def query_side(self, latent_side: int) -> int:
        return round(latent_side * self.query_ratio)

    @property
    def is_cross(self) -> bool:
        return self.name.split(".")[-2] == "attn2"


def _part_of(name: str) -> str:
    for part in ("down", "mid", "up"):
        if name.startswith(f"{part}_block"):
            return part
    return "other"


def probe_cross_attention_layers(unet, probe_side: int | None = None) -> list[AttentionLayer]:
    """Every cross-attention (attn2) layer of `unet` with its query ratio, in execution order."""
    layers = [layer for layer in probe_attention_layers(unet, probe_side) if layer.is_cross]
    if not layers:
        raise ConfigError("the UNet has no cross-attention (attn2) layers")
    return layers


@torch.inference_mode()
def probe_attention_layers(unet, probe_side: int | None = None) -> list[AttentionLayer]:
    """Every attention layer (attn1 and attn2) of `unet` with its query ratio, in execution order.

    Runs the UNet once on a `(1, C, s, s)` latent with s = 2^(down blocks − 1): cheap, and enough for
    the smallest level to be 1×1.
    """
    modules = {name: module for name, module in unet.named_modules() if name.endswith(("attn1", "attn2"))}
    if not modules:
        raise ConfigError("the UNet has no attention layers")
    side = probe_side or 2 ** (len(unet.config.block_out_channels) - 1)
    seen: dict[str, tuple[int, int]] = {}
    handles = []
    for name, module in modules.items():
        def hook(_module, args, kwargs, name=name):
            hidden = args[0] if args else kwargs["hidden_states"]
            tokens = hidden.shape[1] if hidden.dim() == 3 else hidden.shape[2] * hidden.shape[3]
            seen.setdefault(name, (tokens, len(seen)))
        handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        param = next(unet.parameters())
        latent = torch.zeros(1, unet.config.in_channels, side, side, device=param.device, dtype=param.dtype)
        context = torch.zeros(1, 77, unet.config.cross_attention_dim, device=param.device, dtype=param.dtype)
        unet(latent, torch.tensor([0], device=param.device), encoder_hidden_states=context)
    finally:
        for handle in handles:
            handle.remove()
    layers = []
    for name, (tokens, order) in seen.items():
        query_side = math.isqrt(tokens)
        layers.append(AttentionLayer(f"{name}.processor", _part_of(name), query_side / side, order))
    return sorted(layers, key=lambda layer: layer.order)


def select_layers(layers: list[AttentionLayer], latent_side: int, resolutions: tuple[int, ...]) -> list[AttentionLayer]:
    """The layers whose query is `r×r` for some r in `resolutions` (8 and 16 in the paper)."""
    chosen = [layer for layer in layers if layer.query_side(latent_side) in resolutions]
    found = {layer.query_side(latent_side) for layer in chosen}
    missing = sorted(set(resolutions) - found)
    if missing:
        available = sorted({layer.query_side(latent_side) for layer in layers})
        raise ConfigError(f"no cross-attention layer runs at {missing} for latent {latent_side}; available: {available}")
    return chosen


@dataclass
class CaptureState:
    """Per-forward inputs and outputs shared by the capture processors."""

    token_positions: torch.Tensor | None = None  # (batch,) long: the column to keep per sample
    columns: dict[str, torch.Tensor] = field(default_factory=dict)  # name → (batch, heads, N) float32
    # self-attention name → (query, key, scale), each (batch, heads, N, d): the affinity softmax(QKᵀ·scale)
    affinities: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = field(default_factory=dict)


@dataclass
class _Heads:
    """An attention layer's inputs as heads: `(batch, heads, tokens, head_dim)` query, key and value, and what
    `_attention_output` needs to give the layer's usual output."""

    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    residual: torch.Tensor
    shape_4d: tuple[int, int, int, int] | None  # (batch, channels, height, width) of a 4-D input


def _heads(attn, hidden_states, context, temb) -> _Heads:
    """diffusers' attention prologue: norms, projections, split into heads (`context` None = self-attention)."""
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    shape_4d = None
    if hidden_states.ndim == 4:
        shape_4d = tuple(hidden_states.shape)
        batch, channels, height, width = shape_4d
        hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
    batch = hidden_states.shape[0]
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    if context is None:
        context = hidden_states
    elif attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    query, key, value = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
    head_dim = key.shape[-1] // attn.heads
    query, key, value = (t.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for t in (query, key, value))
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    return _Heads(query, key, value, residual, shape_4d)


def _attention_mask(attn, attention_mask, heads: _Heads) -> torch.Tensor | None:
    if attention_mask is None:
        return None
    batch = heads.query.shape[0]
    mask = attn.prepare_attention_mask(attention_mask, heads.key.shape[2], batch)
    return mask.view(batch, attn.heads, -1, mask.shape[-1])


def _attention_output(attn, heads: _Heads, mixed: torch.Tensor) -> torch.Tensor:
    """diffusers' attention epilogue: `(batch, heads, tokens, head_dim)` → the layer's output."""
    batch, n_heads, _, head_dim = mixed.shape
    hidden_states = mixed.transpose(1, 2).reshape(batch, -1, n_heads * head_dim).to(heads.query.dtype)
    hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
    if heads.shape_4d is not None:
        hidden_states = hidden_states.transpose(-1, -2).reshape(*heads.shape_4d)
    if attn.residual_connection:
        hidden_states = hidden_states + heads.residual
    return hidden_states / attn.rescale_output_factor


class ColumnCaptureProcessor:
    """Cross-attention that also records softmax(QKᵀ/√d) (fp32) for one text token per sample.

    Only `(batch, heads, N)` is kept, never the `(batch, heads, N, 77)` tensor. With `stop_after` set,
    the processor raises EarlyExit right after recording: the layer's output is never used.
    """

    def __init__(self, name: str, state: CaptureState, stop_after: bool = False) -> None:
        self.name = name
        self.state = state
        self.stop_after = stop_after

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        if encoder_hidden_states is None:
            raise ConfigError(f"{self.name} is a self-attention layer; only cross-attention is captured")
        heads = _heads(attn, hidden_states, encoder_hidden_states, temb)
        # fp32 softmax: bf16/fp16 logits would quantise the small probabilities the maps are made of.
        logits = torch.matmul(heads.query.float(), heads.key.float().transpose(-1, -2)) * attn.scale  # (B, H, N, 77)
        mask = _attention_mask(attn, attention_mask, heads)
        if mask is not None:
            logits = logits + mask.float()
        probs = logits.softmax(dim=-1)
        positions = self.state.token_positions
        if positions is None:
            raise ConfigError("capture processor called without token positions")
        batch = probs.shape[0]
        index = positions.to(probs.device).view(batch, 1, 1, 1).expand(batch, attn.heads, probs.shape[2], 1)
        self.state.columns[self.name] = probs.gather(-1, index).squeeze(-1)  # (B, H, N)
        if self.stop_after:
            raise EarlyExit(self.name)
        return _attention_output(attn, heads, torch.matmul(probs.to(heads.value.dtype), heads.value))


class AffinityCaptureProcessor:
    """Self-attention as usual (SDPA), also keeping its queries and keys: the affinity of every pair of
    positions, without the `(N, N)` matrix (method.md §9, self-attention propagation)."""

    def __init__(self, name: str, state: CaptureState, stop_after: bool = False) -> None:
        self.name = name
        self.state = state
        self.stop_after = stop_after

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        heads = _heads(attn, hidden_states, encoder_hidden_states, temb)
        self.state.affinities[self.name] = (heads.query, heads.key, float(attn.scale))
        if self.stop_after:
            raise EarlyExit(self.name)
        mixed = F.scaled_dot_product_attention(heads.query, heads.key, heads.value,
                                               attn_mask=_attention_mask(attn, attention_mask, heads), scale=attn.scale)
        return _attention_output(attn, heads, mixed)


@contextlib.contextmanager
def capture_columns(unet, layers: list[AttentionLayer], state: CaptureState, early_exit: bool = True,
                    affinity_layers: Sequence[AttentionLayer] = ()) -> Iterator[None]:
    """Install capture processors on `layers` (cross-attention columns) and `affinity_layers`
    (self-attention queries and keys) only, others untouched; restore the originals on exit."""
    original = dict(unet.attn_processors)
    last = max([*layers, *affinity_layers], key=lambda layer: layer.order).name
    replaced = dict(original)
    for layer in [*layers, *affinity_layers]:
        if layer.name not in replaced:
            raise ConfigError(f"the UNet has no attention processor {layer.name}")
        kind = ColumnCaptureProcessor if layer.is_cross else AffinityCaptureProcessor
        replaced[layer.name] = kind(layer.name, state, stop_after=early_exit and layer.name == last)
    unet.set_attn_processor(replaced)
    try:
        yield
    finally:
        unet.set_attn_processor(original)


def run_unet_capturing(unet, latents: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                       layers: list[AttentionLayer], token_positions: torch.Tensor,
                       early_exit: bool = True, affinity_layers: Sequence[AttentionLayer] = (),
                       ) -> CaptureState:
    """One UNet forward that captures the category columns of `layers` (name → (batch, heads, N) fp32)
    and the queries and keys of `affinity_layers` (see CaptureState).

    With `early_exit`, the forward stops inside the last needed layer: every block after it (for SD v1
    at 512 px the 32×32 and 64×64 up blocks and the output conv) never runs.
    """
    state = CaptureState(token_positions=token_positions)
    with capture_columns(unet, layers, state, early_exit=early_exit, affinity_layers=affinity_layers):
        try:
            unet(latents, timesteps, encoder_hidden_states=context, return_dict=False)
        except EarlyExit:
            pass
    return state
