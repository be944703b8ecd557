"""Localizer: images + labels → GenPromp maps and boxes, batched, under inference_mode."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from genpromp_annotate.engine.boxes import Box, boxes_from_map, scale_box
from genpromp_annotate.engine.capture import (
    AttentionLayer,
    probe_attention_layers,
    run_unet_capturing,
    select_layers,
)
from genpromp_annotate.engine.loading import StableDiffusion
from genpromp_annotate.engine.maps import (
    combine_groups,
    group_maps,
    propagate_with_affinity,
    upsample_and_normalise,
)
from genpromp_annotate.engine.prompts import TEMPLATES, CategoryPrompt, PromptCache
from genpromp_annotate.engine.tokens import (
    add_concept_tokens,
    concept_token_name,
    concept_tokens_digest,
    embedding_digest,
    meta_token_for,
)
from genpromp_annotate.errors import ConfigError
from genpromp_annotate.log import get_logger
from genpromp_annotate.presets import LocalizeConfig

logger = get_logger(__name__)


@dataclass
class LocalizeResult:
    """Boxes (original pixels) and the normalised map of one image."""

    label: str
    width: int
    height: int
    boxes: list[Box]
    map_512: np.ndarray | None = None  # (S, S) float32 in [0, 1], S = config.image_size
    image: str | None = None

    def as_dict(self) -> dict:
        return {"image": self.image, "label": self.label, "width": self.width, "height": self.height,
                "boxes": [b.as_dict() for b in self.boxes]}


@dataclass
class _Category:
    label: str
    meta_token_id: int
    meta_word: str
    concept_token: str | None = None
    concept_token_id: int | None = None
    concept_digest: str | None = None
    forced_meta_word: bool = False  # set_meta_word replaced the rule's choice


@dataclass
class Localizer:
    """GenPromp localization over a loaded Stable Diffusion model.

    Usage:
        loc = Localizer(load_stable_diffusion("path/to/sd"))
        loc.set_concept_token("goldfish", embedding)        # optional: learned f_r
        results = loc.localize([Image.open("fish.jpg")], ["goldfish"])
    """

    model: StableDiffusion
    config: LocalizeConfig = field(default_factory=LocalizeConfig)
    templates: tuple[str, ...] = TEMPLATES

    def __post_init__(self) -> None:
        self._categories: dict[str, _Category] = {}
        self._prompts = PromptCache(self.model.text_encoder, self.model.tokenizer, self.templates)
        probed = probe_attention_layers(self.model.unet)
        self._all_layers: list[AttentionLayer] = [layer for layer in probed if layer.is_cross]
        self._self_layers: list[AttentionLayer] = [layer for layer in probed if not layer.is_cross]
        if not self._all_layers:
            raise ConfigError("the UNet has no cross-attention (attn2) layers")
        self._lock = threading.Lock()  # the capture processors are per-call state on a shared UNet

    def with_config(self, config: LocalizeConfig) -> Localizer:
        """A Localizer with other settings on the same model, its categories (tokens, meta words) copied;
        both use one lock, since they drive the same UNet."""
        other = Localizer(self.model, config, self.templates)
        other._categories = {label: dataclasses.replace(cat) for label, cat in self._categories.items()}
        other._lock = self._lock
        return other

    # ---- categories -------------------------------------------------------------------------
    def category(self, label: str) -> _Category:
        """The label's meta token (and concept token, if set); created on first use."""
        if label not in self._categories:
            meta = meta_token_for(label, self.model.tokenizer)
            self._categories[label] = _Category(label, meta.token_id, meta.word)
        return self._categories[label]

    def set_meta_word(self, label: str, word: str) -> int:
        """Use `word` as the label's meta token (f_d) instead of the method §2 rule, e.g. `bird` for every CUB
        class. The word must be one token of the vocabulary. Returns its token id."""
        ids = self.model.tokenizer(word, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise ConfigError(f"meta word {word!r} for {label!r} encodes to {len(ids)} tokens, expected exactly 1; "
                              "choose a word of the tokenizer's vocabulary")
        cat = self.category(label)
        cat.meta_token_id, cat.meta_word, cat.forced_meta_word = int(ids[0]), word, True
        self._prompts.invalidate(label)
        return cat.meta_token_id

    def set_concept_token(self, label: str, embedding: torch.Tensor, token: str | None = None) -> str:
        """Use a learned embedding `(D,)` as the label's concept token (f_r). Returns the token string."""
        cat = self.category(label)
        token = token or cat.concept_token or concept_token_name(label)
        ids = add_concept_tokens(self.model.tokenizer, self.model.text_encoder, {token: embedding})
        digest = embedding_digest(embedding)
        cat.concept_token, cat.concept_token_id, cat.concept_digest = token, ids[token], digest
        self._prompts.invalidate(label)
        return token

    @property
    def tokens_digest(self) -> str:
        """Digest of every concept embedding (and forced meta word) in use: part of a model version."""
        digests = {c.label: c.concept_digest for c in self._categories.values() if c.concept_digest}
        forced = {c.label: c.meta_word for c in self._categories.values() if c.forced_meta_word}
        return concept_tokens_digest(digests, forced)

    def prompt_for(self, label: str) -> CategoryPrompt:
        cat = self.category(label)
        return self._prompts.get(label, cat.meta_token_id, cat.concept_token_id, self.config.omega)

    # ---- the pipeline -----------------------------------------------------------------------
    @property
    def latent_side(self) -> int:
        return self.config.image_size // self.model.latent_scale

    def selected_layers(self) -> list[AttentionLayer]:
        return select_layers(self._all_layers, self.latent_side, tuple(self.config.resolutions))

    def affinity_layers(self) -> list[AttentionLayer]:
        """The self-attention layers of the propagation side that run before the last cross-attention
        layer the maps need (so the UNet still stops there); [] when propagation is off."""
        side = self.config.propagation_side
        if not side:
            return []
        last = max(layer.order for layer in self.selected_layers())
        chosen = [layer for layer in self._self_layers
                  if layer.query_side(self.latent_side) == side and layer.order < last]
        if not chosen:
            available = sorted({layer.query_side(self.latent_side) for layer in self._self_layers
                                if layer.order < last})
            raise ConfigError(f"propagation_side {side}: no self-attention layer at that side runs before the "
                              f"last map layer for latent {self.latent_side}; available: {available}")
        return chosen

    def _pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Step 1: straight resize to S×S (bicubic, aspect ratio not kept), scaled to [−1, 1]."""
        size = self.config.image_size
        arrays = [np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)
                  for img in images]
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        if self.model.device.type == "cuda":  # uint8 over the bus (¼ of fp32), pinned, not waited for
            batch = batch.pin_memory().to(self.model.device, non_blocking=True)
        else:
            batch = batch.to(self.model.device)
        return (batch.float() / 127.5 - 1.0).to(self.model.dtype)

    def _latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """Step 2: VAE posterior sample (or mean) × scaling factor; per-image seeded, so batch = singles."""
        posterior = self.model.vae.encode(pixels).latent_dist
        if self.config.latent == "mean":
            latents = posterior.mean
        else:
            eps = torch.stack([
                torch.randn(posterior.mean.shape[1:], generator=torch.Generator().manual_seed(self.config.seed + 1))
                for _ in range(pixels.shape[0])
            ]).to(posterior.mean.device, posterior.mean.dtype)
            latents = posterior.mean + posterior.std * eps
        return latents * self.model.scaling_factor

    def _noisy(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 3: the same seeded noise added at every timestep; timestep-major batch (T·B)."""
        steps = self.config.timesteps
        batch = latents.shape[0]
        noise = torch.randn(latents.shape[1:], generator=torch.Generator().manual_seed(self.config.seed))
        noise = noise.to(latents.device, latents.dtype).expand_as(latents)
        timesteps = torch.tensor(steps, device=latents.device).repeat_interleave(batch)
        stacked = latents.repeat(len(steps), 1, 1, 1)
        if not self.config.add_noise:
            return stacked, timesteps
        return self.model.scheduler.add_noise(stacked, noise.repeat(len(steps), 1, 1, 1), timesteps), timesteps

    @torch.inference_mode()
    def compute_maps(self, images: Sequence[Image.Image], labels: Sequence[str], early_exit: bool = True) -> torch.Tensor:
        """Steps 1–7 for one batch: `(B, S, S)` float32 maps in [0, 1] on the model's device."""
        return upsample_and_normalise(self.latent_maps(images, labels, early_exit), self.config.image_size)

    @torch.inference_mode()
    def latent_maps(self, images: Sequence[Image.Image], labels: Sequence[str], early_exit: bool = True) -> torch.Tensor:
        """Steps 1–6 (and the refinements that are on): `(B, L, L)` float32 maps at the latent side."""
        if len(images) != len(labels):
            raise ConfigError(f"{len(images)} images but {len(labels)} labels")
        prompts = [self.prompt_for(label) for label in labels]  # step 4 inputs, cached per label
        layers = self.selected_layers()
        n_steps = len(self.config.timesteps)
        flip = self.config.flip_tta
        if flip:  # the mirrored images ride in the same batch, with the same prompts
            prompts = prompts + prompts
        with self._lock:
            pixels = self._pixels(images)
            latents = self._latents(torch.cat([pixels, pixels.flip(-1)]) if flip else pixels)
            noisy, timesteps = self._noisy(latents)
            context = torch.stack([p.embedding for p in prompts]).to(self.model.device, self.model.dtype)
            positions = torch.tensor([p.token_position for p in prompts], device=self.model.device)
            affinity_layers = self.affinity_layers()
            captured = run_unet_capturing(
                self.model.unet, noisy, timesteps, context.repeat(n_steps, 1, 1), layers,
                positions.repeat(n_steps), early_exit=early_exit, affinity_layers=affinity_layers,
            )
            weights = dict(zip(self.config.resolutions, self.config.resolution_weights)) or None
            maps = combine_groups(group_maps(captured.columns, layers, n_steps, self.latent_side), self.latent_side,
                                  weights)
            if affinity_layers:
                maps = propagate_with_affinity(maps, [captured.affinities[layer.name] for layer in affinity_layers],
                                               n_steps, self.config.propagation_steps,
                                               self.config.propagation_product)
            if flip:
                half = len(images)
                maps = (maps[:half] + maps[half:].flip(-1)) / 2
        return maps

    def boxes_for_map(self, map_s: np.ndarray, width: int, height: int) -> list[Box]:
        """Step 8: boxes of one map, mapped from the S×S frame back to `width × height` pixels."""
        size = self.config.image_size
        boxes = boxes_from_map(map_s, self.config.threshold, self.config.multi_box, self.config.min_box_area)
        return [scale_box(b, (size, size), (width, height)) for b in boxes]

    def localize(self, images: Sequence[Image.Image], labels: Sequence[str], names: Sequence[str] | None = None,
                 batch_size: int = 8, keep_maps: bool = False) -> list[LocalizeResult]:
        """Maps and boxes for images of any sizes and labels, `batch_size` per UNet call.

        Returns one LocalizeResult per image, in order; boxes are in original pixels.
        """
        results: list[LocalizeResult] = []
        for start in range(0, len(images), max(1, batch_size)):
            chunk = list(images[start : start + batch_size])
            chunk_labels = list(labels[start : start + batch_size])
            maps = self.compute_maps(chunk, chunk_labels).float().cpu().numpy()
            for offset, (image, label, map_s) in enumerate(zip(chunk, chunk_labels, maps)):
                width, height = image.size
                results.append(LocalizeResult(
                    label=label, width=width, height=height,
                    boxes=self.boxes_for_map(map_s, width, height),
                    map_512=map_s if keep_maps else None,
                    image=names[start + offset] if names else None,
                ))
        return results
