"""Read safetensors weights (only the tensors a module needs) and load them strictly."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from genpromp_annotate.engine.native.errors import UnsupportedCheckpoint
from genpromp_annotate.errors import ModelLoadError


def read_tensors(path: Path, prefixes: Sequence[str] = ("",)) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file whose names start with one of `prefixes` (others never read)."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        others = sorted(p.name for p in path.parent.glob("*.bin")) + sorted(p.name for p in path.parent.glob("*.safetensors"))
        if others:  # pickled, sharded or variant weights: diffusers and transformers read those, we do not
            raise UnsupportedCheckpoint(f"{path.parent}: weights in {', '.join(others)}, not {path.name}")
        raise ModelLoadError(f"{path}: missing (the folder holds no weights file)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {name: handle.get_tensor(name) for name in handle.keys()  # noqa: SIM118 - not iterable
                    if name.startswith(tuple(prefixes))}
    except (OSError, SafetensorError) as exc:
        raise ModelLoadError(f"{path}: cannot read the weights ({exc})") from exc


def load_strict(module: nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Assign `tensors` to `module`, every one of its tensors and no other (a checkpoint of another layout
    must not load half-way). Missing or misshapen → ModelLoadError naming them; unexpected →
    UnsupportedCheckpoint (diffusers/transformers may know what they are; the native module cannot tell)."""
    expected = {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise ModelLoadError(f"{source}: the weights do not fit the config: missing {len(missing)} weights, "
                             f"e.g. {', '.join(missing[:3])}")
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise UnsupportedCheckpoint(f"{source}: unexpected weights {', '.join(unexpected[:3])}")
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise ModelLoadError(f"{source}: the weights do not fit the config: {name} has shape "
                                 f"{tuple(tensors[name].shape)}, the config implies {shape}")
    module.load_state_dict(tensors, strict=True, assign=True)
