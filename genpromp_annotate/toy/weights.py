"""The shipped toy model: one fp16 safetensors file in the package, written out as a diffusers folder.

The file holds every tensor of the text encoder, UNet and VAE under `text_encoder.`, `unet.` and `vae.`
prefixes; its metadata holds each part's config, so the folder it becomes is an ordinary SD v1
diffusers folder that `load_stable_diffusion` (or diffusers itself) opens.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from genpromp_annotate.errors import ModelLoadError

PACKAGED_WEIGHTS = "toy-sd.safetensors"
PARTS = ("text_encoder", "unet", "vae")


def packaged_weights_path() -> Path:
    path = Path(str(resources.files("genpromp_annotate.toy").joinpath("weights", PACKAGED_WEIGHTS)))
    if not path.is_file():
        raise ModelLoadError(f"the toy model's weights are missing from the installed package ({path})")
    return path


def _config_of(module: Any) -> dict[str, Any]:
    config = module.config
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def pack_toy_weights(parts: dict[str, Any], path: Path, meta: dict[str, Any] | None = None) -> Path:
    """Write the parts' weights in fp16 with their configs (and `meta`, e.g. the training step) to `path`."""
    from safetensors.torch import save_file

    tensors = {}
    for name in PARTS:
        for key, value in parts[name].state_dict().items():
            tensors[f"{name}.{key}"] = value.detach().half().contiguous()
    metadata = {f"{name}_config": json.dumps(_config_of(parts[name]), default=list) for name in PARTS}
    metadata["scheduler_config"] = json.dumps(dict(parts["scheduler"].config), default=list)
    metadata["meta"] = json.dumps(meta or {}, default=str)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def toy_weights_meta(path: Path | None = None) -> dict[str, Any]:
    """What the shipped file says about itself: training step and validation scores."""
    from safetensors import safe_open

    with safe_open(str(path or packaged_weights_path()), framework="pt") as handle:
        return json.loads((handle.metadata() or {}).get("meta", "{}"))


def write_toy_model(out_dir: str | Path, weights: Path | None = None) -> Path:
    """Write the shipped toy model (fp32) as a diffusers folder into `out_dir`; returns the folder."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from safetensors import safe_open
    from transformers import CLIPTextConfig, CLIPTextModel

    from genpromp_annotate.engine.tiny_model import write_clip_tokenizer_files, write_model_index

    source = weights or packaged_weights_path()
    out = Path(out_dir)
    with safe_open(str(source), framework="pt") as handle:
        metadata = handle.metadata() or {}
        tensors = {key: handle.get_tensor(key).float() for key in handle.keys()}  # noqa: SIM118 (safe_open is no dict)
    try:
        configs = {name: json.loads(metadata[f"{name}_config"]) for name in PARTS}
        scheduler_config = json.loads(metadata["scheduler_config"])
    except KeyError as exc:
        raise ModelLoadError(f"{source} has no {exc.args[0]} in its metadata: not a toy model file") from exc
    modules = {
        "text_encoder": CLIPTextModel(CLIPTextConfig(**configs["text_encoder"])),
        "unet": UNet2DConditionModel.from_config(configs["unet"]),
        "vae": AutoencoderKL.from_config(configs["vae"]),
    }
    for name, module in modules.items():
        prefix = f"{name}."
        state = {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}
        missing, unexpected = module.load_state_dict(state, strict=False)
        # position_ids is a buffer some transformers versions keep and others drop
        if [m for m in missing if not m.endswith("position_ids")] or unexpected:
            raise ModelLoadError(f"{source}: {name} does not match its config (missing {missing}, unexpected {unexpected})")
        with torch.no_grad():
            module.save_pretrained(out / name)
    DDPMScheduler.from_config(scheduler_config).save_pretrained(out / "scheduler")
    write_clip_tokenizer_files(out / "tokenizer")
    write_model_index(out)
    return out


def ensure_toy_model(folder: Path) -> Path:
    """`folder` holding the shipped toy model, written (again) when absent or from other weights."""
    import hashlib

    stamp = folder / "toy-weights.sha256"
    digest = hashlib.sha256(packaged_weights_path().read_bytes()).hexdigest()
    if (folder / "model_index.json").is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
        return folder
    write_toy_model(folder)
    stamp.write_text(digest + "\n")
    return folder
