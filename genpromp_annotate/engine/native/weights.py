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

    if not path.is_file():  # e.g. only a .bin or sharded weights, which diffusers reads
        raise UnsupportedCheckpoint(f"{path}: no such file (the native modules read single safetensors files)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {name: handle.get_tensor(name) for name in handle.keys()  # noqa: SIM118 - not iterable
                    if name.startswith(tuple(prefixes))}
    except (OSError, SafetensorError) as exc:
        raise ModelLoadError(f"{path}: cannot read the weights ({exc})") from exc


def load_strict(module: nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Copy `tensors` into `module`; ModelLoadError naming `source` and the first missing, unexpected or
    misshapen names (a checkpoint of another layout must not load half-way)."""
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    misshapen = sorted(name for name in set(own) & set(tensors) if own[name].shape != tensors[name].shape)
    problems = [f"{label}: {', '.join(names[:4])}{' …' if len(names) > 4 else ''}"
                for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen))
                if names]
    if problems:
        raise ModelLoadError(f"{source}: the weights do not fit the config ({'; '.join(problems)})")
    module.load_state_dict(tensors, strict=True, assign=True)
