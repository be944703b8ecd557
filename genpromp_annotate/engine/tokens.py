"""The meta-token rule (method §2) and concept tokens added to the tokenizer and the text encoder."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genpromp_annotate.errors import TokenFileError

END_OF_WORD = "</w>"


def embedding_digest(embedding: torch.Tensor) -> str:
    """12 hex digits naming a learned embedding's values (as float32)."""
    return hashlib.sha256(embedding.detach().float().cpu().numpy().tobytes()).hexdigest()[:12]


def versioned_token(token: str, embedding: torch.Tensor) -> str:
    """`<cat>` → `<cat#1a2b3c4d>`: a vocabulary entry owned by these embedding values alone, so that two
    projects (or two token versions) sharing one loaded model never overwrite each other's row."""
    return f"<{token.strip('<>')}#{embedding_digest(embedding)[:8]}>"


def concept_tokens_digest(digests: Mapping[str, str], forced_meta_words: Mapping[str, str] | None = None) -> str:
    """The digest of a token set, part of a model version: label → `embedding_digest`, and label → forced
    meta word (forced words only enter when present, so digests without them stay unchanged)."""
    items = sorted(digests.items())
    forced = sorted((forced_meta_words or {}).items())
    if not items and not forced:
        return "none"
    return hashlib.sha256(repr((items, forced) if forced else items).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class MetaToken:
    """The vocabulary word that names a category."""

    word: str  # text form, e.g. "goldfish" or "ch" (a BPE piece without its end-of-word marker)
    token_id: int
    whole_word: bool  # False when the sub-word fallback was taken


def synonym_last_words(category: str) -> list[str]:
    """`"electric ray, crampfish, numbfish"` → `["ray", "crampfish", "numbfish"]`."""
    words = []
    for synonym in category.split(","):
        parts = synonym.strip().split(" ")
        if parts and parts[-1]:
            words.append(parts[-1])
    return words


def meta_token_for(category: str, tokenizer: Any) -> MetaToken:
    """The meta token of a category string, reproducing the reference rule exactly.

    The last word of each comma-separated synonym is tried in order; the first one that the tokenizer
    encodes to exactly one token wins. Otherwise the LAST BPE piece of the first synonym's last word is
    taken (`tench` → `ch`).
    """
    words = synonym_last_words(category)
    if not words:
        raise TokenFileError(f"category {category!r} has no word to take a meta token from")
    for word in words:
        ids = tokenizer(word, add_special_tokens=False).input_ids
        if len(ids) == 1:
            return MetaToken(word=word, token_id=int(ids[0]), whole_word=True)
    ids = tokenizer(words[0], add_special_tokens=False).input_ids
    last_id = int(ids[-1])
    piece = tokenizer.convert_ids_to_tokens(last_id)
    return MetaToken(word=piece.removesuffix(END_OF_WORD), token_id=last_id, whole_word=False)


def concept_token_name(label: str, prefix: str = "") -> str:
    """A fresh token string for a category, e.g. `<goldfish>` or `<cub-17>` (spaces become dashes)."""
    slug = "-".join(label.split(",")[0].strip().lower().split())
    return f"<{prefix}{slug}>"


def add_concept_tokens(tokenizer: Any, text_encoder: Any, embeddings: dict[str, torch.Tensor]) -> dict[str, int]:
    """Add each token to the tokenizer and set its input-embedding row in the text encoder.

    Args:
        embeddings: token string → embedding `(dim,)` (a `(1, dim)` tensor is accepted).
    Returns:
        token string → token id.
    """
    new_tokens = [t for t in embeddings if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]
    if new_tokens:
        tokenizer.add_tokens(new_tokens)
    table = text_encoder.get_input_embeddings()
    if table.weight.shape[0] < len(tokenizer):
        text_encoder.resize_token_embeddings(len(tokenizer))
        table = text_encoder.get_input_embeddings()
    ids: dict[str, int] = {}
    with torch.no_grad():
        for token, vector in embeddings.items():
            vector = vector.reshape(-1)
            if vector.shape[0] != table.weight.shape[1]:
                raise TokenFileError(
                    f"embedding for {token} has {vector.shape[0]} dims, the text encoder expects {table.weight.shape[1]}"
                )
            token_id = int(tokenizer.convert_tokens_to_ids(token))
            table.weight[token_id] = vector.to(table.weight.dtype).to(table.weight.device)
            ids[token] = token_id
    return ids


def read_learned_embeds(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a textual-inversion file (diffusers `{token: (n, dim)}` or A1111 `string_to_param`).

    Returns token → `(dim,)` float32. Multi-vector tokens are refused: GenPromp learns one vector.
    """
    path = Path(path)
    if not path.is_file():
        raise TokenFileError(f"{path}: no such token file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw: dict[str, Any] = load_file(str(path))
        else:
            raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors/torch raise various types for unreadable files
        raise TokenFileError(f"{path}: not a readable textual-inversion file ({exc})") from exc
    if "string_to_param" in raw:
        name = raw.get("name") or path.stem
        raw = {f"<{name}>": next(iter(raw["string_to_param"].values()))}
    result: dict[str, torch.Tensor] = {}
    for token, tensor in raw.items():
        if not isinstance(tensor, torch.Tensor):
            raise TokenFileError(f"{path}: entry {token!r} is not a tensor")
        if tensor.dim() == 2 and tensor.shape[0] != 1:
            raise TokenFileError(f"{path}: token {token!r} has {tensor.shape[0]} vectors; only 1 is supported")
        result[token] = tensor.reshape(-1).float()
    if not result:
        raise TokenFileError(f"{path}: holds no token")
    return result


def write_learned_embeds(path: str | os.PathLike[str], embeddings: dict[str, torch.Tensor]) -> Path:
    """Write `{token: (1, dim)}` as safetensors, the layout diffusers' `load_textual_inversion` reads."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({t: v.detach().reshape(1, -1).float().contiguous().cpu() for t, v in embeddings.items()}, str(path))
    return path
