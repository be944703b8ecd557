"""DDPM's forward noising (`add_noise`) with the β schedule of a `scheduler_config.json`, as diffusers'."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from genpromp_annotate.engine.native.config import ModuleConfig, read_config
from genpromp_annotate.engine.native.errors import UnsupportedCheckpoint


class NoiseSchedule:
    """ᾱ_t from β (linear or scaled_linear, or trained betas); `add_noise` = √ᾱ_t·x + √(1−ᾱ_t)·ε."""

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001, beta_end: float = 0.02,
                 beta_schedule: str = "linear", trained_betas: list[float] | None = None,
                 rescale_betas_zero_snr: bool = False, **ignored: Any) -> None:
        self.config = ModuleConfig(num_train_timesteps=num_train_timesteps, beta_start=beta_start, beta_end=beta_end,
                                   beta_schedule=beta_schedule, trained_betas=trained_betas, **ignored)
        if rescale_betas_zero_snr:
            raise UnsupportedCheckpoint("scheduler: rescale_betas_zero_snr = True is not implemented natively")
        if trained_betas is not None:
            betas = torch.tensor(trained_betas, dtype=torch.float32)
        elif beta_schedule == "linear":
            betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
        elif beta_schedule == "scaled_linear":
            betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32) ** 2
        else:
            raise UnsupportedCheckpoint(f"scheduler: beta_schedule = {beta_schedule!r} is not implemented natively")
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)

    @classmethod
    def from_folder(cls, folder: str | Path) -> NoiseSchedule:
        raw = read_config(Path(folder) / "scheduler_config.json")
        return cls(**{k: v for k, v in raw.items() if not k.startswith("_")})

    def add_noise(self, original: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """As diffusers: ᾱ cast to the samples' dtype first, so bf16 samples get bf16 square roots."""
        alphas = self.alphas_cumprod.to(device=original.device, dtype=original.dtype)
        timesteps = timesteps.to(original.device)
        sqrt_alpha = (alphas[timesteps] ** 0.5).flatten()
        sqrt_one_minus = ((1 - alphas[timesteps]) ** 0.5).flatten()
        while sqrt_alpha.ndim < original.ndim:
            sqrt_alpha, sqrt_one_minus = sqrt_alpha.unsqueeze(-1), sqrt_one_minus.unsqueeze(-1)
        return sqrt_alpha * original + sqrt_one_minus * noise
