"""The toy model's architecture: a small Stable Diffusion in SD v1's layout, for 64-px images.

VAE 64 → 16 (three encoder blocks, two downsamples), so the latent is 16×16 and cross-attention runs
where SD v1's maps are read: 16×16 in the first down block and the last up block (2 and 3 layers, as
SD's 16×16 layers) and 8×8 in the mid block (1 layer). The 8×8 down and up blocks have no attention,
as in SD v1. The text encoder is a small CLIPTextModel over the real CLIP vocabulary and tokenizer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from genpromp_annotate.engine.tiny_model import CLIP_MAX_LENGTH, sd_v1_scheduler


@dataclass(frozen=True)
class ToyArchitecture:
    image_size: int = 64
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 2
    unet_channels: tuple[int, int] = (48, 96)
    unet_heads: int = 4
    unet_norm_groups: int = 16
    vae_channels: tuple[int, int, int] = (16, 32, 64)
    vae_norm_groups: int = 8
    token_embedding_std: float = 1.0  # frozen random word vectors; an unseen word is as far from any other

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


TOY = ToyArchitecture()


def build_toy_components(arch: ToyArchitecture = TOY, seed: int = 0) -> dict[str, Any]:
    """Randomly initialised text encoder, UNet, VAE and SD v1's DDPM scheduler, deterministic in `seed`."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=arch.text_width, intermediate_size=arch.text_width * 4,
        num_hidden_layers=arch.text_layers, num_attention_heads=arch.text_heads,
        max_position_embeddings=CLIP_MAX_LENGTH, projection_dim=arch.text_width, hidden_act="quick_gelu",
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    ))
    with torch.no_grad():
        embedding: Any = text_encoder.get_input_embeddings()
        embedding.weight.normal_(0.0, arch.token_embedding_std)

    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(
        sample_size=arch.image_size // 4,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=arch.unet_channels,
        layers_per_block=2,
        cross_attention_dim=arch.text_width,
        attention_head_dim=arch.unet_heads,
        norm_num_groups=arch.unet_norm_groups,
    )

    torch.manual_seed(seed + 2)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(arch.vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(arch.vae_channels),
        block_out_channels=arch.vae_channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=arch.vae_norm_groups,
        sample_size=arch.image_size,
        scaling_factor=1.0,  # set from the trained VAE's latent std before the UNet is trained
    )
    scheduler = sd_v1_scheduler()
    return {"text_encoder": text_encoder, "unet": unet, "vae": vae, "scheduler": scheduler}
