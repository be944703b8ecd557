"""Read image sources into import records: class sub-folders, `path,label` CSV, Label Studio JSON exports.

A reader never opens the images: it yields ImportRecord(uri, labels, split, error) and the import
(`genpromp_annotate.project.import_records`) hashes, decodes and stores them. URIs are absolute
paths, or `file://` URLs (percent-encoded bytes) for file names that are not valid UTF-8, or
http(s) URLs.
"""

from __future__ import annotations

import csv
import io
import json
import os
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, unquote_to_bytes, urlparse

from genpromp_annotate.errors import ConfigError, GenprompError
from genpromp_annotate.log import get_logger

logger = get_logger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
SPLIT_NAMES = frozenset({"train", "val", "valid", "validation", "test"})
SOURCE_FORMATS = ("imagefolder", "csv", "label-studio")
URL_TIMEOUT_S = 30
LOCAL_FILES_ROOT_ENV = "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"


class SourceError(GenprompError):
    """A source (folder, CSV, Label Studio export) that cannot be read as a whole."""


@dataclass
class ImportRecord:
    """One image to import: where it is, its weak label(s), its split, or why it cannot be located."""

    uri: str
    labels: list[str] = field(default_factory=list)
    split: str | None = None
    error: str | None = None  # set when the source itself says what is wrong (e.g. no label)

    @property
    def display(self) -> str:
        return display_uri(self.uri)


# ---- URIs -------------------------------------------------------------------------------------------
def uri_for_path(path: str | os.PathLike[str]) -> str:
    """An absolute path; a `file://` URL with percent-encoded bytes when the name is not valid UTF-8."""
    absolute = os.path.abspath(os.fspath(path))
    try:
        absolute.encode("utf-8")
        return absolute
    except UnicodeEncodeError:  # surrogate-escaped bytes from a non-UTF-8 file name
        return "file://" + quote(os.fsencode(absolute), safe="/")


def path_for_uri(uri: str) -> Path | None:
    """The local path of a URI (plain path or file:// URL); None for http(s)."""
    if uri.startswith("file://"):
        return Path(os.fsdecode(unquote_to_bytes(urlparse(uri).path)))
    if uri.startswith(("http://", "https://")):
        return None
    return Path(uri)


def display_uri(uri: str) -> str:
    """A printable form of a URI (non-UTF-8 bytes shown as escapes)."""
    path = path_for_uri(uri)
    if path is None:
        return uri
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def read_uri_bytes(uri: str) -> bytes:
    """The bytes behind a URI (local file or http(s)); OSError when unreachable."""
    path = path_for_uri(uri)
    if path is not None:
        return path.read_bytes()
    with urllib.request.urlopen(uri, timeout=URL_TIMEOUT_S) as response:
        return response.read()


def open_uri(uri: str) -> Path | io.BytesIO:
    """Something `load_image` can open: the local path, or the downloaded bytes of a URL."""
    path = path_for_uri(uri)
    if path is not None:
        return path
    data = io.BytesIO(read_uri_bytes(uri))
    data.name = uri
    return data


# ---- imagefolder ----------------------------------------------------------------------------------------
def _image_files(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                found.append(Path(dirpath) / name)
    return found


def read_imagefolder(root: str | os.PathLike[str]) -> Iterator[ImportRecord]:
    """`root/<label>/**/<image>`; with `root/<split>/<label>/...` when the top folders are train/val/test.

    The label is the sub-folder name as written (e.g. `goldfish` or `n01443537`).
    """
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"{root}: not a folder; --format imagefolder expects ROOT/<label>/<image files>")
    top = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not top:
        raise SourceError(f"{root}: no sub-folder; --format imagefolder expects ROOT/<label>/<image files>")
    split_layout = all(p.name.lower() in SPLIT_NAMES for p in top)
    groups = [(split.name, label) for split in top for label in sorted(
        p for p in split.iterdir() if p.is_dir() and not p.name.startswith("."))] if split_layout \
        else [(None, label) for label in top]
    for split, label_dir in groups:
        for path in _image_files(label_dir):
            yield ImportRecord(uri=uri_for_path(path), labels=[label_dir.name], split=split)


# ---- CSV -------------------------------------------------------------------------------------------------
def read_csv_source(csv_path: str | os.PathLike[str]) -> Iterator[ImportRecord]:
    """`path,label[,split]` rows (a `path,label` header is optional); relative paths are read from the
    CSV's folder. Several rows for one path give the image several labels."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise SourceError(f"{csv_path}: no such CSV file")
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError(f"{csv_path}: not UTF-8 text ({exc})") from exc
    merged: dict[str, ImportRecord] = {}
    for line_no, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or all(not cell.strip() for cell in row):
            continue
        if line_no == 1 and [c.strip().lower() for c in row[:2]] == ["path", "label"]:
            continue
        if len(row) < 2 or not row[0].strip():
            raise SourceError(f"{csv_path}, line {line_no}: expected `path,label[,split]`, got {row!r}")
        location = row[0].strip()
        if location.startswith(("http://", "https://", "file://")):
            uri = location
        else:
            path = Path(location).expanduser()
            uri = uri_for_path(path if path.is_absolute() else csv_path.parent / path)
        label = row[1].strip()
        split = row[2].strip() or None if len(row) > 2 else None
        record = merged.setdefault(uri, ImportRecord(uri=uri, split=split))
        if not label:
            record.error = f"{csv_path}, line {line_no}: empty label"
        elif label not in record.labels:
            record.labels.append(label)
    yield from merged.values()


# ---- Label Studio JSON export ------------------------------------------------------------------------------
def _resolve_ls_url(url: str, export_dir: Path, root: Path | None) -> str:
    """Label Studio media URL → URI: local-files via the document root, uploads via `root`."""
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https", "file"):
        return url
    if parsed.path.startswith("/data/local-files"):
        relative = parse_qs(parsed.query).get("d", [""])[0]
        base = root or (Path(os.environ[LOCAL_FILES_ROOT_ENV]) if os.environ.get(LOCAL_FILES_ROOT_ENV) else None)
        if base is None:
            raise SourceError(f"{url}: a Label Studio local-files URL; pass --root (the local files document root) "
                              f"or set {LOCAL_FILES_ROOT_ENV}")
        return uri_for_path(base / unquote(relative))
    if parsed.path.startswith("/data/"):
        if root is None:
            raise SourceError(f"{url}: a Label Studio upload; pass --root (Label Studio's media folder, which holds "
                              "upload/)")
        return uri_for_path(root / unquote(parsed.path[len("/data/"):]))
    path = Path(unquote(url)).expanduser()
    return uri_for_path(path if path.is_absolute() else export_dir / path)


def _task_choices(task: dict[str, Any]) -> list[str]:
    """Choices of the task's first non-cancelled annotation (full JSON) or its `choice` field (JSON-MIN)."""
    for annotation in task.get("annotations") or []:
        if annotation.get("was_cancelled"):
            continue
        labels: list[str] = []
        for region in annotation.get("result") or []:
            if region.get("type") == "choices":
                labels += [c for c in region.get("value", {}).get("choices", []) if c not in labels]
        if labels:
            return labels
    for key in ("choice", "choices", "label"):
        value = task.get(key)
        if isinstance(value, str):
            return [value]
        if isinstance(value, dict) and isinstance(value.get("choices"), list):
            return list(value["choices"])
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
    return []


def read_label_studio(json_path: str | os.PathLike[str], image_key: str | None = None,
                      root: str | os.PathLike[str] | None = None) -> Iterator[ImportRecord]:
    """Tasks of a Label Studio JSON (or JSON-MIN) export whose label config has a Choices tag.

    Args:
        image_key: the task data field holding the image (default: `image`, else the only URL-like field).
        root: where `/data/local-files/?d=…` (document root) or `/data/upload/…` (media folder) live.
    """
    json_path = Path(json_path)
    try:
        tasks = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SourceError(f"{json_path}: no such Label Studio export") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(f"{json_path}: not a JSON file ({exc})") from exc
    if isinstance(tasks, dict):
        tasks = [tasks]
    if not isinstance(tasks, list):
        raise SourceError(f"{json_path}: expected a JSON list of tasks, got {type(tasks).__name__}")
    root_path = Path(root) if root else None
    for index, task in enumerate(tasks):
        if not isinstance(task, dict):
            raise SourceError(f"{json_path}: task #{index} is not an object")
        data: dict[str, Any] = task["data"] if isinstance(task.get("data"), dict) else task
        key = image_key or ("image" if "image" in data else None)
        if key is None:
            candidates = [k for k, v in data.items() if isinstance(v, str) and ("/" in v or "." in v)
                          and k not in ("choice", "label")]
            key = candidates[0] if len(candidates) == 1 else None
        name = f"{json_path} task {task.get('id', index)}"
        if key is None or not isinstance(data.get(key), str):
            raise SourceError(f"{name}: no image field; pass --image-key (task data keys: {', '.join(data)})")
        uri = _resolve_ls_url(data[key], json_path.parent, root_path)
        labels = _task_choices(task)
        error = None if labels else f"{name}: no Choices label in its annotations"
        yield ImportRecord(uri=uri, labels=labels, split=data.get("split") if isinstance(data.get("split"), str)
                           else None, error=error)


def read_source(source: str | os.PathLike[str], fmt: str, **options: Any) -> list[ImportRecord]:
    """Dispatch on `fmt` (one of SOURCE_FORMATS)."""
    if fmt == "imagefolder":
        return list(read_imagefolder(source))
    if fmt == "csv":
        return list(read_csv_source(source))
    if fmt == "label-studio":
        return list(read_label_studio(source, image_key=options.get("image_key"), root=options.get("root")))
    raise ConfigError(f"source format {fmt!r} is unknown; choose one of {', '.join(SOURCE_FORMATS)}")
