"""One shard file of the map cache: many float16 maps and their index in a single zip (a valid `.npz`).

    shard-<time ns>-<pid>-<seq>-<random>.npz
        map00000.npy, map00001.npy, …   one deflate-compressed (S, S) float16 map each
        index.json                      {"format", "version", "maps": [[image id, member, label, width, height]]}

Why this format:
- A zip member is compressed on its own and found through the central directory, so one map is read
  without decompressing its neighbours (random access stays cheap), and `np.load(shard)["map00012"]`
  works with nothing but numpy.
- The index lives in the same file as its maps, so both appear in one atomic rename: no sidecar that a
  kill can leave out of step with its shard. Opening a cache parses one small JSON member per shard
  (≈ 200 shards for ImageNet val's 50k images) instead of opening one file per image.
- zipfile, json and numpy's `.npy` format only: no new dependency (zarr / h5py are not installed, and an
  HDF5 file written in place is not safe against a kill mid-write).
- The name starts with a zero-padded wall-clock stamp, so sorting the names sorts the shards oldest first
  (a later shard supersedes an earlier one's map of the same image), and ends with the process id, a
  per-process sequence number and random hex, so two writers never pick the same name.

The writer side is `ShardBuffer`: maps are compressed into an in-memory zip as they are saved (the deflate
cost is spread over the run, and the buffer holds compressed bytes), and `finish()` gives the whole file.
The reader side is `ShardReader`, which keeps a few shards open between reads.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import secrets
import threading
import time
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import NamedTuple

import numpy as np

from genpromp_annotate.errors import ConfigError

FORMAT = "genpromp-map-shard"
FORMAT_VERSION = 1
INDEX_MEMBER = "index.json"
# deflate level: on float16 maps level 6 (np.savez_compressed's) takes 3.4x longer for files 1 % smaller
COMPRESS_LEVEL = 1
_NAME = re.compile(r"shard-\d{19}-\d+-\d{6}-[0-9a-f]{6}\.npz")
# what a damaged zip, member or index can raise while being read
_READ_ERRORS = (OSError, KeyError, ValueError, TypeError, AttributeError, EOFError, zipfile.BadZipFile,
                zlib.error)

_stamp_lock = threading.Lock()
_last_stamp = 0
_sequence = itertools.count()


class ShardRow(NamedTuple):
    """One map of a shard: where it is (member) and what it was computed for."""

    image_id: str
    member: str
    label: str
    width: int
    height: int


def is_shard_name(name: str) -> bool:
    """Whether `name` is a finished shard (temporary files of an unfinished write are not)."""
    return _NAME.fullmatch(name) is not None


def new_shard_name() -> str:
    """A unique shard name that sorts after every shard this process named before."""
    global _last_stamp
    with _stamp_lock:  # the wall clock may step back: keep this process's names increasing anyway
        _last_stamp = max(time.time_ns(), _last_stamp + 1)
        stamp, seq = _last_stamp, next(_sequence) % 1_000_000
    return f"shard-{stamp:019d}-{os.getpid()}-{seq:06d}-{secrets.token_hex(3)}.npz"


class ShardBuffer:
    """The maps saved since the last flush, already compressed in an in-memory zip."""

    def __init__(self) -> None:
        self._bytes = io.BytesIO()
        self._zip = zipfile.ZipFile(self._bytes, "w", zipfile.ZIP_DEFLATED, compresslevel=COMPRESS_LEVEL)
        self.rows: list[ShardRow] = []
        self.latest: dict[str, ShardRow] = {}  # image id → its last row (a re-save replaces it)
        self._data: bytes | None = None

    @property
    def finished(self) -> bool:
        return self._data is not None

    def add(self, image_id: str, map16: np.ndarray, label: str, width: int, height: int) -> None:
        """Compress one float16 map into the buffer."""
        assert self._data is None, "the shard is finished"
        member = f"map{len(self.rows):05d}.npy"
        with self._zip.open(member, "w") as file:
            np.lib.format.write_array(file, map16, allow_pickle=False)
        row = ShardRow(image_id, member, label, width, height)
        self.rows.append(row)
        self.latest[image_id] = row

    def finish(self) -> bytes:
        """The whole shard file, index last; the buffer takes no more maps (calling it again is free)."""
        if self._data is None:
            index = {"format": FORMAT, "version": FORMAT_VERSION, "maps": [list(row) for row in self.rows]}
            self._zip.writestr(INDEX_MEMBER, json.dumps(index, ensure_ascii=False))
            self._zip.close()
            self._data = self._bytes.getvalue()
            self._bytes = io.BytesIO()  # the copy in `_data` is the one kept
        return self._data


def read_index(path: Path) -> list[ShardRow]:
    """A shard's rows in save order; ConfigError naming the file when it is not a readable shard."""
    try:
        with zipfile.ZipFile(path) as archive:
            index = json.loads(archive.read(INDEX_MEMBER).decode("utf-8"))
            members = set(archive.namelist())
        if index.get("format") != FORMAT or index.get("version") != FORMAT_VERSION:
            raise ValueError(f"not a {FORMAT} v{FORMAT_VERSION} index")
        rows = [ShardRow(str(i), str(m), str(label), int(w), int(h)) for i, m, label, w, h in index["maps"]]
    except _READ_ERRORS as exc:
        raise ConfigError(f"{path}: unreadable map shard ({exc}); delete it to recompute its maps") from exc
    missing = [row.member for row in rows if row.member not in members]
    if missing:
        raise ConfigError(f"{path}: unreadable map shard (index names missing member {missing[0]}); delete it "
                          "to recompute its maps")
    return rows


class ShardReader:
    """Reads maps out of shards, keeping the `keep` most recently used shards open: parsing a shard's zip
    directory costs about as much as reading one map. Thread-safe; pickles with no shard open."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._open: OrderedDict[Path, zipfile.ZipFile] = OrderedDict()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, int]:
        return {"keep": self.keep}

    def __setstate__(self, state: dict[str, int]) -> None:
        self.keep, self._open, self._lock = state["keep"], OrderedDict(), threading.Lock()

    def _archive(self, path: Path) -> zipfile.ZipFile:
        with self._lock:
            archive = self._open.pop(path, None) or zipfile.ZipFile(path)
            self._open[path] = archive
            while len(self._open) > self.keep:
                self._open.popitem(last=False)  # not closed here: another thread may still read it
            return archive

    def read(self, path: Path, row: ShardRow) -> np.ndarray:
        """One map as stored (float16); ConfigError naming the shard when it cannot be read."""
        try:
            data = self._archive(path).read(row.member)  # the whole member: its CRC is checked
            array = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
        except _READ_ERRORS as exc:
            with self._lock:
                self._open.pop(path, None)
            raise ConfigError(f"{path}: unreadable map {row.member} of image {row.image_id!r} ({exc}); delete "
                              "the shard to recompute its maps") from exc
        if array.ndim != 2:
            raise ConfigError(f"{path}: map {row.member} of image {row.image_id!r} has shape {array.shape}, not "
                              "(S, S)")
        return array
