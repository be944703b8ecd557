"""A deterministic, randomly initialised Stable-Diffusion-v1-shaped model for tests and smoke runs.

It has SD v1's block layout (three cross-attention down blocks and a plain one, a mid block with
attention, the mirrored up path, latent 64×64 at 512 px so attention runs at 64/32/16/8) but tiny
widths, and the real CLIP BPE tokenizer, built offline from the vocabulary file that ships inside the
`open-clip-torch` wheel.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genpromp_annotate.errors import ModelLoadError

BPE_FILE_IN_WHEEL = "open_clip/bpe_simple_vocab_16e6.txt.gz"
# CLIP keeps the first 49152 - 256 - 2 merges of the 16e6 BPE file (the rest never made the vocabulary).
N_CLIP_MERGES = 49152 - 256 - 2
CLIP_MAX_LENGTH = 77


def find_clip_bpe_file() -> Path:
    """Path of `bpe_simple_vocab_16e6.txt.gz` inside the installed `open-clip-torch` distribution.

    Found through the distribution's file list, so `open_clip` itself (which imports torchvision) is
    never imported.
    """
    try:
        dist = importlib.metadata.distribution("open-clip-torch")
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelLoadError(
            "the CLIP vocabulary ships in the open-clip-torch wheel, which is not installed: "
            "run `pip install --no-deps open-clip-torch`"
        ) from exc
    for file in dist.files or []:
        if str(file).replace("\\", "/").endswith(BPE_FILE_IN_WHEEL):
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise ModelLoadError(f"open-clip-torch is installed but {BPE_FILE_IN_WHEEL} is missing from it")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte → printable unicode character table (so BPE never sees raw whitespace/control bytes)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes)))


def write_clip_tokenizer_files(out_dir: Path, bpe_file: Path | None = None) -> Path:
    """Write `vocab.json`, `merges.txt` and the tokenizer configs of CLIP ViT-L/14 into `out_dir`.

    The vocabulary is: the 256 byte symbols, the same with the end-of-word marker `</w>`, one entry
    per kept merge, then `<|startoftext|>` (49406) and `<|endoftext|>` (49407) — 49408 in all.
    """
    bpe_file = bpe_file or find_clip_bpe_file()
    with gzip.open(bpe_file, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 1 + N_CLIP_MERGES]]
    byte_symbols = list(_bytes_to_unicode().values())
    vocab_list = byte_symbols + [s + "</w>" for s in byte_symbols] + ["".join(m) for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out_dir / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8"
    )
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": CLIP_MAX_LENGTH,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        **special,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return out_dir


def load_clip_tokenizer(directory: Path):  # -> transformers.CLIPTokenizer
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(directory))


@dataclass(frozen=True)
class SDV1Widths:
    """Widths of an SD-v1-layout model; the block layout itself is always SD v1's."""

    text_width: int
    text_layers: int
    text_heads: int
    unet_channels: tuple[int, int, int, int]
    unet_heads: int
    unet_norm_groups: int
    vae_channels: tuple[int, int, int, int]
    vae_layers_per_block: int
    vae_norm_groups: int


TINY = SDV1Widths(32, 2, 2, (32, 32, 64, 64), 2, 8, (8, 16, 32, 32), 1, 8)
# Stable Diffusion v1.5's real widths (about 1.07 B parameters), used with random weights by the benchmark.
SD15 = SDV1Widths(768, 12, 12, (320, 640, 1280, 1280), 8, 32, (128, 256, 512, 512), 2, 32)
NAMED_WIDTHS = {"tiny": TINY, "sd15": SD15}  # the sizes the benchmarks take by name


def sd_v1_scheduler():  # -> diffusers.DDPMScheduler
    """SD v1's training schedule (method §4 step 3): 1000 steps, scaled_linear β 0.00085 → 0.012."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                         beta_schedule="scaled_linear", clip_sample=False, steps_offset=1)


def build_sd_v1_components(widths: SDV1Widths = TINY, seed: int = 0) -> dict[str, Any]:
    """Randomly initialised text encoder, UNet, VAE and the SD v1 DDPM scheduler, deterministic in `seed`."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    text_config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=widths.text_width,
        intermediate_size=widths.text_width * 4,
        num_hidden_layers=widths.text_layers,
        num_attention_heads=widths.text_heads,
        max_position_embeddings=CLIP_MAX_LENGTH,
        projection_dim=widths.text_width,
        hidden_act="quick_gelu",
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    text_encoder = CLIPTextModel(text_config)

    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=widths.unet_channels,
        layers_per_block=2,
        cross_attention_dim=widths.text_width,
        attention_head_dim=widths.unet_heads,
        norm_num_groups=widths.unet_norm_groups,
    )

    torch.manual_seed(seed + 2)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=widths.vae_channels,
        layers_per_block=widths.vae_layers_per_block,
        latent_channels=4,
        norm_num_groups=widths.vae_norm_groups,
        sample_size=512,
        scaling_factor=0.18215,
    )

    scheduler = sd_v1_scheduler()
    return {"text_encoder": text_encoder, "unet": unet, "vae": vae, "scheduler": scheduler}


def make_tiny_model(out_dir: str | Path, seed: int = 0, widths: SDV1Widths = TINY) -> Path:
    """Write a tiny SD-v1-layout model in diffusers folder format into `out_dir` and return the path.

    Deterministic for a given `seed`: every weight comes from `torch.manual_seed(seed + k)`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_clip_tokenizer_files(out / "tokenizer")
    parts = build_sd_v1_components(widths, seed)
    for name in ("text_encoder", "unet", "vae", "scheduler"):
        parts[name].save_pretrained(out / name)
    write_model_index(out)
    return out


def write_model_index(out: Path) -> None:
    """The `model_index.json` of an SD v1 pipeline folder (no safety checker, no feature extractor)."""
    model_index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": _version("diffusers"),
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDPMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (out / "model_index.json").write_text(json.dumps(model_index, indent=2))


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
