"""Training samples — (image path, category, template) — and the paper's augmentations (method §5).

Augmentations: straight resize to the training resolution (bicubic), random horizontal flip, colour
jitter 0.1 on brightness, contrast, saturation and hue. The jitter is written with PIL (ImageEnhance and
a hue shift in HSV) because torchvision is not a dependency.

Every random draw of a sample (flip, jitter, template, timestep, noise, VAE sample) comes from a
generator seeded by `(seed, category key, epoch, image index)` and nothing else. So a sample is
augmented and noised identically whichever batch, packing of categories, process or resumed run it
lands in: that is what makes multi-category training equal one-by-one training, a 2-process run equal
a 1-process run, and a resumed run equal an uninterrupted one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance

from genpromp_annotate.engine.images import load_image
from genpromp_annotate.engine.prompts import TEMPLATES
from genpromp_annotate.errors import ConfigError
from genpromp_annotate.sources import open_uri


@dataclass(frozen=True)
class CategoryImages:
    """One category to train: its label, its concept token string, its meta token and its images."""

    label: str
    token: str  # concept token string, e.g. "<goldfish>"; also the key of its random streams
    meta_token_id: int
    images: tuple[str | Path, ...]  # local paths, or http(s) URLs

    def __post_init__(self) -> None:
        if not self.images:
            raise ConfigError(f"category {self.label!r} has no images to train on")


@dataclass(frozen=True)
class Sample:
    """One image of one category in one epoch, with every random draw already made."""

    path: str | Path
    token: str
    epoch: int
    index: int  # position of the image within its category
    template: str
    flip: bool
    jitter: tuple[float, float, float, float]  # brightness, contrast, saturation factors; hue shift
    jitter_order: tuple[int, ...]  # order in which the four jitter operations are applied
    seed: int  # seeds the timestep, the noise and the VAE sample of this sample


@dataclass(frozen=True)
class AugmentConfig:
    """The paper's augmentations; `jitter` is torchvision's ColorJitter(0.1, 0.1, 0.1, 0.1) semantics."""

    resolution: int = 512
    flip_p: float = 0.5
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.1
    templates: tuple[str, ...] = field(default=TEMPLATES)

    def __post_init__(self) -> None:
        if self.resolution % 64:
            raise ConfigError(f"resolution must be a multiple of 64 (8 × the VAE factor), got {self.resolution}")
        if not 0.0 <= self.hue <= 0.5:
            raise ConfigError(f"hue jitter must lie in [0, 0.5], got {self.hue}")
        for name in ("brightness", "contrast", "saturation"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} jitter must lie in [0, 1), got {getattr(self, name)}")


def sample_seed(seed: int, token: str, epoch: int, index: int) -> int:
    """A 63-bit seed from (run seed, category key, epoch, image index), stable across processes and runs."""
    digest = hashlib.sha256(f"{seed}|{token}|{epoch}|{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def draw_sample(category: CategoryImages, epoch: int, index: int, seed: int, augment: AugmentConfig) -> Sample:
    """Make every random choice of one sample from its own generator."""
    own_seed = sample_seed(seed, category.token, epoch, index)
    rng = np.random.default_rng(own_seed)
    flip = bool(rng.random() < augment.flip_p)
    factors = tuple(float(rng.uniform(max(0.0, 1 - s), 1 + s)) for s in
                    (augment.brightness, augment.contrast, augment.saturation))
    hue = float(rng.uniform(-augment.hue, augment.hue))
    order = tuple(int(i) for i in rng.permutation(4))
    template = augment.templates[int(rng.integers(len(augment.templates)))]
    return Sample(path=category.images[index], token=category.token, epoch=epoch, index=index, template=template,
                  flip=flip, jitter=(factors[0], factors[1], factors[2], hue), jitter_order=order,
                  seed=int(rng.integers(0, 2**62)))


def shuffled_indices(category: CategoryImages, epoch: int, seed: int) -> list[int]:
    """The order in which a category's images are visited in one epoch (seeded per category and epoch)."""
    rng = np.random.default_rng(sample_seed(seed, category.token, epoch, -1))
    return [int(i) for i in rng.permutation(len(category.images))]


def category_chunks(category: CategoryImages, epochs: int, batch_size: int, seed: int,
                    augment: AugmentConfig) -> list[list[Sample]]:
    """A category's training batches over `epochs`: chunks of `batch_size` samples (the last may be short)."""
    chunks: list[list[Sample]] = []
    for epoch in range(epochs):
        order = shuffled_indices(category, epoch, seed)
        for start in range(0, len(order), batch_size):
            chunks.append([draw_sample(category, epoch, i, seed, augment) for i in order[start : start + batch_size]])
    return chunks


def shift_hue(image: Image.Image, shift: float) -> Image.Image:
    """Rotate the hue of an RGB image by `shift` turns (−0.5…0.5), as torchvision's adjust_hue does.

    PIL's HSV hue channel is a uint8 in [0, 255] covering one turn; adding `shift·255` modulo 256 is
    the uint8 rotation torchvision applies to PIL images.
    """
    if shift == 0.0:
        return image
    h, s, v = image.convert("HSV").split()
    rotated = (np.asarray(h, dtype=np.int16) + round(shift * 255)) % 256
    return Image.merge("HSV", (Image.fromarray(rotated.astype(np.uint8), "L"), s, v)).convert("RGB")


def color_jitter(image: Image.Image, factors: tuple[float, float, float, float],
                 order: Sequence[int] = (0, 1, 2, 3)) -> Image.Image:
    """Brightness, contrast, saturation (multiplicative factors) and hue shift, applied in `order`."""
    brightness, contrast, saturation, hue = factors
    operations = (
        lambda im: ImageEnhance.Brightness(im).enhance(brightness),
        lambda im: ImageEnhance.Contrast(im).enhance(contrast),
        lambda im: ImageEnhance.Color(im).enhance(saturation),
        lambda im: shift_hue(im, hue),
    )
    for i in order:
        image = operations[i](image)
    return image


def augmented_image(sample: Sample, resolution: int) -> Image.Image:
    """Load, resize straight to `resolution`² (bicubic), flip, jitter: the sample as the model sees it."""
    image = load_image(open_uri(str(sample.path)), name=str(sample.path)).resize((resolution, resolution),
                                                                                  Image.Resampling.BICUBIC)
    if sample.flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return color_jitter(image, sample.jitter, sample.jitter_order)


def pixels_from_images(images: Sequence[Image.Image]) -> torch.Tensor:
    """RGB PIL images of one size → `(B, 3, S, S)` float32 in [−1, 1]."""
    arrays = np.stack([np.asarray(im, dtype=np.float32) for im in images])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2) / 127.5 - 1.0


def pixels_for_samples(samples: Sequence[Sample], resolution: int) -> torch.Tensor:
    """`(B, 3, S, S)` float32 in [−1, 1] of the augmented samples."""
    return pixels_from_images([augmented_image(s, resolution) for s in samples])
