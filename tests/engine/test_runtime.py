"""Which modules open a model folder: the native ones where they reproduce it, diffusers otherwise, and the
same maps and boxes either way."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from genpromp_annotate.engine.loading import choose_runtime, load_finetuned_unet, load_stable_diffusion
from genpromp_annotate.engine.localizer import Localizer
from genpromp_annotate.errors import ModelLoadError
from genpromp_annotate.presets import preset


def test_a_diffusers_folder_opens_with_the_native_modules_by_default(tiny_model):
    assert tiny_model.runtime == "native"
    for part in (tiny_model.unet, tiny_model.vae, tiny_model.text_encoder, tiny_model.tokenizer):
        assert type(part).__module__.startswith("genpromp_annotate.engine.native.")


def test_genpromp_runtime_diffusers_opens_it_with_diffusers(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("GENPROMP_RUNTIME", "diffusers")
    model = load_stable_diffusion(tiny_model_dir, device="cpu", dtype="float32")
    assert model.runtime == "diffusers"
    assert type(model.unet).__name__ == "UNet2DConditionModel"
    assert type(model.text_encoder).__name__ == "CLIPTextModel"


def test_an_unknown_runtime_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("GENPROMP_RUNTIME", "fast")
    with pytest.raises(ModelLoadError, match="GENPROMP_RUNTIME.*auto, native, diffusers.*'fast'"):
        choose_runtime()


def test_training_always_opens_with_diffusers(tiny_model_dir):
    assert load_stable_diffusion(tiny_model_dir, device="cpu", training=True).runtime == "diffusers"


def _images(seed: int, size: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    images = []
    for shape in ((size, size), (size + 13, size - 7), (size // 2, size)):
        array = rng.integers(0, 255, (*shape, 3), dtype=np.uint8)
        array[shape[0] // 4 : shape[0] // 2, shape[1] // 4 : shape[1] // 2] = 255
        images.append(Image.fromarray(array))
    return images


@pytest.mark.parametrize("which", ["tiny", "toy"])
def test_both_runtimes_give_the_same_maps_and_boxes(which, tiny_model, tiny_model_dir, toy_model, toy_model_dir):
    native = tiny_model if which == "tiny" else toy_model
    folder = tiny_model_dir if which == "tiny" else toy_model_dir
    assert native.runtime == "native"
    reference = load_stable_diffusion(folder, device="cpu", dtype="float32", runtime="diffusers")
    config = preset("toy") if which == "toy" else None
    localizers = [Localizer(m, config) if config else Localizer(m) for m in (native, reference)]
    embedding = torch.randn(native.text_encoder.get_input_embeddings().weight.shape[1],
                            generator=torch.Generator().manual_seed(3))
    for loc in localizers:  # a learned concept token too: the text encoder's table grows by one row
        loc.set_concept_token("cat", embedding, "<cat-runtime-test>")
    images = _images(0, localizers[0].config.image_size)
    labels = ["cat", "dog", "cat"]
    maps = [loc.compute_maps(images, labels).numpy() for loc in localizers]
    assert np.abs(maps[0] - maps[1]).max() <= 1e-4
    boxes = [[r.boxes for r in loc.localize(images, labels)] for loc in localizers]
    assert boxes[0] == boxes[1]


def _copy_with_unet_config(folder, tmp_path, **changes):
    copy = tmp_path / "model"
    shutil.copytree(folder, copy)
    config_path = copy / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    config.update(changes)
    config_path.write_text(json.dumps(config))
    return copy


def test_a_part_the_native_modules_cannot_reproduce_falls_back_to_diffusers(tiny_model_dir, tmp_path):
    # upcast_attention changes fp16 arithmetic only: diffusers opens the folder with the same weights
    copy = _copy_with_unet_config(tiny_model_dir, tmp_path, upcast_attention=True)
    assert load_stable_diffusion(copy, device="cpu", dtype="float32").runtime == "diffusers"
    with pytest.raises(ModelLoadError, match="native runtime cannot open.*upcast_attention"):
        load_stable_diffusion(copy, device="cpu", dtype="float32", runtime="native")


def test_the_native_runtime_opens_folders_only(tmp_path):
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="native runtime opens diffusers folders only"):
        load_stable_diffusion(checkpoint, device="cpu", runtime="native")


def test_a_finetuned_unet_of_a_native_model_is_native_too(tiny_model, tiny_model_dir, tmp_path):
    tuned_dir = tmp_path / "tuned"
    shutil.copytree(tiny_model_dir / "unet", tuned_dir)
    tuned = load_finetuned_unet(tiny_model, str(tuned_dir))
    assert type(tuned).__module__ == "genpromp_annotate.engine.native.unet"
    assert not any(p.requires_grad for p in tuned.parameters())
    base = tiny_model.unet.state_dict()
    assert all(torch.equal(tensor, base[name]) for name, tensor in tuned.state_dict().items())


def test_a_localize_process_imports_neither_diffusers_nor_transformers(tiny_model_dir, make_image):
    image = make_image("photo.jpg", size=(80, 60))
    script = (
        "import json, sys\n"
        "from genpromp_annotate.cli import cli\n"
        f"cli(['localize', '--model', {str(tiny_model_dir)!r}, '--label', 'cat', {str(image)!r}],"
        " standalone_mode=False)\n"
        "print(json.dumps(sorted({'diffusers', 'transformers'} & set(sys.modules))))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "GENPROMP_RUNTIME"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False,
                          env={**env, "GENPROMP_CPU_DTYPE": "float32", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    assert '"boxes"' in done.stdout


def test_bf16_maps_are_bit_equal_between_runtimes(tiny_model_dir):
    models = [load_stable_diffusion(tiny_model_dir, device="cpu", dtype="bfloat16", runtime=runtime)
              for runtime in ("native", "diffusers")]
    images = _images(1, 512)
    maps = [Localizer(model).compute_maps(images, ["cat", "dog", "cat"]).numpy() for model in models]
    assert np.array_equal(maps[0], maps[1])


def test_a_folder_with_bin_weights_opens_with_diffusers(tiny_model_dir, tmp_path):
    from diffusers import UNet2DConditionModel

    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    (copy / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    UNet2DConditionModel.from_pretrained(tiny_model_dir / "unet").save_pretrained(copy / "unet", safe_serialization=False)
    model = load_stable_diffusion(copy, device="cpu", dtype="float32")
    assert model.runtime == "diffusers"
