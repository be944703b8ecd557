"""model_version: a short, readable name for exactly what produced a box.

`gp-<digest12>` where the digest covers the base model's *content* (`base_model_identity`), the digest
of the concept-token embeddings in use (Localizer.tokens_digest), the UNet finetune digest (or "base")
and the settings that change boxes (LocalizeConfig.box_settings_key: preset, ω, timesteps, resolutions,
τ, ...). Change any of them and the version changes, so `annotate` and the Label Studio backend redo
the boxes; move or copy a model folder and it stays the same.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

VERSION_PREFIX = "gp-"
# The files of a model folder that decide its outputs: weights, configs, tokenizer vocabularies.
MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".json", ".txt", ".model", ".gz")
_CACHE_LOCK = threading.Lock()
_KNOWN: dict[str, str] = {}  # this process's digests by the cache key: versions are asked per request


def _digest_cache_path() -> Path:
    from genpromp_annotate.store.database import genpromp_home

    return genpromp_home() / "cache" / "file-digests.json"


def file_digest(path: Path) -> str:
    """sha256 of a file, cached by (absolute path, size, mtime) so an SD-size model is hashed once."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    if key in _KNOWN:
        return _KNOWN[key]
    cache_path = _digest_cache_path()
    with _CACHE_LOCK:
        try:
            cache = json.loads(cache_path.read_text())
        except (OSError, ValueError):
            cache = {}
        if key in cache:
            _KNOWN[key] = str(cache[key])
            return _KNOWN[key]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    value = digest.hexdigest()
    with _CACHE_LOCK:
        try:
            cache = json.loads(cache_path.read_text())
        except (OSError, ValueError):
            cache = {}
        cache[key] = value
        try:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_path.with_name(f"{cache_path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cache))
            os.replace(tmp, cache_path)  # atomic: concurrent writers lose an entry at worst, never the file
        except OSError:
            pass  # a read-only home only costs a re-hash next time
    _KNOWN[key] = value
    return value


def base_model_identity(source: str) -> str:
    """What names a base model in a version: a digest of its files' content for a local file or
    folder (its path does not matter), else the hub id itself (all there is without a download)."""
    path = Path(str(source)).expanduser()
    if path.is_file():
        return "sha256:" + file_digest(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MODEL_FILE_SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        listing = "\n".join(f"{p.relative_to(path).as_posix()} {file_digest(p)}" for p in files)
        return "sha256:" + hashlib.sha256(listing.encode("utf-8")).hexdigest()
    return f"hub:{source}"


@dataclass(frozen=True)
class ModelVersionParts:
    """The inputs of a model version; `name` is derived from them."""

    base_model: str  # the project's base model as given (folder, file or hub id), for display
    tokens_digest: str  # Localizer.tokens_digest ("none" when no concept token is learned)
    unet: str  # weights digest of the selected finetuned UNet, or "base"
    settings_key: str  # LocalizeConfig.box_settings_key
    base_model_id: str = field(default="")  # base_model_identity(base_model): what the name hashes

    @property
    def name(self) -> str:
        payload = f"{self.base_model_id or self.base_model}\n{self.tokens_digest}\n{self.unet}\n{self.settings_key}"
        return VERSION_PREFIX + hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, **asdict(self)}


def model_version_for(base_model: str, tokens_digest: str, unet: str | None, settings_key: str) -> ModelVersionParts:
    """The model version of a base model + token set + UNet (None = the base model's) + box settings.

    Example: `model_version_for("/models/sd15", "none", None, config.box_settings_key).name` →
    `"gp-…"` (12 hex digits).
    """
    return ModelVersionParts(base_model=str(base_model), tokens_digest=tokens_digest or "none",
                             unet=unet or "base", settings_key=settings_key,
                             base_model_id=base_model_identity(str(base_model)))
