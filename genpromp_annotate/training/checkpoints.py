"""Training checkpoints (atomic save, resume) and the export of learned tokens for diffusers.

A checkpoint is one `torch.save` file written to a temporary name in the same folder, flushed to disk
and renamed over the old one: a crash (or SIGKILL) at any moment leaves either the previous checkpoint
or the new one, never half of one.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import torch

from genpromp_annotate.atomic_files import write_atomic
from genpromp_annotate.engine.tokens import read_learned_embeds, write_learned_embeds
from genpromp_annotate.errors import ConfigError, TokenFileError
from genpromp_annotate.log import get_logger

logger = get_logger(__name__)

CHECKPOINT_FORMAT = 1
LEARNED_EMBEDS_FILE = "learned_embeds.safetensors"



def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any], kind: str = "concept-tokens") -> Path:
    """Atomically write `state` (e.g. `ConceptTrainer.state_dict()`) to `path`."""
    payload = {"format": CHECKPOINT_FORMAT, "kind": kind, "state": state}
    target = write_atomic(Path(path), lambda f: torch.save(payload, f))
    logger.debug("checkpoint written to %s", target)
    return target


def load_checkpoint(path: str | os.PathLike[str], kind: str = "concept-tokens") -> dict[str, Any] | None:
    """The state saved at `path`, or None when there is no checkpoint there."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        # weights_only: a checkpoint holds tensors, numbers, strings and containers, nothing to execute.
        payload = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for unreadable files
        raise ConfigError(f"{path}: not a readable training checkpoint ({exc}); delete it to start over") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path}: checkpoint format {payload.get('format') if isinstance(payload, dict) else '?'},"
                          f" expected {CHECKPOINT_FORMAT}; delete it to start over")
    if payload.get("kind") != kind:
        raise ConfigError(f"{path}: a {payload.get('kind')!r} checkpoint, expected {kind!r}")
    return payload["state"]


def token_slug(token: str) -> str:
    """`"<hot-dog>"` → `"hot-dog"`: a token string as a file or folder name."""
    slug = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in token.strip("<>"))
    return slug.strip(".") or "token"


def export_learned_embeds(path: str | os.PathLike[str], embeddings: dict[str, torch.Tensor]) -> list[Path]:
    """Write learned tokens as files that diffusers' `load_textual_inversion` reads.

    diffusers reads one token per file (`{token: (1, D)}`), so each token gets its own
    `<path>/<token slug>/learned_embeds.safetensors`; with a single token, a `path` ending in
    `.safetensors` is written as that file. Load them all with `pipe.load_textual_inversion(paths)`.
    Every file is written atomically. Returns the paths written, in the order of `embeddings`.
    """
    from safetensors.torch import save

    if not embeddings:
        raise TokenFileError(f"{path}: no learned token to export")
    target = Path(path)
    if target.suffix == ".safetensors":
        if len(embeddings) != 1:
            raise TokenFileError(f"{target}: diffusers reads one token per file, but {len(embeddings)} were given; "
                                 "pass a folder to get one file per token")
        targets = [target]
    else:
        targets = [target / token_slug(token) / LEARNED_EMBEDS_FILE for token in embeddings]
    if len(set(targets)) != len(targets):
        raise TokenFileError(f"{target}: two tokens map to the same file name ({', '.join(embeddings)})")
    for file, (token, vector) in zip(targets, embeddings.items()):
        data = save({token: vector.detach().reshape(1, -1).float().contiguous().cpu()})
        write_atomic(file, partial(_write_bytes, data))
    return targets



def _write_bytes(data: bytes, file: BinaryIO) -> None:
    file.write(data)


__all__ = [
    "LEARNED_EMBEDS_FILE",
    "export_learned_embeds",
    "load_checkpoint",
    "read_learned_embeds",
    "save_checkpoint",
    "write_learned_embeds",
]
