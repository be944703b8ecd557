"""Readers for the WSOL benchmark layouts (method §7) and for classifier predictions.

Each layout reader returns a list of EvalRecord in file order. GT boxes are `[x1, y1, x2, y2]` floats in
original pixels as the files hold them; label ids are 0-based (CUB's 1-based ids are shifted), the
position in a classifier's score vector.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genpromp_annotate.errors import GenprompError


class DatasetLayoutError(GenprompError):
    """A benchmark metadata file that is missing or does not follow its layout (the message names the line)."""


@dataclass(frozen=True)
class EvalRecord:
    """One evaluation image.

    Attributes:
        image_id: the id the layout uses (CUB/wsolevaluation: the relative path with extension;
            ImageNet: `wnid/file.JPEG`). Maps are stored as `<image_id>.npy`.
        path: the image file (image root joined with the relative path).
        label: 0-based class id.
        label_name: the class name when the layout has one.
        gt_boxes: `(K, 4)` float64 `[x1, y1, x2, y2]`, original pixels.
        size: `(width, height)` when the layout records it, else None.
        prediction_name: the key of this image in a classifier predictions JSON (method §6).
        uri: where to read the image when it is not a local file (a store project's http(s) images).
    """

    image_id: str
    path: Path
    label: int
    label_name: str | None
    gt_boxes: np.ndarray
    size: tuple[int, int] | None
    prediction_name: str
    uri: str | None = None


@dataclass(frozen=True)
class Synset:
    """One line of `LOC_synset_mapping.txt`: the WordNet id and the class names (`"tench, Tinca tinca"`)."""

    wnid: str
    names: str


def _lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, stripped text) of the non-blank lines; DatasetLayoutError when missing."""
    path = Path(path)
    if not path.is_file():
        raise DatasetLayoutError(f"{path}: file not found (expected by the dataset layout)")
    text = path.read_text(encoding="utf-8-sig")
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _fields(path: Path, number: int, line: str, count: int, sep: str | None, what: str,
            at_least: bool = False) -> list[str]:
    parts = [p.strip() for p in line.split(sep)] if sep else line.split()
    if len(parts) < count or (not at_least and len(parts) != count):
        raise DatasetLayoutError(f"{path}:{number}: expected {what}, got {line!r}")
    return parts


def _floats(path: Path, number: int, values: list[str]) -> list[float]:
    try:
        out = [float(v) for v in values]
    except ValueError:
        raise DatasetLayoutError(f"{path}:{number}: expected numbers, got {values}") from None
    if not all(math.isfinite(v) for v in out):
        raise DatasetLayoutError(f"{path}:{number}: expected finite numbers, got {values}")
    return out


def _int(path: Path, number: int, value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DatasetLayoutError(f"{path}:{number}: {what} must be an integer, got {value!r}") from None


def _check_box(path: Path, number: int, box: list[float]) -> list[float]:
    if box[2] < box[0] or box[3] < box[1]:
        raise DatasetLayoutError(f"{path}:{number}: box {box} has x2 < x1 or y2 < y1")
    return box


# ---- CUB-200-2011 ------------------------------------------------------------------------------------
def read_cub(root: Path, split: str = "test") -> list[EvalRecord]:
    """CUB-200-2011 from its root folder (images.txt, image_class_labels.txt, train_test_split.txt,
    bounding_boxes.txt, classes.txt, images/).

    Boxes `x y w h` become `[x, y, x + w, y + h]`. `split`: "test" (5,794 images), "train" (5,994) or "all".
    """
    root = Path(root)
    if split not in ("train", "test", "all"):
        raise DatasetLayoutError(f"CUB split must be 'train', 'test' or 'all', got {split!r}")

    def by_id(name: str, count: int, what: str) -> dict[str, tuple[int, list[str]]]:
        table: dict[str, tuple[int, list[str]]] = {}
        for number, line in _lines(root / name):
            parts = _fields(root / name, number, line, count, None, what, at_least=name == "classes.txt")
            table[parts[0]] = (number, parts[1:])
        return table

    paths = by_id("images.txt", 2, "`id path`")
    labels = by_id("image_class_labels.txt", 2, "`id label`")
    splits = by_id("train_test_split.txt", 2, "`id 1|0`")
    boxes = by_id("bounding_boxes.txt", 5, "`id x y w h`")
    classes = {k: " ".join(v) for k, (_, v) in by_id("classes.txt", 2, "`id name`").items()}
    records = []
    for image_id, (_, (rel,)) in paths.items():
        for name, table in (("image_class_labels.txt", labels), ("train_test_split.txt", splits),
                            ("bounding_boxes.txt", boxes)):
            if image_id not in table:
                raise DatasetLayoutError(f"{root / name}: no line for image id {image_id} ({rel})")
        number, (flag,) = splits[image_id]
        if flag not in ("0", "1"):
            raise DatasetLayoutError(f"{root / 'train_test_split.txt'}:{number}: expected 1 (train) or 0 (test), "
                                     f"got {flag!r}")
        if split != "all" and (flag == "1") != (split == "train"):
            continue
        number, (label_text,) = labels[image_id]
        label = _int(root / "image_class_labels.txt", number, label_text, f"label of image {image_id}")
        number, values = boxes[image_id]
        x, y, w, h = _floats(root / "bounding_boxes.txt", number, values)
        if w < 0 or h < 0:
            raise DatasetLayoutError(f"{root / 'bounding_boxes.txt'}:{number}: width/height must be ≥ 0, got {w}, {h}")
        records.append(EvalRecord(image_id=rel, path=root / "images" / rel, label=label - 1,
                                  label_name=classes.get(str(label)),
                                  gt_boxes=np.array([[x, y, x + w, y + h]], dtype=np.float64), size=None,
                                  prediction_name=rel))
    return records


# ---- ImageNet validation lists -----------------------------------------------------------------------
def read_synset_mapping(path: Path) -> list[Synset]:
    """`LOC_synset_mapping.txt`: `wnid names…` per line; line order = label id."""
    synsets = []
    for number, line in _lines(path):
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise DatasetLayoutError(f"{path}:{number}: expected `wnid names`, got {line!r}")
        synsets.append(Synset(parts[0], parts[1]))
    return synsets


def read_imagenet_val(mapping_path: Path, val_list_path: Path, image_root: Path | None = None) -> list[EvalRecord]:
    """ImageNet validation from `LOC_synset_mapping.txt` and `val_folder_new.txt`
    (`wnid/file.JPEG label x1 y1 x2 y2 [x1 y1 x2 y2 …]`, original pixels).

    When the path starts with a wnid folder, it must be the wnid of the line's label (catches lists
    written with another class order).
    """
    synsets = read_synset_mapping(mapping_path)
    root = Path(image_root) if image_root is not None else Path(val_list_path).parent
    records = []
    for number, line in _lines(val_list_path):
        parts = line.split()
        if len(parts) < 6 or (len(parts) - 2) % 4:
            raise DatasetLayoutError(f"{val_list_path}:{number}: expected `path label x1 y1 x2 y2 [x1 y1 x2 y2 …]`, "
                                     f"got {line!r}")
        rel = parts[0]
        label = _int(Path(val_list_path), number, parts[1], "label")
        if not 0 <= label < len(synsets):
            raise DatasetLayoutError(f"{val_list_path}:{number}: label {label} is outside 0…{len(synsets) - 1} "
                                     f"({mapping_path} has {len(synsets)} classes)")
        folder = rel.split("/", 1)[0] if "/" in rel else None
        if folder is not None and folder.startswith("n") and folder != synsets[label].wnid:
            raise DatasetLayoutError(f"{val_list_path}:{number}: {rel} is in folder {folder} but label {label} is "
                                     f"{synsets[label].wnid} in {mapping_path}")
        values = _floats(Path(val_list_path), number, parts[2:])
        boxes = [_check_box(Path(val_list_path), number, values[i:i + 4]) for i in range(0, len(values), 4)]
        records.append(EvalRecord(image_id=rel, path=root / rel, label=label, label_name=synsets[label].names,
                                  gt_boxes=np.array(boxes, dtype=np.float64), size=None,
                                  prediction_name=rel.rsplit(".", 1)[0]))
    return records


# ---- wsolevaluation metadata -------------------------------------------------------------------------
def read_wsolevaluation(metadata_dir: Path, image_root: Path | None = None) -> list[EvalRecord]:
    """wsolevaluation metadata: image_ids.txt, class_labels.txt (`path,label`), image_sizes.txt
    (`path,W,H`, optional) and localization.txt (`path,x0,y0,x1,y1`, one line per box)."""
    meta = Path(metadata_dir)
    root = Path(image_root) if image_root is not None else meta
    ids = [line for _, line in _lines(meta / "image_ids.txt")]
    labels: dict[str, int] = {}
    for number, line in _lines(meta / "class_labels.txt"):
        path, label = _fields(meta / "class_labels.txt", number, line, 2, ",", "`path,label`")
        labels[path] = _int(meta / "class_labels.txt", number, label, "label")
    sizes: dict[str, tuple[int, int]] = {}
    if (meta / "image_sizes.txt").is_file():
        for number, line in _lines(meta / "image_sizes.txt"):
            path, w, h = _fields(meta / "image_sizes.txt", number, line, 3, ",", "`path,W,H`")
            sizes[path] = (_int(meta / "image_sizes.txt", number, w, "W"), _int(meta / "image_sizes.txt", number, h, "H"))
    boxes: dict[str, list[list[float]]] = {}
    for number, line in _lines(meta / "localization.txt"):
        path, *coords = _fields(meta / "localization.txt", number, line, 5, ",", "`path,x0,y0,x1,y1`")
        box = _check_box(meta / "localization.txt", number, _floats(meta / "localization.txt", number, coords))
        boxes.setdefault(path, []).append(box)
    records = []
    for image_id in ids:
        for name, table in (("class_labels.txt", labels), ("localization.txt", boxes)):
            if image_id not in table:
                raise DatasetLayoutError(f"{meta / name}: no line for image id {image_id!r} of image_ids.txt")
        records.append(EvalRecord(image_id=image_id, path=root / image_id, label=labels[image_id], label_name=None,
                                  gt_boxes=np.array(boxes[image_id], dtype=np.float64), size=sizes.get(image_id),
                                  prediction_name=image_id))
    return records


# ---- classifier predictions --------------------------------------------------------------------------
def read_class_predictions(path: Path, num_classes: int | None = None) -> dict[str, np.ndarray]:
    """`{name: {"pred_scores": [C floats]}}` → name → `(C,)` float64; every entry must have the same C
    (and `num_classes` when given)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetLayoutError(f"{path}: classifier predictions file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetLayoutError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DatasetLayoutError(f"{path}: expected an object {{image_name: {{\"pred_scores\": [...]}}}}, "
                                 f"got {type(data).__name__}")
    scores: dict[str, np.ndarray] = {}
    expected = num_classes
    for name, entry in data.items():
        values = entry.get("pred_scores") if isinstance(entry, dict) else None
        if not isinstance(values, list) or not values:
            raise DatasetLayoutError(f"{path}: entry {name!r} has no \"pred_scores\" list")
        array = np.asarray(values, dtype=np.float64)
        if array.ndim != 1:
            raise DatasetLayoutError(f"{path}: entry {name!r}: pred_scores must be a flat list of numbers")
        if expected is None:
            expected = len(array)
        if len(array) != expected:
            raise DatasetLayoutError(f"{path}: entry {name!r} has {len(array)} scores, expected {expected}")
        scores[name] = array
    return scores
