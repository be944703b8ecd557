"""The tiny model: SD v1 layout, deterministic in its seed, real CLIP tokenizer."""

import json

from genpromp_annotate.engine.loading import load_stable_diffusion, weights_digest
from genpromp_annotate.engine.tiny_model import make_tiny_model


def test_layout_is_sd_v1(tiny_model_dir):
    unet = json.loads((tiny_model_dir / "unet" / "config.json").read_text())
    assert unet["down_block_types"] == ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]
    assert unet["up_block_types"] == ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3
    assert unet["mid_block_type"] == "UNetMidBlock2DCrossAttn"
    assert unet["layers_per_block"] == 2 and unet["sample_size"] == 64
    vae = json.loads((tiny_model_dir / "vae" / "config.json").read_text())
    assert len(vae["block_out_channels"]) == 4  # 512 px → 64 latent
    index = json.loads((tiny_model_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"


def test_same_seed_same_model_other_seed_other_model(tiny_model_dir, tmp_path):
    tiny_model = load_stable_diffusion(tiny_model_dir, device="cpu", runtime="diffusers")  # every weight
    again = load_stable_diffusion(make_tiny_model(tmp_path / "a", seed=0), device="cpu", runtime="diffusers")
    other = load_stable_diffusion(make_tiny_model(tmp_path / "b", seed=1), device="cpu", runtime="diffusers")
    for part in ("unet", "vae", "text_encoder"):
        assert weights_digest(getattr(tiny_model, part)) == weights_digest(getattr(again, part))
        assert weights_digest(getattr(tiny_model, part)) != weights_digest(getattr(other, part))


def test_diffusers_pipeline_opens_the_folder(tiny_model_dir):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model_dir, safety_checker=None, local_files_only=True)
    assert pipe.tokenizer("a photo of a goldfish").input_ids == [49406, 320, 1125, 539, 320, 40293, 49407]
