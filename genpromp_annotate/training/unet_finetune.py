"""Stage 2 (optional): finetune the whole UNet on `0.5·f_r + 0.5·f_d` with the tokens frozen (method §5).

Data are sharded over processes: every optimizer step takes one global batch of
`batch_size × world_size` samples from a seeded stream over all (category, image) pairs; rank r takes
samples r, r + N, …; DDP (through accelerate) averages the gradients, so N processes take the same
steps as one process with an N-times larger batch. UNet weights are trained in float32; on GPU the
forward runs under bf16/fp16 autocast (accelerate's mixed precision) when the model was loaded so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genpromp_annotate.engine.loading import StableDiffusion, require_diffusers_modules, weights_digest
from genpromp_annotate.errors import ConfigError
from genpromp_annotate.log import get_logger
from genpromp_annotate.training.concept_tokens import (
    encode_with_vectors,
    spliced_token_embedding,
    use_sdpa_attention,
)
from genpromp_annotate.training.data import AugmentConfig, CategoryImages, Sample, draw_sample, sample_seed
from genpromp_annotate.training.denoising import load_pixels, noisy_latents, per_sample_mse, prompt_batch
from genpromp_annotate.training.distributed import ProcessContext

logger = get_logger(__name__)


@dataclass(frozen=True)
class UnetFinetuneConfig:
    """Stage-2 settings; defaults are the paper's CUB run (250 steps, LR 5e-6), per process batch 4."""

    max_steps: int = 250
    batch_size: int = 4  # samples per process per forward
    grad_accum: int = 1
    learning_rate: float = 5e-6  # as given unless `scale_lr` (the paper's CUB run does not scale)
    scale_lr: bool = False  # × batch_size × grad_accum × processes (the paper's ImageNet run)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    representative_weight: float = 0.5  # conditioning = w·f_r + (1 − w)·f_d
    resolution: int = 512
    seed: int = 0
    gradient_checkpointing: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ConfigError(f"unet {name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.representative_weight <= 1.0:
            raise ConfigError(f"representative_weight must lie in [0, 1], got {self.representative_weight}")
        if self.augment.resolution != self.resolution:
            object.__setattr__(self, "augment", dataclasses.replace(self.augment, resolution=self.resolution))

    def effective_lr(self, world_size: int = 1) -> float:
        return self.learning_rate * (self.batch_size * self.grad_accum * world_size if self.scale_lr else 1)

    def replace(self, **changes: Any) -> UnetFinetuneConfig:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["augment"]["templates"] = list(self.augment.templates)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UnetFinetuneConfig:
        data = dict(data)
        augment = data.pop("augment", None)
        if augment is not None:
            data["augment"] = AugmentConfig(**{**augment, "templates": tuple(augment["templates"])})
        return cls(**data)


def sample_stream(categories: Sequence[CategoryImages], seed: int, augment: AugmentConfig,
                  start: int, count: int) -> list[tuple[int, Sample]]:
    """Samples `start … start + count − 1` of the endless seeded stream over all (category, image) pairs.

    Each epoch visits every pair once in a seeded order. Returns (category index, sample) pairs.
    """
    pairs = [(c, i) for c, category in enumerate(categories) for i in range(len(category.images))]
    if not pairs:
        raise ConfigError("no training images: every category is empty")
    out = []
    for position in range(start, start + count):
        epoch, offset = divmod(position, len(pairs))
        order = np.random.default_rng(sample_seed(seed, "<unet-stream>", epoch, -1)).permutation(len(pairs))
        c, i = pairs[int(order[offset])]
        out.append((c, draw_sample(categories[c], epoch, i, seed + 1, augment)))
    return out


@dataclass
class FinetuneReport:
    step: int  # optimizer steps done
    images: int  # images in this forward (this process)
    loss: float
    seconds: float


class UnetFinetuner:
    """Finetunes `model.unet` in place (float32 weights); drive it with `step()` until it returns None."""

    def __init__(self, model: StableDiffusion, categories: Sequence[CategoryImages],
                 concept_vectors: dict[str, torch.Tensor], config: UnetFinetuneConfig | None = None,
                 context: ProcessContext | None = None) -> None:
        from accelerate import Accelerator

        require_diffusers_modules(model, "UNet finetuning (stage 2)")
        self.model = model
        self.config = config or UnetFinetuneConfig()
        self.categories = list(categories)
        missing = [c.label for c in self.categories if c.token not in concept_vectors]
        if missing:
            raise ConfigError(f"stage 2 needs a trained concept token for every category; missing: {', '.join(missing)}"
                              " (run stage 1 first)")
        self.vectors = torch.stack([concept_vectors[c.token].reshape(-1).float() for c in self.categories])
        self.rank = context.rank if context else 0
        self.world_size = context.world_size if context else 1
        precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(model.dtype, "no")
        if model.device.type != "cuda":
            precision = "no"
        self.accelerator = Accelerator(mixed_precision=precision, cpu=model.device.type == "cpu")
        unet = model.unet if model.unet.dtype == torch.float32 else model.unet.to(dtype=torch.float32)
        use_sdpa_attention(unet)
        if self.config.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        unet.requires_grad_(True)
        unet.train()
        c = self.config
        optimizer = torch.optim.AdamW(unet.parameters(), lr=c.effective_lr(self.world_size),
                                      betas=(c.adam_beta1, c.adam_beta2),
                                      weight_decay=c.weight_decay, eps=c.adam_epsilon, foreach=True)
        self.unet, self.optimizer = self.accelerator.prepare(unet, optimizer)
        self.forwards = 0
        self.global_step = 0

    @property
    def done(self) -> bool:
        return self.global_step >= self.config.max_steps

    @torch.no_grad()
    def conditioning(self, category_indices: Sequence[int], templates: Sequence[str]) -> torch.Tensor:
        """`(B, 77, D)`: w·f_r + (1 − w)·f_d per sample, each in the sample's own template."""
        model = self.model
        size = model.text_encoder.get_input_embeddings().num_embeddings
        concept_ids = prompt_batch(model.tokenizer, [size + c for c in category_indices], templates, model.device)
        meta_ids = prompt_batch(model.tokenizer, [self.categories[c].meta_token_id for c in category_indices],
                                templates, model.device)
        with spliced_token_embedding(model.text_encoder) as splice:
            f_r = encode_with_vectors(model.text_encoder, splice, concept_ids, self.vectors.to(model.device))
            f_d = encode_with_vectors(model.text_encoder, splice, meta_ids, self.vectors.to(model.device))
        w = self.config.representative_weight
        return (w * f_r.float() + (1.0 - w) * f_d.float())

    def step(self) -> FinetuneReport | None:
        """One forward/backward on this process's share of the next global batch; None when done."""
        if self.done:
            return None
        started = time.perf_counter()
        c = self.config
        global_batch = c.batch_size * self.world_size
        drawn = sample_stream(self.categories, c.seed, c.augment, self.forwards * global_batch, global_batch)
        mine = drawn[self.rank :: self.world_size]
        indices = [ci for ci, _ in mine]
        samples = [s for _, s in mine]
        pixels = load_pixels(samples, c.resolution)
        noisy, timesteps, target = noisy_latents(self.model, pixels, [s.seed for s in samples])
        context = self.conditioning(indices, [s.template for s in samples])
        sync = (self.forwards + 1) % c.grad_accum == 0
        # Between accumulation forwards DDP must not all-reduce; the last forward of a step does.
        with contextlib.nullcontext() if sync else self.accelerator.no_sync(self.unet), self.accelerator.autocast():
            prediction = self.unet(noisy.float(), timesteps, encoder_hidden_states=context).sample
            loss = per_sample_mse(prediction, target).mean()
            self.accelerator.backward(loss / c.grad_accum)
        self.forwards += 1
        if sync:
            if c.max_grad_norm:
                self.accelerator.clip_grad_norm_(self.unet.parameters(), c.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.global_step += 1
        return FinetuneReport(step=self.global_step, images=len(samples), loss=float(loss.detach()),
                              seconds=time.perf_counter() - started)

    # ---- checkpoints -------------------------------------------------------------------------------
    @property
    def at_step_boundary(self) -> bool:
        """True when no gradient is half-accumulated: the only moments a checkpoint is exact."""
        return self.forwards % self.config.grad_accum == 0

    def state_dict(self) -> dict[str, Any]:
        """UNet weights, AdamW state and the position in the sample stream (call at a step boundary)."""
        if not self.at_step_boundary:
            raise ConfigError("a stage-2 checkpoint can only be taken between optimizer steps")
        unet = self.accelerator.unwrap_model(self.unet)
        return {"config": self.config.as_dict(), "forwards": self.forwards, "global_step": self.global_step,
                "unet": {k: v.detach().cpu().clone() for k, v in unet.state_dict().items()},
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict()`: the next step is the one the saved run would have taken."""
        self.accelerator.unwrap_model(self.unet).load_state_dict(state["unet"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.forwards, self.global_step = int(state["forwards"]), int(state["global_step"])

    def finetuned_unet(self) -> torch.nn.Module:
        """The trained UNet (unwrapped from DDP), float32, in eval mode with gradients off."""
        unet = self.accelerator.unwrap_model(self.unet)
        unet.eval()
        unet.requires_grad_(False)
        return unet

    def run(self) -> list[float]:
        losses = []
        while (report := self.step()) is not None:
            losses.append(report.loss)
        return losses


def save_unet(unet: Any, folder: str | Path) -> tuple[Path, str]:
    """Save a UNet in diffusers format (safetensors) under `folder/unet-<digest>`; returns (path, digest).

    The digest (of names, shapes and bytes) names the weights exactly, so a model version that uses this
    UNet changes when and only when the weights do.
    """
    digest = weights_digest(unet)
    target = Path(folder) / f"unet-{digest}"
    tmp = target.with_name(target.name + ".partial")
    unet.save_pretrained(str(tmp), safe_serialization=True)
    if target.exists():  # the same weights were saved before: keep that copy
        import shutil

        shutil.rmtree(tmp)
    else:
        tmp.rename(target)
    return target, digest


def steps_for_epochs(categories: Sequence[CategoryImages], epochs: float, batch_size: int, world_size: int) -> int:
    """Optimizer steps for `epochs` passes over every image with the global batch."""
    images = sum(len(c.images) for c in categories)
    return max(1, math.ceil(epochs * images / (batch_size * world_size)))
