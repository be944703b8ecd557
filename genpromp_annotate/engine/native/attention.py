"""Attention and the transformer blocks of SD v1, named and shaped as diffusers', with swappable processors.

`Attention` carries the attributes that `engine.capture` reads from diffusers' class (projections,
heads, scale, the optional group norm, residual and rescale), so the capture processors run on both.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genpromp_annotate.engine.native.uninitialised import Conv2d, GroupNorm, LayerNorm, Linear


class SdpaProcessor:
    """Plain attention on `scaled_dot_product_attention`: the same math as diffusers' AttnProcessor2_0."""

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None) -> torch.Tensor:
        residual = hidden_states
        shape_4d = hidden_states.shape if hidden_states.ndim == 4 else None
        if shape_4d is not None:
            batch, channels, height, width = shape_4d
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query, key, value = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (t.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for t in (query, key, value))
        mask = None
        if attention_mask is not None:
            mask = attn.prepare_attention_mask(attention_mask, key.shape[2], batch)
            mask = mask.view(batch, attn.heads, -1, mask.shape[-1])
        mixed = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        hidden_states = mixed.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if shape_4d is not None:
            hidden_states = hidden_states.transpose(-1, -2).reshape(shape_4d)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class Attention(nn.Module):
    """Multi-head (cross-)attention; the math lives in `processor`, which `engine.capture` swaps."""

    def __init__(self, query_dim: int, heads: int, dim_head: int, cross_attention_dim: int | None = None,
                 bias: bool = False, group_norm_groups: int | None = None, eps: float = 1e-5,
                 residual_connection: bool = False) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.scale = dim_head**-0.5
        self.group_norm = GroupNorm(group_norm_groups, query_dim, eps=eps, affine=True) if group_norm_groups else None  # first: diffusers' key order
        self.to_q = Linear(query_dim, inner, bias=bias)
        self.to_k = Linear(cross_attention_dim or query_dim, inner, bias=bias)
        self.to_v = Linear(cross_attention_dim or query_dim, inner, bias=bias)
        self.to_out = nn.ModuleList([Linear(inner, query_dim, bias=True), nn.Dropout(0.0)])
        self.residual_connection = residual_connection
        self.rescale_output_factor = 1.0
        # diffusers' options that SD v1 leaves off (capture.py reads them)
        self.spatial_norm = None
        self.norm_cross = False
        self.norm_q = None
        self.norm_k = None
        self.processor: Any = SdpaProcessor()

    def prepare_attention_mask(self, attention_mask: torch.Tensor, target_length: int, batch_size: int) -> torch.Tensor:
        """A `(batch, keys)` or `(batch, 1, keys)` additive mask repeated per head: `(batch·heads, 1, keys)`."""
        if attention_mask.shape[-1] != target_length:
            attention_mask = F.pad(attention_mask, (0, target_length - attention_mask.shape[-1]), value=0.0)
        if attention_mask.ndim == 2:
            attention_mask = attention_mask.unsqueeze(1)
        return attention_mask.repeat_interleave(self.heads, dim=0)

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None) -> torch.Tensor:
        return self.processor(self, hidden_states, encoder_hidden_states=encoder_hidden_states,
                              attention_mask=attention_mask, temb=temb)


class GEGLU(nn.Module):
    """One projection to twice the width, halves multiplied: `h · gelu(gate)`."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = Linear(dim_in, dim_out * 2)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden, gate = self.proj(hidden).chunk(2, dim=-1)
        return hidden * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU to 4× the width, then back (`net.0.proj`, `net.2` as in diffusers)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * 4), nn.Dropout(0.0), Linear(dim * 4, dim)])

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            hidden = layer(hidden)
        return hidden


class BasicTransformerBlock(nn.Module):
    """Pre-norm self-attention, cross-attention to the text, feed-forward; each with a residual."""

    def __init__(self, dim: int, heads: int, dim_head: int, cross_attention_dim: int) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn1 = Attention(dim, heads, dim_head)
        self.norm2 = LayerNorm(dim)
        self.attn2 = Attention(dim, heads, dim_head, cross_attention_dim=cross_attention_dim)
        self.norm3 = LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, hidden: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        hidden = self.attn1(self.norm1(hidden)) + hidden
        hidden = self.attn2(self.norm2(hidden), encoder_hidden_states=context) + hidden
        return self.ff(self.norm3(hidden)) + hidden


class Transformer2DModel(nn.Module):
    """GroupNorm, project in (1×1 conv, or linear with `use_linear_projection`), the blocks over the `h·w`
    tokens, project out, plus the input."""

    def __init__(self, heads: int, dim_head: int, in_channels: int, cross_attention_dim: int, groups: int,
                 use_linear_projection: bool, num_layers: int = 1) -> None:
        super().__init__()
        inner = heads * dim_head
        self.use_linear_projection = use_linear_projection
        self.norm = GroupNorm(groups, in_channels, eps=1e-6, affine=True)
        projection = Linear if use_linear_projection else (lambda i, o: Conv2d(i, o, 1))
        self.proj_in = projection(in_channels, inner)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(inner, heads, dim_head, cross_attention_dim) for _ in range(num_layers)])
        self.proj_out = projection(inner, in_channels)

    def forward(self, hidden: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = hidden.shape
        residual = hidden
        hidden = self.norm(hidden)
        if self.use_linear_projection:
            hidden = self.proj_in(hidden.permute(0, 2, 3, 1).reshape(batch, height * width, -1))
        else:
            hidden = self.proj_in(hidden)
            hidden = hidden.permute(0, 2, 3, 1).reshape(batch, height * width, -1)
        for block in self.transformer_blocks:
            hidden = block(hidden, context)
        if self.use_linear_projection:
            hidden = self.proj_out(hidden).reshape(batch, height, width, -1).permute(0, 3, 1, 2).contiguous()
        else:
            hidden = hidden.reshape(batch, height, width, -1).permute(0, 3, 1, 2).contiguous()
            hidden = self.proj_out(hidden)
        return hidden + residual
