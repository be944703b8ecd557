"""Compressed per-image maps keyed by maps version, for `benchmark --resume` and threshold re-sweeps.

Layout: `<root>/<maps version>/<image_id>.npz`, one file per image (the image id keeps its extension and
its folders: `a/b.jpg` → `a/b.jpg.npz`), each holding

    map     (S, S) float16, the engine's normalised map in [0, 1] (S = image_size, 512)
    label   the label string the map was computed for
    size    (2,) int64, the original (width, height) of the image

float16 halves the store (and compresses well) while staying far below the uint8 quantisation the box
rule applies (step 1/255 vs float16's ≤ 2⁻¹¹ near 1). Metrics are always computed from the stored
(float16) maps, so a fresh run, a resumed run and a re-sweep give identical numbers.

The maps version is a model version (`store.model_version`) whose settings key keeps only what changes
the maps (ω, timesteps, resolutions, image size, noise, latent, seed and forced meta words), not τ or the
box rule: a re-sweep of τ finds every map already cached. Every file is written atomically (temporary
file, then rename), so a killed run leaves only whole maps behind.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath

import numpy as np

from genpromp_annotate.atomic_files import write_atomic
from genpromp_annotate.errors import ConfigError
from genpromp_annotate.log import get_logger
from genpromp_annotate.presets import LocalizeConfig
from genpromp_annotate.store.model_version import model_version_for

logger = get_logger(__name__)

MAP_SUFFIX = ".npz"
MANIFEST = "manifest.json"


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


class MapCache:
    """The maps of one maps version under `<root>/<version>/`.

    Usage:
        cache = MapCache(Path("maps"), "gp-0123456789ab")
        cache.save("a/b.jpg", map_512, "cat", 320, 200)
        cache.load("a/b.jpg").map        # (512, 512) float32
    """

    def __init__(self, root: Path, version: str) -> None:
        if not version or "/" in version or version in (".", ".."):
            raise ConfigError(f"map cache: version must be a plain folder name, got {version!r}")
        self.root = Path(root)
        self.version = version
        self.folder = self.root / version

    def path_for(self, image_id: str) -> Path:
        """`<root>/<version>/<image_id>.npz`."""
        return self.folder / f"{_relative_id(image_id)}{MAP_SUFFIX}"

    def save(self, image_id: str, map_s: np.ndarray, label: str, width: int, height: int) -> Path:
        """Store one `(S, S)` map in [0, 1] as float16, atomically. Returns the file."""
        array = np.asarray(map_s)
        if array.ndim != 2:
            raise ConfigError(f"map cache: map of {image_id!r} must be 2-D (S, S), got shape {array.shape}")
        path = self.path_for(image_id)
        map16, size = array.astype(np.float16), np.array([width, height], dtype=np.int64)
        write_atomic(path, lambda f: np.savez_compressed(f, map=map16, label=np.array(label), size=size))
        return path

    def load(self, image_id: str) -> CachedMap:
        """The stored map; ConfigError naming the file when it is missing or unreadable."""
        path = self.path_for(image_id)
        if not path.is_file():
            raise ConfigError(f"{path}: no cached map for image {image_id!r} (run `benchmark` without the cache)")
        try:
            with np.load(path) as data:
                width, height = (int(v) for v in data["size"])
                return CachedMap(map=data["map"].astype(np.float32), label=str(data["label"]), width=width,
                                 height=height)
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise ConfigError(f"{path}: unreadable cached map ({exc}); delete it to recompute") from exc

    def has(self, image_id: str, label: str | None = None) -> bool:
        """Whether a readable map is stored for `image_id` (and computed for `label`, when given)."""
        path = self.path_for(image_id)
        if not path.is_file():
            return False
        if label is None:
            return True
        try:
            with np.load(path) as data:
                return str(data["label"]) == label
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            logger.warning("%s: unreadable cached map, it will be recomputed", path)
            return False

    def image_ids(self) -> list[str]:
        """Every cached image id, sorted."""
        if not self.folder.is_dir():
            return []
        return sorted(p.relative_to(self.folder).as_posix()[: -len(MAP_SUFFIX)]
                      for p in self.folder.rglob(f"*{MAP_SUFFIX}") if not p.name.startswith("."))

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
