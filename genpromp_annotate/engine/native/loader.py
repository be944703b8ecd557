"""Open a diffusers-layout Stable Diffusion folder with the native modules (no diffusers, no transformers).

Raises `UnsupportedCheckpoint` when any part holds something the native modules do not reproduce
exactly; `engine.loading` then opens the folder with diffusers and transformers instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from genpromp_annotate.engine.native.clip import ClipTextEncoder, ClipTokenizer
from genpromp_annotate.engine.native.schedule import NoiseSchedule
from genpromp_annotate.engine.native.unet import NativeUNet
from genpromp_annotate.engine.native.vae import NativeAutoencoderKL


def load_native_parts(folder: Path, dtype: torch.dtype, device: torch.device) -> dict[str, Any]:
    """Tokenizer, text encoder, UNet, VAE encoder and noise schedule of `folder`, on `device` in `dtype`."""
    return {
        "tokenizer": ClipTokenizer.from_folder(folder / "tokenizer"),
        "text_encoder": ClipTextEncoder.from_folder(folder / "text_encoder", dtype=dtype, device=device),
        "unet": NativeUNet.from_folder(folder / "unet", dtype=dtype, device=device),
        "vae": NativeAutoencoderKL.from_folder(folder / "vae", dtype=dtype, device=device),
        "scheduler": NoiseSchedule.from_folder(folder / "scheduler"),
    }


def load_native_unet(folder: Path, dtype: torch.dtype, device: torch.device) -> NativeUNet:
    """A (finetuned) UNet folder: `config.json` + `diffusion_pytorch_model.safetensors`."""
    return NativeUNet.from_folder(folder, dtype=dtype, device=device)
