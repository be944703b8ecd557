"""The denoising objective both stages share: seeded latents, noise and timesteps → per-sample ε-MSE.

Every draw comes from the sample's own seed (see data.py), so a sample's loss does not depend on the
batch it is computed in.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from genpromp_annotate.engine.loading import StableDiffusion
from genpromp_annotate.engine.prompts import prompt_ids
from genpromp_annotate.training.data import Sample, pixels_for_samples


def sample_draws(seed: int, latent_shape: tuple[int, ...], num_timesteps: int) -> tuple[int, torch.Tensor, torch.Tensor]:
    """One sample's timestep (uniform in [0, T−1]), noise `(C, h, w)` and VAE-sample ε `(C, h, w)`, float32 CPU."""
    generator = torch.Generator().manual_seed(seed)
    timestep = int(torch.randint(0, num_timesteps, (1,), generator=generator))
    noise = torch.randn(latent_shape, generator=generator)
    vae_eps = torch.randn(latent_shape, generator=generator)
    return timestep, noise, vae_eps


@torch.no_grad()
def noisy_latents(model: StableDiffusion, pixels: torch.Tensor, seeds: Sequence[int],
                  timesteps: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """VAE posterior sample × scaling factor, noised with the SD v1 schedule.

    Args:
        pixels: `(B, 3, S, S)` float32 in [−1, 1].
        seeds: one per image; each seeds that image's timestep, noise and posterior sample.
        timesteps: fixed timesteps instead of the seeded uniform draw (evaluation).
    Returns:
        noisy `(B, 4, S/8, S/8)` in the model dtype, timesteps `(B,)` long, target `(B, 4, S/8, S/8)` float32
        (ε, or the velocity for a v-prediction scheduler).
    """
    device, dtype = model.device, model.dtype
    posterior = model.vae.encode(pixels.to(device, dtype)).latent_dist
    shape = tuple(posterior.mean.shape[1:])
    num_timesteps = int(model.scheduler.config.num_train_timesteps)
    draws = [sample_draws(s, shape, num_timesteps) for s in seeds]
    steps = torch.tensor([d[0] for d in draws] if timesteps is None else list(timesteps), device=device)
    noise = torch.stack([d[1] for d in draws]).to(device)
    eps = torch.stack([d[2] for d in draws]).to(device, dtype)
    latents = ((posterior.mean + posterior.std * eps) * model.scaling_factor).float()
    noisy = model.scheduler.add_noise(latents, noise, steps)
    if model.scheduler.config.get("prediction_type", "epsilon") == "v_prediction":
        target = model.scheduler.get_velocity(latents, noise, steps)
    else:
        target = noise
    return noisy.to(dtype), steps, target.float()


def prompt_batch(tokenizer, token_ids: Sequence[int], templates: Sequence[str], device: torch.device) -> torch.Tensor:
    """`(B, 77)` long: each template with its category token spliced in by id."""
    rows = [prompt_ids(tokenizer, token_id, template)[0] for token_id, template in zip(token_ids, templates)]
    return torch.tensor(rows, dtype=torch.long, device=device)


def per_sample_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`(B,)` float32 mean squared error per sample."""
    return (prediction.float() - target.float()).pow(2).flatten(1).mean(dim=1)


def load_pixels(samples: Sequence[Sample], resolution: int) -> torch.Tensor:
    """`(B, 3, S, S)` float32 in [−1, 1], augmented as each sample says."""
    return pixels_for_samples(samples, resolution)
