"""Captured attention columns → one normalised map per image (method §4 steps 6–7)."""

from __future__ import annotations

import math
from collections import defaultdict

import torch
import torch.nn.functional as F

from genpromp_annotate.engine.capture import AttentionLayer


def group_maps(columns: dict[str, torch.Tensor], layers: list[AttentionLayer], n_timesteps: int,
               latent_side: int) -> dict[tuple[str, int], torch.Tensor]:
    """Average timesteps, then layers × heads within each (part, resolution) group.

    Args:
        columns: name → `(T·B, heads, N)` float32, timestep-major (all images at t0, then at t1 …).
    Returns:
        (part, side) → `(B, side, side)` float32.
    """
    groups: dict[tuple[str, int], list[torch.Tensor]] = defaultdict(list)
    for layer in layers:
        column = columns[layer.name]
        total, heads, tokens = column.shape
        side = layer.query_side(latent_side)
        per_image = column.view(n_timesteps, total // n_timesteps, heads, tokens).mean(dim=0)  # (B, H, N)
        groups[(layer.part, side)].append(per_image)
    result = {}
    for key, items in groups.items():
        stacked = torch.cat(items, dim=1)  # (B, layers·heads, N): equal weight to every head of every layer
        side = key[1]
        result[key] = stacked.mean(dim=1).view(-1, side, side)
    return result


def combine_groups(groups: dict[tuple[str, int], torch.Tensor], latent_side: int,
                   side_weights: dict[int, float] | None = None) -> torch.Tensor:
    """Bicubic resize of each group to the latent size, mean (equal weights, or each group weighted by
    its side's `side_weights` entry), divide by the per-image max.

    Returns `(B, latent, latent)` float32 with max 1.
    """
    ordered = sorted(groups.items())
    resized = [
        F.interpolate(g.unsqueeze(1), size=(latent_side, latent_side), mode="bicubic", align_corners=False)
        for _, g in ordered
    ]
    if side_weights:
        weights = torch.tensor([side_weights[side] for (_, side), _ in ordered], dtype=resized[0].dtype,
                               device=resized[0].device)
        combined = (torch.stack(resized, dim=0) * (weights / weights.sum()).view(-1, 1, 1, 1, 1)).sum(dim=0).squeeze(1)
    else:
        combined = torch.stack(resized, dim=0).mean(dim=0).squeeze(1)  # (B, L, L)
    peak = combined.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)
    return combined / peak


def upsample_and_normalise(maps: torch.Tensor, size: int = 512) -> torch.Tensor:
    """Bilinear upsampling to `size×size`, then min-max normalisation to [0, 1] per image."""
    up = F.interpolate(maps.unsqueeze(1), size=(size, size), mode="bilinear", align_corners=False).squeeze(1)
    flat = up.flatten(1)
    low = flat.amin(dim=1).view(-1, 1, 1)
    high = flat.amax(dim=1).view(-1, 1, 1)
    return (up - low) / (high - low).clamp_min(1e-12)


def maps_from_columns(columns: dict[str, torch.Tensor], layers: list[AttentionLayer], n_timesteps: int,
                      latent_side: int, out_size: int = 512) -> torch.Tensor:
    """Steps 6–7 end to end: `(B, out_size, out_size)` float32 maps in [0, 1]."""
    groups = group_maps(columns, layers, n_timesteps, latent_side)
    return upsample_and_normalise(combine_groups(groups, latent_side), out_size)


def propagate_with_affinity(maps: torch.Tensor, affinities: list[tuple[torch.Tensor, torch.Tensor, float]],
                            n_timesteps: int, steps: int = 1, product: bool = False) -> torch.Tensor:
    """Self-attention propagation: `m ← A·m`, `steps` times, A = softmax(QKᵀ·scale) averaged over the
    layers, heads and timesteps given; computed as attention with the map as the value, so the
    `(N, N)` affinity is never materialised.

    Args:
        maps: `(B, L, L)` float32 maps; min-max normalised here first (A's rows sum to 1).
        affinities: `(query, key, scale)` per layer, query/key `(T·B, heads, N, d)`, timestep-major,
            every layer at one side s = √N (the map is resized to s×s and back).
        product: return `minmax(A·m)·m` (the propagated map sharpened by the original).
    Returns:
        `(B, L, L)` float32.
    """
    batch, side_in = maps.shape[0], maps.shape[-1]
    flat = maps.flatten(1)
    low, high = flat.amin(dim=1).view(-1, 1, 1), flat.amax(dim=1).view(-1, 1, 1)
    normalised = (maps - low) / (high - low).clamp_min(1e-12)
    side = math.isqrt(affinities[0][0].shape[2])
    start = normalised if side == side_in else F.interpolate(
        normalised.unsqueeze(1), size=(side, side), mode="area" if side < side_in else "bilinear").squeeze(1)
    start = start.flatten(1)  # (B, N)
    current = start
    for _ in range(steps):
        spread = []
        for query, key, scale in affinities:
            total, heads, tokens, dim = query.shape
            # The map fills every value channel: a value as wide as the keys keeps SDPA on its fused
            # kernels (a 1-wide value falls back to the math path, 4× slower on CPU at 4096 tokens).
            value = current.repeat(total // batch, 1).view(total, 1, tokens, 1).expand(total, heads, tokens, dim)
            out = F.scaled_dot_product_attention(query.float(), key.float(), value.contiguous(), scale=scale)
            spread.append(out[..., 0].mean(dim=1).view(total // batch, batch, tokens).mean(dim=0))  # (B, N)
        current = torch.stack(spread).mean(dim=0)
    if product:  # both in [0, 1]: the background, low in either, goes to 0
        low, high = current.amin(dim=1, keepdim=True), current.amax(dim=1, keepdim=True)
        current = (current - low) / (high - low).clamp_min(1e-12) * start
    out = current.view(batch, side, side)
    if side != side_in:
        out = F.interpolate(out.unsqueeze(1), size=(side_in, side_in), mode="bilinear", align_corners=False).squeeze(1)
    return out
