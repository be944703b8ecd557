"""What a benchmark evaluates: the images of a layout split or of a store project, their labels and classes.

A BenchmarkSet holds the layout's EvalRecords, the label string the engine is given for each of them and
the class names in id order. `select` narrows it to `--classes` and to `--limit` images taken evenly
across classes. Sources:

    cub       <root>/images.txt, … (method §7); splits train | test | all
    imagenet  <root>/LOC_synset_mapping.txt + val_folder_new.txt, images under <root>/val; one split
    wsol      <root>/metadata/<DATASET>/<split>/ (wsolevaluation), images under <root>/dataset/<DATASET>;
              or a folder holding image_ids.txt itself
    project   a store project's images that carry human boxes; splits are the images' `split` values
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from genpromp_annotate.errors import ConfigError
from genpromp_annotate.evaluation.layouts import (
    DatasetLayoutError,
    EvalRecord,
    read_cub,
    read_imagenet_val,
    read_synset_mapping,
    read_wsolevaluation,
)

if TYPE_CHECKING:
    from genpromp_annotate.store.database import Store

LAYOUTS: tuple[str, ...] = ("cub", "imagenet", "wsol")
DEFAULT_SPLIT = {"cub": "test", "imagenet": "val", "wsol": "test"}


@dataclass(frozen=True)
class BenchmarkSet:
    """The images of one split, the engine label of each, and the class names (index = class id)."""

    source: str  # "cub", "imagenet", "wsol", "project"
    split: str | None
    records: list[EvalRecord]
    labels: list[str]
    class_names: list[str]
    dataset_name: str | None = None  # wsolevaluation dataset or project name

    def __post_init__(self) -> None:
        if len(self.records) != len(self.labels):
            raise ValueError("one label per record")


def read_class_names(path: Path) -> list[str]:
    """One class name per line (line order = class id); `wnid names` and `id name` lines keep the names."""
    names = []
    for line in Path(path).read_text(encoding="utf-8-sig").splitlines():
        line = line.strip()
        if not line:
            continue
        first, _, rest = line.partition(" ")
        is_wnid = first[:1] == "n" and first[1:].isdigit()
        names.append(rest.strip() if rest and (is_wnid or first.isdigit()) else line)
    return names


def _names_for(records: Sequence[EvalRecord], class_names: list[str] | None, source: Path | None) -> list[str]:
    """Class names: given ones (checked against the labels), or those the records carry, or `class N`."""
    top = max((r.label for r in records), default=-1)
    if class_names is not None:
        if top >= len(class_names):
            bad = next(r for r in records if r.label >= len(class_names))
            raise ConfigError(f"--class-names {source}: {len(class_names)} names, but image {bad.image_id!r} has "
                              f"label {bad.label}")
        return class_names
    names = [f"class {i}" for i in range(top + 1)]
    for record in records:
        if record.label_name:
            names[record.label] = record.label_name
    return names


# ---- layouts -----------------------------------------------------------------------------------------------
def _wsol_folders(root: Path, dataset_name: str | None, split: str, image_root: Path | None) -> tuple[Path, Path, str | None]:
    """(metadata folder, image root, dataset name) of a wsolevaluation tree or of a bare metadata folder."""
    if (root / "image_ids.txt").is_file():
        return root, image_root or root, dataset_name
    metadata = root / "metadata"
    if not metadata.is_dir():
        raise DatasetLayoutError(f"{root}: expected <root>/metadata/<DATASET>/<split>/image_ids.txt "
                                 "(wsolevaluation) or a folder holding image_ids.txt")
    datasets = sorted(p.name for p in metadata.iterdir() if p.is_dir())
    if dataset_name is None:
        if len(datasets) != 1:
            raise ConfigError(f"{metadata}: pick a dataset with --dataset-name ({', '.join(datasets) or 'none found'})")
        dataset_name = datasets[0]
    folder = metadata / dataset_name / split
    if not (folder / "image_ids.txt").is_file():
        splits = sorted(p.name for p in (metadata / dataset_name).glob("*") if (p / "image_ids.txt").is_file())
        raise DatasetLayoutError(f"{folder}: no image_ids.txt (datasets: {', '.join(datasets) or 'none'}; splits of "
                                 f"{dataset_name}: {', '.join(splits) or 'none'})")
    if image_root is None:
        candidates = [root / "dataset" / dataset_name, root / dataset_name, root]
        image_root = next(p for p in candidates if p.is_dir())
    return folder, image_root, dataset_name


def open_layout(layout: str, root: Path, split: str | None = None, image_root: Path | None = None,
                dataset_name: str | None = None, class_names_file: Path | None = None) -> BenchmarkSet:
    """The split of a benchmark layout (module docstring); `split` None = the layout's test split."""
    root = Path(root)
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    split = split or DEFAULT_SPLIT[layout]
    given = read_class_names(class_names_file) if class_names_file is not None else None
    if layout == "cub":
        if image_root is not None:
            raise ConfigError("--image-root: CUB images are always under <root>/images; drop the option")
        if split not in ("train", "test", "all"):
            raise ConfigError(f"--split {split}: CUB-200-2011 has the splits train, test and all")
        records = read_cub(root, split)
        names = given if given is not None else read_class_names(root / "classes.txt")
        return _labelled("cub", split, records, _names_for(records, names, class_names_file or root / "classes.txt"))
    if layout == "imagenet":
        if split != "val":
            raise ConfigError(f"--split {split}: the ImageNet lists hold one split (val); a held-out split needs "
                              "the wsol layout (ImageNetV2 in wsolevaluation)")
        images = image_root or (root / "val" if (root / "val").is_dir() else root)
        records = read_imagenet_val(root / "LOC_synset_mapping.txt", root / "val_folder_new.txt", images)
        names = given if given is not None else [s.names for s in read_synset_mapping(root / "LOC_synset_mapping.txt")]
        return _labelled("imagenet", split, records, _names_for(records, names, class_names_file))
    folder, images, name = _wsol_folders(root, dataset_name, split, image_root)
    records = read_wsolevaluation(folder, images)
    if given is None and (folder.parent / "class_names.txt").is_file():  # a tree may name its classes
        class_names_file = folder.parent / "class_names.txt"
        given = read_class_names(class_names_file)
    return _labelled("wsol", split, records, _names_for(records, given, class_names_file), name)


def _labelled(source: str, split: str | None, records: list[EvalRecord], class_names: list[str],
              dataset_name: str | None = None) -> BenchmarkSet:
    labels = [class_names[r.label] for r in records]
    return BenchmarkSet(source, split, records, labels, class_names, dataset_name)


# ---- a store project ---------------------------------------------------------------------------------------
def open_project(store: Store, project_name: str, split: str | None = None) -> BenchmarkSet:
    """A project's images with human-verified boxes (one record per image and category).

    Human boxes are stored one past the last pixel (`x2`, `y2`); the evaluation reads boxes as inclusive,
    so 1 is taken off. Record ids are `<image id>-<category id>`; the classifier name is the image's URI.
    """

    from genpromp_annotate.sources import path_for_uri
    from genpromp_annotate.store import queries as q
    from genpromp_annotate.store.models import Prediction

    with store.read() as session:
        project = q.get_project(session, project_name)
        categories = q.list_categories(session, project)
        class_id = {c.id: i for i, c in enumerate(categories)}
        grouped: dict[tuple[int, int], list[Prediction]] = {}
        for row in q.human_box_rows(session, project, split):
            grouped.setdefault((row.image_id, row.category_id), []).append(row)
    records = []
    for (image_id, category_id), rows in grouped.items():
        image = rows[0].image
        boxes = np.array([[r.x1, r.y1, max(r.x1, r.x2 - 1), max(r.y1, r.y2 - 1)] for r in rows], dtype=np.float64)
        size = (image.width, image.height) if image.width and image.height else None
        local = path_for_uri(image.uri)
        records.append(EvalRecord(image_id=f"{image_id}-{category_id}", path=local or Path(image.uri),
                                  label=class_id[category_id], label_name=categories[class_id[category_id]].name,
                                  gt_boxes=boxes, size=size, prediction_name=image.uri,
                                  uri=None if local is not None else image.uri))
    if not records:
        where = f" in split {split!r}" if split is not None else ""
        raise ConfigError(f"project {project_name!r}: no image{where} has human-verified boxes yet (import them from "
                          "Label Studio with `pull`, or annotate in Label Studio with the backend)")
    names = [c.name for c in categories]
    return BenchmarkSet("project", split, records, [names[r.label] for r in records], names, project_name)


# ---- narrowing ---------------------------------------------------------------------------------------------
def _class_ids(benchmark: BenchmarkSet, wanted: Sequence[str]) -> set[int]:
    """Class ids named by `wanted`: a class id, a class name (or its part before a comma), or the folder of
    the image ids (a CUB class folder, an ImageNet wnid); case-insensitive."""
    keys: dict[str, set[int]] = {}
    for index, name in enumerate(benchmark.class_names):
        for key in (str(index), name.lower(), name.split(",")[0].strip().lower()):
            keys.setdefault(key, set()).add(index)
    for record in benchmark.records:
        if "/" in record.image_id:
            keys.setdefault(record.image_id.split("/", 1)[0].lower(), set()).add(record.label)
    ids: set[int] = set()
    for item in wanted:
        found = keys.get(item.strip().lower())
        if not found:
            example = f"a name such as {benchmark.class_names[0]!r}" if benchmark.class_names else "a class name"
            raise ConfigError(f"--classes: no class {item!r} in this dataset (give a class id, {example}, or an "
                              "image folder name)")
        ids |= found
    return ids


def stratified_indices(labels: Sequence[int], limit: int) -> list[int]:
    """At most `limit` positions spread evenly over the classes: the first image of every class (in class
    order of first appearance), then the second of each, …; returned in the original order."""
    by_class: dict[int, list[int]] = {}
    for position, label in enumerate(labels):
        by_class.setdefault(label, []).append(position)
    chosen: list[int] = []
    depth = 0
    while len(chosen) < limit and any(depth < len(p) for p in by_class.values()):
        for positions in by_class.values():
            if depth < len(positions) and len(chosen) < limit:
                chosen.append(positions[depth])
        depth += 1
    return sorted(chosen)


def select(benchmark: BenchmarkSet, classes: Sequence[str] | None = None, limit: int | None = None) -> BenchmarkSet:
    """Only the images of `classes`, then at most `limit` of them taken evenly across classes."""
    keep = list(range(len(benchmark.records)))
    if classes:
        ids = _class_ids(benchmark, classes)
        keep = [i for i in keep if benchmark.records[i].label in ids]
    if limit is not None:
        keep = [keep[i] for i in stratified_indices([benchmark.records[i].label for i in keep], limit)]
    if not keep:
        raise ConfigError(f"{benchmark.source} split {benchmark.split!r}: no image left after --classes/--limit")
    return dataclasses.replace(benchmark, records=[benchmark.records[i] for i in keep],
                               labels=[benchmark.labels[i] for i in keep])
