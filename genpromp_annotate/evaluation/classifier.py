"""Classifier predictions for Top-1 / Top-5 Loc: the reference JSON of scores or a CSV of top-5 labels.

Both become one ranking per image name: the class ids the classifier puts first, best first (at least 5
unless there are fewer classes). Image names follow method §6 (CUB: the `images.txt` path; ImageNet:
`wnid/ILSVRC2012_val_XXXXXXXX`, no extension; wsolevaluation: the image id).

    JSON  {"<name>": {"pred_scores": [C floats]}, …}       ranked by decreasing score (ties: lower id)
    CSV   <name>,<label 1>,<label 2>,<label 3>,<label 4>,<label 5>
          labels are 0-based class ids or class names; an optional first line `image,top1,…` is a header
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from genpromp_annotate.evaluation.layouts import DatasetLayoutError, read_class_predictions
from genpromp_annotate.evaluation.loc_metrics import class_ranking

TOP_K = 5
_HEADER_FIRST_CELLS = {"image", "image_id", "image_name", "name", "path", "file", "filename"}


def read_classifier(path: Path, class_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Image name → `(k,)` int64 class ids, best first (k = 5, or C for the JSON when C < 5).

    Args:
        path: a `.json` file (scores) or a `.csv` / `.txt` file (top-5 labels).
        class_names: the dataset's class names in id order, to read CSV labels given as names.
    Raises:
        DatasetLayoutError naming the file (and the line for CSV) when it does not parse.
    """
    path = Path(path)
    if path.suffix.lower() == ".json":
        scores = read_class_predictions(path)
        count = len(next(iter(scores.values()))) if scores else 0
        if class_names and count < len(class_names):
            raise DatasetLayoutError(f"{path}: {count} scores per image, but the dataset has {len(class_names)} "
                                     "classes (scores must be in class-id order, one per class)")
        return {name: class_ranking(values)[:TOP_K] for name, values in scores.items()}
    return read_top5_csv(path, class_names)


def _label_id(path: Path, number: int, cell: str, by_name: dict[str, int], num_classes: int | None) -> int:
    text = cell.strip()
    if re.fullmatch(r"-?[0-9]+", text):
        value = int(text)
        if value < 0 or (num_classes is not None and value >= num_classes):
            raise DatasetLayoutError(f"{path}:{number}: class id {value} is outside 0…"
                                     f"{(num_classes or 1) - 1}")
        return value
    key = text.lower()
    if key in by_name:
        return by_name[key]
    known = "no class names are known (pass --class-names)" if not by_name else f"e.g. {next(iter(by_name))!r}"
    raise DatasetLayoutError(f"{path}:{number}: {text!r} is neither a class id nor a class name ({known})")


def read_top5_csv(path: Path, class_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """`name,l1,…,l5` per line → name → `(5,)` class ids (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetLayoutError(f"{path}: classifier predictions file not found")
    by_name: dict[str, int] = {}
    for index, name in enumerate(class_names or []):
        by_name.setdefault(name.strip().lower(), index)
        by_name.setdefault(name.split(",")[0].strip().lower(), index)  # "tench, Tinca tinca" → "tench"
    num_classes = len(class_names) if class_names else None
    rankings: dict[str, np.ndarray] = {}
    text = path.read_text(encoding="utf-8-sig")
    seen_row = False
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not "".join(row).strip():
            continue
        first_row, seen_row = not seen_row, True
        if first_row and row[0].strip().lower() in _HEADER_FIRST_CELLS:
            continue
        if len(row) != 1 + TOP_K:
            raise DatasetLayoutError(f"{path}:{number}: expected `image,top1,top2,top3,top4,top5` "
                                     f"({1 + TOP_K} fields), got {len(row)}")
        name = row[0].strip()
        if name in rankings:
            raise DatasetLayoutError(f"{path}:{number}: image {name!r} is listed twice")
        ids = [_label_id(path, number, cell, by_name, num_classes) for cell in row[1:]]
        if len(set(ids)) != len(ids):
            raise DatasetLayoutError(f"{path}:{number}: the top-5 labels of {name!r} repeat a class")
        rankings[name] = np.array(ids, dtype=np.int64)
    if not rankings:
        raise DatasetLayoutError(f"{path}: no prediction in this file")
    return rankings
