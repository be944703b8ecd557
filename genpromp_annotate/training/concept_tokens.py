"""Stage 1: learn one concept token per category with Stable Diffusion frozen (method §5).

Design: the trainable parameters are small `(D,)` vectors, one per category, spliced into the token
lookup of the text encoder (`SplicedTokenEmbedding`): ids at or above the vocabulary size are "virtual"
and read their row from the vectors of the categories in the batch. The text encoder's embedding matrix
is never written, never resized and never handed to an optimizer, so every vocabulary row stays
bit-identical by construction. The reference instead hands the whole matrix to AdamW, whose weight decay
shrinks every row (the ImageNet run ends with all embeddings at ~0.27×); `restore_frozen_rows` is the
repair for loops that do optimise the whole matrix (the splice needs none). Besides exactness, the
splice saves the `(V, D)` gradient and the two `(V, D)` Adam moments: ~440 MB at SD v1's 49408 × 768
(see bench/train.py).

Many categories train in one UNet call: a step packs one batch (`batch_size` images) of each of up to
`categories_per_step` categories. Each category has its own vector and its own AdamW; its loss is the
mean over its own images, so its gradient — and, with the per-sample seeds of data.py, its whole
trajectory — is the one it would have if trained alone with the same batch size. A category whose
batches are used up leaves the pack and the next one enters, so a 1000-class label set runs as one
stream of full batches instead of 1000 restarts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from genpromp_annotate.engine.loading import StableDiffusion, require_diffusers_modules
from genpromp_annotate.errors import ConfigError
from genpromp_annotate.log import get_logger
from genpromp_annotate.training.data import (
    AugmentConfig,
    CategoryImages,
    Sample,
    category_chunks,
    draw_sample,
)
from genpromp_annotate.training.denoising import load_pixels, noisy_latents, per_sample_mse, prompt_batch

logger = get_logger(__name__)


@dataclass(frozen=True)
class ConceptTrainingConfig:
    """Stage-1 settings; defaults are the paper's (method §5).

    The learning rate is per image: the rate used is `learning_rate × batch_size × grad_accum` (the
    number of images behind one update of a token) when `scale_lr`, as the reference scales by its total
    batch size. Categories are sharded whole over processes, so a token's batch never spans processes.
    """

    epochs: int = 2  # per category
    max_steps: int | None = None  # optimizer steps per category; replaces `epochs` when set
    batch_size: int = 4  # images of one category per forward
    grad_accum: int = 1  # forwards per optimizer step of a token
    categories_per_step: int = 4  # categories packed into one UNet call (UNet batch = 4 × batch_size)
    learning_rate: float = 5e-5
    scale_lr: bool = True
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    resolution: int = 512
    seed: int = 0
    gradient_checkpointing: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum", "categories_per_step"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be at least 1, got {self.max_steps}")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.augment.resolution != self.resolution:
            object.__setattr__(self, "augment", dataclasses.replace(self.augment, resolution=self.resolution))

    @property
    def effective_lr(self) -> float:
        return self.learning_rate * (self.batch_size * self.grad_accum if self.scale_lr else 1)

    def replace(self, **changes: Any) -> ConceptTrainingConfig:
        """A copy with `changes`; None values are ignored (convenient for CLI options)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["augment"]["templates"] = list(self.augment.templates)
        data["effective_lr"] = self.effective_lr
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConceptTrainingConfig:
        data = {k: v for k, v in data.items() if k != "effective_lr"}
        augment = data.pop("augment", None)
        if augment is not None:
            augment = AugmentConfig(**{**augment, "templates": tuple(augment["templates"])})
            data["augment"] = augment
        return cls(**data)


class SplicedTokenEmbedding(torch.nn.Module):
    """The frozen token table, with ids ≥ its size read from `vectors[id − size]` instead.

    `vectors` is `(n, D)` (any dtype; cast to the table's); gradient reaches only `vectors`.
    """

    def __init__(self, base: torch.nn.Embedding) -> None:
        super().__init__()
        self.base = base
        self.vectors: torch.Tensor | None = None

    @property
    def weight(self) -> torch.Tensor:  # code that reads `get_input_embeddings().weight` still works
        return self.base.weight

    @property
    def num_embeddings(self) -> int:
        return self.base.num_embeddings

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        size = self.base.num_embeddings
        virtual = input_ids >= size
        rows = self.base(torch.where(virtual, torch.zeros_like(input_ids), input_ids))
        if self.vectors is None or not bool(virtual.any()):
            return rows
        spliced = self.vectors.to(rows.dtype)[torch.where(virtual, input_ids - size, torch.zeros_like(input_ids))]
        return torch.where(virtual.unsqueeze(-1), spliced, rows)


@contextlib.contextmanager
def spliced_token_embedding(text_encoder) -> Iterator[SplicedTokenEmbedding]:
    """Put a SplicedTokenEmbedding in front of the text encoder's token table; restore it on exit."""
    base = text_encoder.get_input_embeddings()
    splice = SplicedTokenEmbedding(base)
    text_encoder.set_input_embeddings(splice)
    try:
        yield splice
    finally:
        text_encoder.set_input_embeddings(base)


def restore_frozen_rows(weight: torch.Tensor, original: torch.Tensor, trainable_ids: Sequence[int]) -> None:
    """Copy `original` back into every row of `weight` except `trainable_ids` (in place, no grad).

    For loops that optimise the whole `(V, D)` embedding matrix: call after each optimizer step, or
    AdamW's weight decay shrinks every vocabulary row although only the trainable ones get gradients.
    """
    keep = torch.ones(weight.shape[0], dtype=torch.bool, device=weight.device)
    keep[list(trainable_ids)] = False
    with torch.no_grad():
        weight[keep] = original.to(weight.device, weight.dtype)[keep]


def use_sdpa_attention(unet) -> None:
    """Make every attention layer use torch's scaled_dot_product_attention (diffusers' AttnProcessor2_0; the
    native UNet's own processor is that already)."""
    if all(type(p).__name__ == "SdpaProcessor" for p in unet.attn_processors.values()):
        return
    from diffusers.models.attention_processor import AttnProcessor2_0

    if not all(isinstance(p, AttnProcessor2_0) for p in unet.attn_processors.values()):
        unet.set_attn_processor(AttnProcessor2_0())


def encode_with_vectors(text_encoder, splice: SplicedTokenEmbedding, input_ids: torch.Tensor,
                        vectors: torch.Tensor) -> torch.Tensor:
    """`(B, 77, D)` last_hidden_state with virtual ids reading `vectors` `(n, D)`; differentiable in `vectors`."""
    splice.vectors = vectors
    try:
        return text_encoder(input_ids=input_ids).last_hidden_state
    finally:
        splice.vectors = None


@dataclass
class CategoryResult:
    """A trained category: its token, its learned input embedding and how training went."""

    label: str
    token: str
    embedding: torch.Tensor  # (D,) float32 CPU
    steps: int
    images_seen: int
    losses: list[float]  # mean loss of each forward

    @property
    def first_loss(self) -> float:
        return self.losses[0] if self.losses else math.nan

    @property
    def last_loss(self) -> float:
        return self.losses[-1] if self.losses else math.nan


@dataclass
class StepReport:
    """What one packed forward/backward did (for progress bars and the run row)."""

    step: int
    images: int
    loss: float  # mean over the categories in the step
    category_losses: dict[str, float]
    seconds: float
    finished: list[CategoryResult]
    pending: int  # categories not yet finished (including the active ones)


@dataclass
class _Active:
    category: CategoryImages
    vector: torch.nn.Parameter  # (D,) float32
    optimizer: torch.optim.AdamW
    chunks: list[list[Sample]]
    next_chunk: int = 0
    accumulated: int = 0
    steps: int = 0
    images_seen: int = 0
    losses: list[float] = field(default_factory=list)


def forwards_for(category: CategoryImages, config: ConceptTrainingConfig) -> int:
    """How many forwards `chunks_for` gives, without drawing the samples."""
    per_epoch = math.ceil(len(category.images) / config.batch_size)
    return config.max_steps * config.grad_accum if config.max_steps is not None else config.epochs * per_epoch


def chunks_for(category: CategoryImages, config: ConceptTrainingConfig) -> list[list[Sample]]:
    """A category's forwards: `epochs` passes, or exactly `max_steps × grad_accum` forwards when set."""
    if config.max_steps is None:
        return category_chunks(category, config.epochs, config.batch_size, config.seed, config.augment)
    per_epoch = math.ceil(len(category.images) / config.batch_size)
    wanted = config.max_steps * config.grad_accum
    epochs = math.ceil(wanted / per_epoch)
    return category_chunks(category, epochs, config.batch_size, config.seed, config.augment)[:wanted]


class ConceptTrainer:
    """Trains the concept tokens of `categories`, several per UNet call; drive it with `step()`.

    Usage:
        trainer = ConceptTrainer(model, categories, ConceptTrainingConfig())
        while (report := trainer.step()) is not None:
            for result in report.finished: save(result)
    """

    def __init__(self, model: StableDiffusion, categories: Sequence[CategoryImages],
                 config: ConceptTrainingConfig | None = None) -> None:
        self.model = model
        self.config = config or ConceptTrainingConfig()
        tokens = [c.token for c in categories]
        if len(set(tokens)) != len(tokens):
            raise ConfigError(f"concept tokens must be distinct, got {tokens}")
        self.categories = list(categories)
        self.pending: list[CategoryImages] = list(categories)
        self.active: list[_Active] = []
        self.finished: dict[str, CategoryResult] = {}
        self.global_step = 0
        self._table = model.text_encoder.get_input_embeddings()
        use_sdpa_attention(model.unet)
        if self.config.gradient_checkpointing:
            require_diffusers_modules(model, "gradient checkpointing")
            model.unet.enable_gradient_checkpointing()
        # fp16 gradients underflow without loss scaling; bf16 and fp32 do not need it.
        self._scaler = torch.amp.GradScaler(model.device.type,
                                            enabled=model.dtype == torch.float16 and model.device.type == "cuda")

    # ---- categories entering and leaving the pack ------------------------------------------------
    def initial_vector(self, category: CategoryImages) -> torch.Tensor:
        """The meta token's input-embedding row, `(D,)` float32 (method §5: f_r starts at f_d's token)."""
        return self._table.weight[category.meta_token_id].detach().float().clone()

    def _activate(self, category: CategoryImages, vector: torch.Tensor | None = None) -> _Active:
        param = torch.nn.Parameter((vector if vector is not None else self.initial_vector(category))
                                   .detach().float().clone().to(self.model.device))
        c = self.config
        optimizer = torch.optim.AdamW([param], lr=c.effective_lr, betas=(c.adam_beta1, c.adam_beta2),
                                      weight_decay=c.weight_decay, eps=c.adam_epsilon)
        entry = _Active(category=category, vector=param, optimizer=optimizer, chunks=chunks_for(category, c))
        self.active.append(entry)
        return entry

    def _fill(self) -> None:
        while self.pending and len(self.active) < self.config.categories_per_step:
            self._activate(self.pending.pop(0))

    @property
    def done(self) -> bool:
        return not self.pending and not self.active

    # ---- one packed forward / backward -----------------------------------------------------------
    def step(self) -> StepReport | None:
        """Run one forward over a batch of every active category; update the tokens that are due.

        Returns None when every category is trained.
        """
        self._fill()
        if not self.active:
            return None
        started = time.perf_counter()
        model, config = self.model, self.config
        samples: list[Sample] = []
        owners: list[int] = []
        for slot, entry in enumerate(self.active):
            chunk = entry.chunks[entry.next_chunk]
            samples.extend(chunk)
            owners.extend([slot] * len(chunk))
        pixels = load_pixels(samples, config.resolution)
        noisy, timesteps, target = noisy_latents(model, pixels, [s.seed for s in samples])
        size = self._table.num_embeddings
        input_ids = prompt_batch(model.tokenizer, [size + o for o in owners], [s.template for s in samples],
                                 model.device)
        vectors = torch.stack([entry.vector for entry in self.active])
        with spliced_token_embedding(model.text_encoder) as splice:
            hidden = encode_with_vectors(model.text_encoder, splice, input_ids, vectors)
        prediction = model.unet(noisy, timesteps, encoder_hidden_states=hidden.to(model.dtype)).sample
        losses = per_sample_mse(prediction, target)
        owner_index = torch.tensor(owners, device=losses.device)
        category_losses = []
        for slot in range(len(self.active)):
            category_losses.append(losses[owner_index == slot].mean())
        # Each category's term depends only on its own vector, so summing keeps per-token gradients separate.
        total = torch.stack(category_losses).sum() / config.grad_accum
        self._scaler.scale(total).backward()

        report_losses: dict[str, float] = {}
        finished: list[CategoryResult] = []
        stepped = False
        for entry, loss in zip(self.active, category_losses):
            value = float(loss.detach())
            report_losses[entry.category.label] = value
            entry.losses.append(value)
            entry.images_seen += len(entry.chunks[entry.next_chunk])
            entry.next_chunk += 1
            entry.accumulated += 1
            last = entry.next_chunk >= len(entry.chunks)
            if entry.accumulated >= config.grad_accum or last:
                self._scaler.step(entry.optimizer)
                entry.optimizer.zero_grad(set_to_none=True)
                entry.accumulated = 0
                entry.steps += 1
                stepped = True
            if last:
                finished.append(self._finish(entry))
        if stepped:
            self._scaler.update()
        self.active = [e for e in self.active if e.category.token not in self.finished]
        self.global_step += 1
        return StepReport(step=self.global_step, images=len(samples),
                          loss=sum(report_losses.values()) / len(report_losses), category_losses=report_losses,
                          seconds=time.perf_counter() - started, finished=finished,
                          pending=len(self.pending) + len(self.active))

    def _finish(self, entry: _Active) -> CategoryResult:
        result = CategoryResult(label=entry.category.label, token=entry.category.token,
                                embedding=entry.vector.detach().float().cpu().clone(), steps=entry.steps,
                                images_seen=entry.images_seen, losses=list(entry.losses))
        self.finished[entry.category.token] = result
        logger.info("trained %s (%s): %d steps, loss %.4f → %.4f", result.label, result.token, result.steps,
                    result.first_loss, result.last_loss)
        return result

    def run(self) -> dict[str, CategoryResult]:
        """Train everything; token → result."""
        while self.step() is not None:
            pass
        return dict(self.finished)

    # ---- checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: the config, the active tokens with their AdamW state
        and any accumulated gradient, and which categories are finished or pending."""
        return {
            "config": self.config.as_dict(),
            "global_step": self.global_step,
            "active": [{
                "token": e.category.token,
                "vector": e.vector.detach().cpu().clone(),
                "grad": None if e.vector.grad is None else e.vector.grad.detach().cpu().clone(),
                "optimizer": e.optimizer.state_dict(),
                "next_chunk": e.next_chunk, "accumulated": e.accumulated, "steps": e.steps,
                "images_seen": e.images_seen, "losses": list(e.losses),
            } for e in self.active],
            "finished": {t: {"label": r.label, "embedding": r.embedding, "steps": r.steps,
                             "images_seen": r.images_seen, "losses": r.losses} for t, r in self.finished.items()},
            "pending": [c.token for c in self.pending],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state_dict()`; categories unknown to this trainer are ignored (they were
        finished and stored elsewhere), and categories unknown to the state stay pending."""
        by_token = {c.token: c for c in self.categories}
        self.global_step = int(state.get("global_step", 0))
        self.active, self.finished = [], {}
        for token, item in state.get("finished", {}).items():
            if token in by_token:
                self.finished[token] = CategoryResult(label=item["label"], token=token, embedding=item["embedding"],
                                                      steps=item["steps"], images_seen=item["images_seen"],
                                                      losses=list(item["losses"]))
        for item in state.get("active", []):
            category = by_token.get(item["token"])
            if category is None:
                continue
            entry = self._activate(category, item["vector"])
            entry.optimizer.load_state_dict(item["optimizer"])
            if item.get("grad") is not None:
                entry.vector.grad = item["grad"].to(entry.vector.device)
            entry.next_chunk, entry.accumulated = int(item["next_chunk"]), int(item["accumulated"])
            entry.steps, entry.images_seen, entry.losses = int(item["steps"]), int(item["images_seen"]), list(item["losses"])
        started = {e.category.token for e in self.active} | set(self.finished)
        self.pending = [c for c in self.categories if c.token not in started]


@torch.no_grad()
def denoising_loss(model: StableDiffusion, category: CategoryImages, vector: torch.Tensor, seed: int = 1234,
                   draws: int = 4, resolution: int = 512, timesteps: Sequence[int] | None = None) -> float:
    """Mean ε-MSE of `vector` as the category's token over its images, with fixed draws and no augmentation.

    Each image is scored `draws` times with seeded noise and timesteps (or the given `timesteps`), so two
    vectors are compared on exactly the same noise: the measure of "the loss per category".
    """
    plain = AugmentConfig(resolution=resolution, flip_p=0.0, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
    samples = [draw_sample(category, epoch, i, seed, plain)
               for epoch in range(draws) for i in range(len(category.images))]
    samples = [dataclasses.replace(s, template=plain.templates[0]) for s in samples]
    pixels = load_pixels(samples, resolution)
    noisy, steps, target = noisy_latents(model, pixels, [s.seed for s in samples],
                                         None if timesteps is None else [timesteps[k % len(timesteps)]
                                                                         for k in range(len(samples))])
    size = model.text_encoder.get_input_embeddings().num_embeddings
    input_ids = prompt_batch(model.tokenizer, [size] * len(samples), [s.template for s in samples], model.device)
    with spliced_token_embedding(model.text_encoder) as splice:
        hidden = encode_with_vectors(model.text_encoder, splice, input_ids,
                                     vector.reshape(1, -1).to(model.device))
    prediction = model.unet(noisy, steps, encoder_hidden_states=hidden.to(model.dtype)).sample
    return float(per_sample_mse(prediction, target).mean())
