"""Samples and augmentations: seeded per sample, the paper's jitter ranges, PIL colour jitter goldens."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from genpromp_annotate.engine.prompts import TEMPLATES
from genpromp_annotate.errors import ConfigError
from genpromp_annotate.training.data import (
    AugmentConfig,
    CategoryImages,
    augmented_image,
    category_chunks,
    color_jitter,
    draw_sample,
    pixels_for_samples,
    shift_hue,
)


def solid(rgb, size=(8, 8)) -> Image.Image:
    return Image.new("RGB", size, rgb)


def test_identity_jitter_leaves_the_image_unchanged(make_image):
    image = Image.open(make_image("a.png", size=(32, 24))).convert("RGB")
    out = color_jitter(image, (1.0, 1.0, 1.0, 0.0), order=(3, 2, 1, 0))
    assert np.array_equal(np.asarray(out), np.asarray(image))


def test_brightness_is_a_multiplicative_factor():
    # ImageEnhance.Brightness blends with black: 200 · 0.5 = 100 in every channel.
    out = color_jitter(solid((200, 200, 200)), (0.5, 1.0, 1.0, 0.0))
    assert np.asarray(out)[0, 0].tolist() == [100, 100, 100]


def test_saturation_zero_gives_grey_and_contrast_zero_gives_the_mean():
    # Colour factor 0 → the image's luminance L = (299·R + 587·G + 114·B) / 1000 = 76 for pure red.
    grey = np.asarray(color_jitter(solid((255, 0, 0)), (1.0, 1.0, 0.0, 0.0)))[0, 0]
    assert grey.tolist() == [76, 76, 76]
    # Contrast factor 0 → the mean luminance of the image everywhere (one colour: its own luminance).
    flat = np.asarray(color_jitter(solid((255, 0, 0)), (1.0, 0.0, 1.0, 0.0)))[0, 0]
    assert flat.tolist() == [76, 76, 76]


def test_hue_shift_by_a_third_turn_takes_red_to_green_and_blue():
    # PIL's HSV hue is a uint8 with 255 ≙ 360°; red is 0. +1/3 turn adds round(255/3) = 85 → 120°: green.
    assert np.asarray(shift_hue(solid((255, 0, 0)), 1 / 3))[0, 0].tolist() == [0, 255, 0]
    # −1/3 turn: (0 − 85) mod 256 = 171 (the uint8 wrap torchvision uses) → 171·360/255 = 241.4°, just past
    # blue, so red creeps in: R = 255 · 1.41/60 ≈ 6.
    assert np.asarray(shift_hue(solid((255, 0, 0)), -1 / 3))[0, 0].tolist() == [6, 0, 255]


def test_hue_shift_keeps_greys_and_value():
    grey = solid((90, 90, 90))
    assert np.asarray(shift_hue(grey, 0.1))[0, 0].tolist() == [90, 90, 90]
    out = np.asarray(shift_hue(solid((200, 50, 50)), 0.1))[0, 0]
    assert out.max() == 200  # HSV value (the max channel) is untouched


@pytest.fixture()
def category(make_image):
    paths = tuple(make_image(f"img{i}.png", size=(40, 30), seed=i) for i in range(5))
    return CategoryImages("goldfish", "<goldfish>", 1000, paths)


def test_draws_are_seeded_per_sample_and_in_the_paper_ranges(category):
    augment = AugmentConfig(resolution=64)
    first = draw_sample(category, epoch=0, index=2, seed=7, augment=augment)
    assert first == draw_sample(category, epoch=0, index=2, seed=7, augment=augment)
    assert first != draw_sample(category, epoch=1, index=2, seed=7, augment=augment)
    draws = [draw_sample(category, epoch=e, index=i, seed=0, augment=augment) for e in range(40) for i in range(5)]
    assert all(0.9 <= d.jitter[k] <= 1.1 for d in draws for k in range(3))
    assert all(-0.1 <= d.jitter[3] <= 0.1 for d in draws)
    assert {d.template for d in draws} == set(TEMPLATES)
    flips = sum(d.flip for d in draws)
    assert 70 <= flips <= 130  # 200 fair coin flips: mean 100, sd ≈ 7


def test_chunks_visit_every_image_once_per_epoch(category):
    chunks = category_chunks(category, epochs=2, batch_size=2, seed=0, augment=AugmentConfig(resolution=64))
    # 5 images in batches of 2 → 2 + 2 + 1 per epoch.
    assert [len(c) for c in chunks] == [2, 2, 1, 2, 2, 1]
    for epoch in (0, 1):
        seen = sorted(s.index for c in chunks for s in c if s.epoch == epoch)
        assert seen == [0, 1, 2, 3, 4]


def test_augmented_image_is_resized_flipped_and_scaled(category):
    sample = draw_sample(category, 0, 0, 0, AugmentConfig(resolution=64, brightness=0, contrast=0, saturation=0,
                                                           hue=0, flip_p=1.0))
    assert sample.flip
    out = augmented_image(sample, 64)
    plain = Image.open(category.images[0]).convert("RGB").resize((64, 64), Image.BICUBIC)
    assert out.size == (64, 64)
    assert np.array_equal(np.asarray(out), np.asarray(plain)[:, ::-1])
    pixels = pixels_for_samples([sample], 64)
    assert pixels.shape == (1, 3, 64, 64)
    assert float(pixels.min()) >= -1.0 and float(pixels.max()) <= 1.0


def test_invalid_settings_are_refused(category):
    with pytest.raises(ConfigError, match="multiple of 64"):
        AugmentConfig(resolution=100)
    with pytest.raises(ConfigError, match="hue"):
        AugmentConfig(hue=0.7)
    with pytest.raises(ConfigError, match="no images"):
        CategoryImages("empty", "<empty>", 1, ())
