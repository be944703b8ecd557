"""Where a benchmark's maps come from: the engine (through the map cache) or a folder of any method's maps.

    MapProducer   what makes maps (model, finetuned UNet, concept tokens, forced meta words, settings),
                  its maps version, and `fill_cache`, which localizes the images not cached yet
    CachedMaps    reads the engine's maps back from the cache (512 frame, float16 values)
    FolderMaps    reads `<folder>/<image_id>.npy` (wsolevaluation's naming, the id keeping its extension),
                  maps of any size covering the whole image, e.g. another WSOL method's CAMs

Both readers give a `LoadedMap`: the map as stored (for MaxBoxAcc, which resizes to 224 itself), the map in
the engine's square frame (for the τ box rule of the Loc metrics) and the original image size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from genpromp_annotate.errors import ConfigError, GenprompError, ImageError, TokenFileError
from genpromp_annotate.evaluation.layouts import EvalRecord
from genpromp_annotate.evaluation.map_cache import MapCache, maps_version
from genpromp_annotate.presets import LocalizeConfig


class MapReadError(GenprompError):
    """One image's map cannot be read (missing, unreadable, wrong shape): that image is reported as failed."""


@dataclass(frozen=True)
class LoadedMap:
    raw: np.ndarray  # (H, W) float32 as stored
    frame: np.ndarray  # (S, S) float32 in [0, 1], the engine's frame
    width: int
    height: int


def to_frame(map_: np.ndarray, size: int) -> np.ndarray:
    """Any `(H, W)` map → `(size, size)` float32 in [0, 1] (bilinear, as the engine's step 7, then min-max)."""
    array = np.nan_to_num(np.asarray(map_, dtype=np.float32), nan=0.0)
    if array.shape != (size, size):
        array = np.asarray(cv2.resize(array, (size, size), interpolation=cv2.INTER_LINEAR), dtype=np.float32)
    low, high = float(array.min()), float(array.max())
    return np.zeros_like(array) if high <= low else (array - low) / (high - low)


def _open_or_error(record: EvalRecord) -> Any:
    """The image, or the message of the GenprompError that stops it (loader threads return, not raise)."""
    try:
        return open_image(record)
    except GenprompError as exc:
        return str(exc)


def _load_chunk(decode: ThreadPoolExecutor, chunk: Sequence[tuple[EvalRecord, str]]) -> list[Any]:
    """Decode one batch's images on the `decode` threads (PIL releases the GIL while decoding), in order."""
    return [future.result() for future in [decode.submit(_open_or_error, record) for record, _ in chunk]]


def open_image(record: EvalRecord) -> Any:
    """The record's image as upright RGB (a store project's http(s) image is downloaded)."""
    from genpromp_annotate.engine.images import load_image

    if record.uri is not None:
        from genpromp_annotate.sources import open_uri

        try:
            return load_image(open_uri(record.uri), name=record.uri)
        except OSError as exc:
            raise ImageError(record.uri, f"cannot download ({exc})") from exc
    return load_image(record.path, name=str(record.path))


def image_size(record: EvalRecord) -> tuple[int, int]:
    """`(width, height)` from the layout, or else from the image file (EXIF rotation applied)."""
    if record.size is not None:
        return record.size
    return open_image(record).size


class FolderMaps:
    """`<folder>/<image_id>.npy` per image (see the module docstring)."""

    def __init__(self, folder: Path, size: int = 512) -> None:
        self.folder = Path(folder)
        self.size = size
        if not self.folder.is_dir():
            raise ConfigError(f"--maps {self.folder}: no such folder")

    def path_for(self, record: EvalRecord) -> Path:
        return self.folder / f"{record.image_id}.npy"

    def load(self, record: EvalRecord) -> LoadedMap:
        path = self.path_for(record)
        if not path.is_file():
            raise MapReadError(f"{path}: no map for image {record.image_id!r} (expected <maps>/<image_id>.npy)")
        try:
            raw = np.squeeze(np.asarray(np.load(path, allow_pickle=False), dtype=np.float32))
        except (OSError, ValueError, TypeError) as exc:
            raise MapReadError(f"{path}: unreadable map ({exc})") from exc
        if raw.ndim != 2 or min(raw.shape) < 1:
            raise MapReadError(f"{path}: expected a 2-D (H, W) map, got shape {raw.shape}")
        width, height = image_size(record)
        return LoadedMap(raw, to_frame(raw, self.size), width, height)


class CachedMaps:
    """The engine's maps from a MapCache; the label a map was made for must be the record's."""

    def __init__(self, cache: MapCache) -> None:
        self.cache = cache

    def load(self, record: EvalRecord, label: str | None = None) -> LoadedMap:
        entry = self.cache.load(record.image_id)
        if label is not None and entry.label != label:
            raise ConfigError(f"{self.cache.path_for(record.image_id)} (map of {record.image_id!r}): cached for label "
                              f"{entry.label!r}, the dataset says {label!r}; rerun with --overwrite")
        return LoadedMap(entry.map, entry.map, entry.width, entry.height)


# ---- the engine ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConceptToken:
    token: str
    vector: Any  # torch.Tensor (D,)

    @property
    def digest(self) -> str:
        from genpromp_annotate.engine.tokens import embedding_digest

        return embedding_digest(self.vector)


def tokens_digest(tokens: dict[str, ConceptToken]) -> str:
    """Localizer.tokens_digest of these tokens (label → token); forced meta words enter the maps key instead."""
    from genpromp_annotate.engine.tokens import concept_tokens_digest

    return concept_tokens_digest({label: t.digest for label, t in tokens.items()})


def match_tokens(tokens: dict[str, Any], labels: Sequence[str]) -> dict[str, ConceptToken]:
    """label → its learned token: the token named `concept_token_name(label)`, the label, or the label with
    dashes for spaces (case-insensitive, `<…>` optional)."""
    from genpromp_annotate.engine.tokens import concept_token_name

    by_key = {t.strip("<>").lower(): t for t in tokens}
    matched: dict[str, ConceptToken] = {}
    for label in labels:
        for key in (concept_token_name(label).strip("<>"), label.lower(), label.lower().replace(" ", "-")):
            if key in by_key:
                matched[label] = ConceptToken(by_key[key], tokens[by_key[key]])
                break
    return matched


def read_token_files(path: Path) -> dict[str, Any]:
    """Every learned token of a textual-inversion file, or of every such file under a folder."""
    from genpromp_annotate.engine.tokens import read_learned_embeds

    path = Path(path)
    if path.is_file():
        return dict(read_learned_embeds(path))
    files = sorted(p for ext in ("*.safetensors", "*.bin", "*.pt") for p in path.rglob(ext))
    if not files:
        raise TokenFileError(f"{path}: no learned-token file (*.safetensors, *.bin, *.pt) in this folder")
    tokens: dict[str, Any] = {}
    for file in files:
        for token, vector in read_learned_embeds(file).items():
            if token in tokens:
                raise TokenFileError(f"{file}: token {token!r} is also in another file under {path}")
            tokens[token] = vector
    return tokens


def folder_id(path: Path) -> str:
    """A cheap identity of a finetuned UNet folder: its path and its files' sizes and mtimes."""
    stats = sorted((p.relative_to(path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                   for p in Path(path).rglob("*") if p.is_file())
    return hashlib.sha256(repr((str(Path(path).resolve()), stats)).encode()).hexdigest()[:12]


@dataclass
class MapProducer:
    """The engine set-up that makes a benchmark's maps; the model is loaded on first use only."""

    model_source: str
    config: LocalizeConfig
    tokens: dict[str, ConceptToken] = field(default_factory=dict)
    meta_words: dict[str, str] = field(default_factory=dict)  # {"*": word} forces one meta word for all labels
    unet_dir: Path | None = None
    unet_id: str | None = None
    model_config: str | None = None
    device: str | None = None
    dtype: str | None = None
    compile_model: bool = False
    channels_last: bool = False
    _localizer: Any = field(default=None, init=False, repr=False)

    @property
    def version(self) -> str:
        return maps_version(self.model_source, tokens_digest(self.tokens), self.config, self.unet_id, self.meta_words)

    def manifest(self) -> dict[str, Any]:
        return {"model": self.model_source, "unet": str(self.unet_dir) if self.unet_dir else None,
                "tokens": sorted(t.token for t in self.tokens.values()), "meta_words": self.meta_words,
                "config": self.config.as_dict()}

    def localizer(self, labels: Sequence[str]) -> Any:
        """The Localizer (loaded once), with the tokens and meta words of `labels` set."""
        if self._localizer is None:
            from genpromp_annotate.engine.loading import load_stable_diffusion
            from genpromp_annotate.engine.localizer import Localizer

            model = load_stable_diffusion(self.model_source, device=self.device, dtype=self.dtype,
                                          single_file_config=self.model_config)
            if self.unet_dir is not None:
                from genpromp_annotate.engine.loading import load_finetuned_unet

                model.unet = load_finetuned_unet(model, str(self.unet_dir))
            from genpromp_annotate.engine.acceleration import SpeedOptions, accelerate

            accelerate(model, SpeedOptions(compile=self.compile_model, channels_last=self.channels_last))
            self._localizer = Localizer(model, self.config)
        for label in sorted(set(labels)):
            if label in self.tokens:
                self._localizer.set_concept_token(label, self.tokens[label].vector, self.tokens[label].token)
            if "*" in self.meta_words:
                self._localizer.set_meta_word(label, self.meta_words["*"])
        return self._localizer

    def fill_cache(self, cache: MapCache, todo: Sequence[tuple[EvalRecord, str]], batch_size: int,
                   progress: Callable[[int], None] | None = None, loaders: int = 4) -> list[tuple[str, str]]:
        """Localize `(record, label)` pairs batch by batch, saving each map as soon as it exists.

        `loaders` threads decode the next batch's images while the model works on this one. The cache is
        flushed at the end, on an error and on Ctrl-C too, so only a killed process loses maps (at most
        one shard's worth).
        Returns (image id, error) of the images that could not be read; the others are all cached.
        """
        failed: list[tuple[str, str]] = []
        if not todo:
            return failed
        localizer = self.localizer([label for _, label in todo])
        cache.write_manifest(self.manifest())
        chunks = [todo[start : start + batch_size] for start in range(0, len(todo), batch_size)]
        # `cache` is left last: its flush runs after the threads stop, on errors and Ctrl-C too
        with cache, ThreadPoolExecutor(max(1, loaders), thread_name_prefix="image-decode") as decode, \
                ThreadPoolExecutor(1, thread_name_prefix="batch-prefetch") as prefetch:
            pending = prefetch.submit(_load_chunk, decode, chunks[0])
            for index, chunk in enumerate(chunks):
                loaded = pending.result()
                if index + 1 < len(chunks):
                    pending = prefetch.submit(_load_chunk, decode, chunks[index + 1])
                batch = [(record, label, image) for (record, label), image in zip(chunk, loaded)
                         if not isinstance(image, str)]
                failed += [(record.image_id, image) for (record, _), image in zip(chunk, loaded)
                           if isinstance(image, str)]
                if batch:
                    maps = localizer.compute_maps([image for _, _, image in batch],
                                                  [label for _, label, _ in batch]).float().cpu().numpy()
                    for (record, label, image), map_s in zip(batch, maps):
                        cache.save(record.image_id, map_s, label, *image.size)
                if progress is not None:
                    progress(len(chunk))
        return failed
