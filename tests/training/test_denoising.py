"""The shared objective: seeded draws, batch-independent noising, ε target."""

from __future__ import annotations

import torch

from genpromp_annotate.training.data import pixels_from_images
from genpromp_annotate.training.denoising import noisy_latents, per_sample_mse, prompt_batch, sample_draws


def test_draws_depend_only_on_the_seed():
    a = sample_draws(7, (4, 8, 8), 1000)
    b = sample_draws(7, (4, 8, 8), 1000)
    assert a[0] == b[0] and 0 <= a[0] < 1000
    assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])
    assert not torch.equal(a[1], a[2])  # noise and posterior sample are different draws


def test_a_samples_noising_does_not_depend_on_its_batch(tiny_model, make_image):
    from PIL import Image

    images = [Image.open(make_image(f"{i}.png", size=(64, 64), seed=i)).convert("RGB") for i in range(3)]
    pixels = pixels_from_images(images)
    batch = noisy_latents(tiny_model, pixels, [11, 12, 13])
    alone = noisy_latents(tiny_model, pixels[1:2], [12])
    assert torch.equal(batch[1][1:2], alone[1])  # same timestep
    # Tolerance: the VAE runs on a batch of 3 vs 1 (float32 kernel order), ~1e-6.
    assert torch.allclose(batch[0][1:2], alone[0], atol=1e-5)
    assert torch.equal(batch[2][1:2], alone[2])  # the ε target is the seeded noise itself
    assert batch[0].shape == (3, 4, 8, 8)


def test_per_sample_mse_and_prompt_batch(tiny_model):
    prediction = torch.zeros(2, 1, 2, 2)
    target = torch.stack([torch.ones(1, 2, 2), 2 * torch.ones(1, 2, 2)])
    assert per_sample_mse(prediction, target).tolist() == [1.0, 4.0]
    ids = prompt_batch(tiny_model.tokenizer, [1000, 2000], ["a photo of a {}", "a photo of my {}"], tiny_model.device)
    # every template puts the token at position 5 (BOS, then four one-token words)
    assert ids.shape == (2, 77) and ids[0, 5].item() == 1000 and ids[1, 5].item() == 2000
