"""Compressed maps keyed by maps version, for `benchmark --resume` and threshold re-sweeps.

Layout: `<root>/<maps version>/shards/shard-….npz`, one file per `shard_size` maps (default 256; the format
and why it was chosen: `map_shards.py`), plus `manifest.json`. Each map is stored as

    map     (S, S) float16, the engine's normalised map in [0, 1] (S = image_size, 512)
    label   the label string the map was computed for
    size    the original (width, height) of the image

float16 halves the store (and compresses well) while staying far below the uint8 quantisation the box
rule applies (step 1/255 vs float16's ≤ 2⁻¹¹ near 1). Metrics are always computed from the stored
(float16) maps, so a fresh run, a resumed run and a re-sweep give identical numbers.

The maps version is a model version (`store.model_version`) whose settings key keeps only what changes
the maps (ω, timesteps, resolutions, image size, noise, latent, seed and forced meta words), not τ or the
box rule: a re-sweep of τ finds every map already cached.

Writing: `save` buffers maps; every `shard_size` of them, and on `flush()` (or leaving `with cache:`),
they are written as one new shard, atomically (temporary file, then rename). A killed run loses at most
the unflushed buffer; a temporary file it leaves is never read. Shard names are unique per writer, so two
processes filling the same version do not clobber each other, and a later shard's map of an image
supersedes an earlier one's. Opening the cache reads only the shards' indexes; an unreadable shard is
skipped with a warning (its maps are recomputed), never hiding the other shards' maps.

Caches written before shards (`<root>/<version>/<image_id>.npz`, one file per image: `a/b.jpg` →
`a/b.jpg.npz`) are still read, never written: a map saved again goes into a shard and supersedes the file.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np

from genpromp_annotate.atomic_files import write_atomic
from genpromp_annotate.errors import ConfigError
from genpromp_annotate.evaluation.map_shards import (
    ShardBuffer,
    ShardReader,
    ShardRow,
    is_shard_name,
    new_shard_name,
    read_index,
)
from genpromp_annotate.log import get_logger
from genpromp_annotate.presets import LocalizeConfig
from genpromp_annotate.store.model_version import model_version_for

if TYPE_CHECKING:
    from typing import Self  # Python 3.11+; the package still imports on 3.10

logger = get_logger(__name__)

MAP_SUFFIX = ".npz"  # of the old per-image files
MANIFEST = "manifest.json"
SHARDS = "shards"
SHARD_SIZE = 256  # maps per shard: ≈ 200 files for ImageNet val; a 512² buffer holds ≈ 100 MB compressed


def maps_settings_key(config: LocalizeConfig, meta_words: Mapping[str, str] | None = None) -> str:
    """The settings that change maps (not τ, not the box rule), as a stable string.

    Args:
        meta_words: label → forced meta word (`Localizer.set_meta_word`); a single `"*"` key means all labels.
    """
    forced = ",".join(f"{k}={v}" for k, v in sorted((meta_words or {}).items()))
    return (f"maps|w{config.omega}|t{','.join(map(str, config.timesteps))}|r{','.join(map(str, config.resolutions))}"
            f"|s{config.image_size}|n{int(config.add_noise)}|{config.latent}|seed{config.seed}|meta[{forced}]"
            f"{config.refinement_key}")


def maps_version(base_model: str, tokens_digest: str, config: LocalizeConfig, unet: str | None = None,
                 meta_words: Mapping[str, str] | None = None) -> str:
    """`gp-<digest12>` naming the maps of a base model + tokens + UNet + map settings."""
    return model_version_for(base_model, tokens_digest, unet, maps_settings_key(config, meta_words)).name


@dataclass(frozen=True)
class CachedMap:
    """One stored map, read back as float32."""

    map: np.ndarray  # (S, S) float32 in [0, 1] (float16 values)
    label: str
    width: int
    height: int


def _relative_id(image_id: str) -> PurePosixPath:
    """The image id as a safe relative path (no absolute path, no `..`)."""
    rel = PurePosixPath(image_id.replace("\\", "/"))
    if not image_id or rel.is_absolute() or ".." in rel.parts:
        raise ConfigError(f"map cache: image id {image_id!r} must be a relative path without '..'")
    return rel


def _load_legacy(path: Path, image_id: str) -> CachedMap:
    """A map of the old one-file-per-image layout."""
    try:
        with np.load(path) as data:
            width, height = (int(v) for v in data["size"])
            return CachedMap(map=data["map"].astype(np.float32), label=str(data["label"]), width=width,
                             height=height)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"{path}: unreadable cached map of image {image_id!r} ({exc}); delete it to "
                          "recompute") from exc


class MapCache:
    """The maps of one maps version under `<root>/<version>/`.

    Usage:
        with MapCache(Path("maps"), "gp-0123456789ab") as cache:   # leaving it flushes the buffer
            cache.save("a/b.jpg", map_512, "cat", 320, 200)
        MapCache(Path("maps"), "gp-0123456789ab").load("a/b.jpg").map   # (512, 512) float32

    Pickles (the scoring workers get a copy): pickling flushes first, and the copy carries the index.
    """

    _buffer: ShardBuffer | None = None  # class default: `__del__` may run on a half-built instance

    def __init__(self, root: Path, version: str, shard_size: int = SHARD_SIZE) -> None:
        if not version or "/" in version or version in (".", ".."):
            raise ConfigError(f"map cache: version must be a plain folder name, got {version!r}")
        if shard_size < 1:
            raise ConfigError(f"map cache: shard_size must be at least 1, got {shard_size}")
        self.root = Path(root)
        self.version = version
        self.folder = self.root / version
        self.shard_size = shard_size
        self.skipped: list[Path] = []  # unreadable shards, left out of the index
        self._shards: list[Path] = []  # oldest first
        self._index: dict[str, tuple[int, ShardRow]] = {}  # image id → (number in _shards, row)
        self._reader = ShardReader()
        self._legacy = self._has_legacy_files()
        for path in sorted(self.folder.joinpath(SHARDS).glob("shard-*.npz")):
            if is_shard_name(path.name):
                self._add_shard(path)

    def _add_shard(self, path: Path, rows: list[ShardRow] | None = None) -> None:
        if rows is None:
            try:
                rows = read_index(path)
            except ConfigError as exc:
                logger.warning("%s; its maps will be recomputed", exc)
                self.skipped.append(path)
                return
        self._shards.append(path)
        number = len(self._shards) - 1
        self._index.update((row.image_id, (number, row)) for row in rows)  # later rows supersede

    def _has_legacy_files(self) -> bool:
        """Whether the folder holds anything besides the manifest and the shards (old per-image files)."""
        try:
            with os.scandir(self.folder) as entries:
                return any(e.name not in (MANIFEST, SHARDS) and not e.name.startswith(".") for e in entries)
        except (FileNotFoundError, NotADirectoryError):
            return False

    def _legacy_file(self, image_id: str) -> Path | None:
        if not self._legacy:
            return None
        path = self.folder / f"{_relative_id(image_id)}{MAP_SUFFIX}"
        return path if path.is_file() else None

    def _row(self, image_id: str) -> ShardRow | None:
        """The newest row of `image_id`: the write buffer, then the shards."""
        if self._buffer is not None and image_id in self._buffer.latest:
            return self._buffer.latest[image_id]
        entry = self._index.get(image_id)
        return None if entry is None else entry[1]

    def path_for(self, image_id: str) -> Path | None:
        """The file holding the stored map (a shard, or an old per-image file); None when not on disk
        (never stored, or still in the write buffer)."""
        if self._buffer is not None and image_id in self._buffer.latest:
            return None
        entry = self._index.get(image_id)
        return self._shards[entry[0]] if entry is not None else self._legacy_file(image_id)

    def save(self, image_id: str, map_s: np.ndarray, label: str, width: int, height: int) -> None:
        """Buffer one `(S, S)` map in [0, 1] as float16; a full buffer is written as a shard."""
        _relative_id(image_id)
        array = np.asarray(map_s)
        if array.ndim != 2:
            raise ConfigError(f"map cache: map of {image_id!r} must be 2-D (S, S), got shape {array.shape}")
        if self._buffer is not None and self._buffer.finished:
            self.flush()  # an earlier flush failed (disk full, Ctrl-C): write those maps first
        if self._buffer is None:
            self._buffer = ShardBuffer()
        self._buffer.add(image_id, array.astype(np.float16), str(label), int(width), int(height))
        if len(self._buffer.rows) >= self.shard_size:
            self.flush()

    def flush(self) -> Path | None:
        """Write the buffered maps as one new shard, atomically. Returns it (None: nothing was buffered)."""
        if self._buffer is None:
            return None
        data = self._buffer.finish()
        path = write_atomic(self.folder / SHARDS / new_shard_name(), lambda f: f.write(data))
        self._add_shard(path, self._buffer.rows)
        self._buffer = None
        return path

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.flush()  # on an error or Ctrl-C too: the maps computed so far are kept

    def __getstate__(self) -> dict[str, object]:
        self.flush()
        return self.__dict__.copy()

    def __del__(self) -> None:
        if self._buffer is not None and self._buffer.rows:
            logger.warning("%s: %d map(s) were saved but never flushed and are lost (call flush() or use "
                           "`with MapCache(...)`)", self.folder, len(self._buffer.rows))

    def load(self, image_id: str) -> CachedMap:
        """The stored map (a buffered one is flushed first); ConfigError naming the file when it is missing
        or unreadable."""
        if self._buffer is not None and image_id in self._buffer.latest:
            self.flush()
        entry = self._index.get(image_id)
        if entry is not None:
            shard, row = entry
            map16 = self._reader.read(self._shards[shard], row)
            return CachedMap(map=map16.astype(np.float32), label=row.label, width=row.width, height=row.height)
        legacy = self._legacy_file(image_id)
        if legacy is not None:
            return _load_legacy(legacy, image_id)
        skipped = f"; {len(self.skipped)} unreadable shard(s) were skipped" if self.skipped else ""
        raise ConfigError(f"{self.folder}: no cached map for image {image_id!r}{skipped} (run `benchmark` without "
                          "the cache)")

    def has(self, image_id: str, label: str | None = None) -> bool:
        """Whether a map is stored for `image_id` (and computed for `label`, when given). Shards answer from
        their index; an old per-image file is opened to read its label."""
        row = self._row(image_id)
        if row is not None:
            return label is None or row.label == label
        path = self._legacy_file(image_id)
        if path is None or label is None:
            return path is not None
        try:
            with np.load(path) as data:
                return str(data["label"]) == label
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            logger.warning("%s: unreadable cached map, it will be recomputed", path)
            return False

    def image_ids(self) -> list[str]:
        """Every cached image id (shards, write buffer, old per-image files), sorted."""
        ids = set(self._index)
        if self._buffer is not None:
            ids.update(self._buffer.latest)
        if self._legacy:
            shards = self.folder / SHARDS
            ids.update(p.relative_to(self.folder).as_posix()[: -len(MAP_SUFFIX)]
                       for p in self.folder.rglob(f"*{MAP_SUFFIX}")
                       if not p.name.startswith(".") and not p.is_relative_to(shards))
        return sorted(ids)

    def write_manifest(self, info: Mapping[str, object]) -> Path:
        """Record what produced the maps (model, tokens, settings) as `<root>/<version>/manifest.json`."""
        path = self.folder / MANIFEST
        text = json.dumps({"version": self.version, **info}, indent=2, default=str)
        write_atomic(path, lambda f: f.write(text.encode("utf-8")))
        return path

    def read_manifest(self) -> dict | None:
        path = self.folder / MANIFEST
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def export_wsol(self, image_ids: Iterable[str], out_dir: Path) -> int:
        """Write `<out_dir>/<image_id>.npy` (float32, the stored size) per image, the layout wsolevaluation
        reads (`a/b.jpg` → `a/b.jpg.npy`). Returns the number of files written."""
        count = 0
        for image_id in image_ids:
            target = Path(out_dir) / f"{_relative_id(image_id)}.npy"
            array = self.load(image_id).map
            write_atomic(target, partial(np.save, arr=array))
            count += 1
        return count
