"""The paper's training recipes, by the names of the inference presets (one name sets a project up).

From the reference configs (method §5): AdamW β 0.9/0.999, weight decay 1e-2, eps 1e-8 and a constant
learning rate everywhere, and

| stage | cub-paper | imagenet-paper |
|---|---|---|
| 1 (tokens) | batch 4, accumulation 1, LR 5e-5 × batch, 2 epochs | batch 2, accumulation 2, LR 5e-5 × batch, 2 epochs |
| 2 (UNet) | batch 4, accumulation 16, LR 5e-6 as given, 250 steps | batch 2, accumulation 32, LR 5e-8 × batch × accumulation × processes, 600 steps |

The reference's CUB results use the tokens with the original UNet; its ImageNet results use both.
"""

from __future__ import annotations

from dataclasses import dataclass

from genpromp_annotate.training.concept_tokens import ConceptTrainingConfig
from genpromp_annotate.training.unet_finetune import UnetFinetuneConfig


@dataclass(frozen=True)
class TrainingRecipe:
    name: str
    concept: ConceptTrainingConfig
    unet: UnetFinetuneConfig
    uses_finetuned_unet: bool  # whether the paper's results for this dataset use stage 2


RECIPES: dict[str, TrainingRecipe] = {
    "cub-paper": TrainingRecipe(
        "cub-paper",
        ConceptTrainingConfig(batch_size=4, grad_accum=1, learning_rate=5e-5, scale_lr=True, epochs=2),
        UnetFinetuneConfig(batch_size=4, grad_accum=16, learning_rate=5e-6, scale_lr=False, max_steps=250),
        uses_finetuned_unet=False),
    "imagenet-paper": TrainingRecipe(
        "imagenet-paper",
        ConceptTrainingConfig(batch_size=2, grad_accum=2, learning_rate=5e-5, scale_lr=True, epochs=2),
        UnetFinetuneConfig(batch_size=2, grad_accum=32, learning_rate=5e-8, scale_lr=True, max_steps=600),
        uses_finetuned_unet=True),
}
DEFAULT_RECIPE = TrainingRecipe("default", ConceptTrainingConfig(), UnetFinetuneConfig(), uses_finetuned_unet=False)


def recipe(name: str | None) -> TrainingRecipe:
    """The recipe of a preset name; the defaults (the paper's stage 1, a small stage 2) for other presets."""
    if name is None or name not in RECIPES:
        return DEFAULT_RECIPE
    return RECIPES[name]


def describe(concept: ConceptTrainingConfig, unet: UnetFinetuneConfig | None, world_size: int = 1) -> list[str]:
    """What a run will do, in the terms of the paper's configs: effective batch and learning rate."""
    per_update = concept.batch_size * concept.grad_accum
    length = f"{concept.max_steps} steps" if concept.max_steps else f"{concept.epochs} epochs"
    lines = [f"stage 1: batch {concept.batch_size} × accumulation {concept.grad_accum} = {per_update} images per "
             f"token update, LR {concept.learning_rate:g}" + (f" × {per_update} = {concept.effective_lr:g}"
                                                              if concept.scale_lr else " (not scaled)")
             + f", constant, {length}"]
    if unet is not None:
        total = unet.batch_size * unet.grad_accum * world_size
        lr = unet.effective_lr(world_size)
        lines.append(f"stage 2: batch {unet.batch_size} × accumulation {unet.grad_accum} × {world_size} process(es) "
                     f"= {total} images per UNet update, LR {unet.learning_rate:g}"
                     + (f" × {total} = {lr:g}" if unet.scale_lr else " (not scaled)")
                     + f", constant, {unet.max_steps} steps")
    return lines
