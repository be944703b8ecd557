"""Label Studio tasks and annotations read as the store's terms: weak labels, boxes of categories."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genpromp_annotate.engine.boxes import Box
from genpromp_annotate.errors import GenprompError
from genpromp_annotate.labelstudio.label_config import LabelingSetup, match_category
from genpromp_annotate.labelstudio.regions import box_from_region


def annotation_external_id(annotation_id: Any) -> str:
    """How a Label Studio annotation is named in `Prediction.external_id` (webhook and `pull` agree)."""
    return f"ls-annotation:{annotation_id}"


@dataclass(frozen=True)
class StoredBox:
    """A box to keep in the project store, with where it came from."""

    image_uri: str  # the task's image value (a Label Studio URL or a path)
    category: str
    box: Box
    external_id: str | None = None
    local_path: Path | None = None  # the fetched file, when the caller has it (hashing finds the image)
    size: tuple[int, int] | None = None  # (width, height) of the image


def weak_label_of(task: dict[str, Any], setup: LabelingSetup) -> str | None:
    """A task's weak label: the data field `setup.settings.label_field`, else the single choice of a
    Choices region in its annotations (not cancelled) or predictions, in that order. None if there is none."""
    data = task.get("data")
    if not isinstance(data, dict):
        data = {}
    value = data.get(setup.settings.label_field)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, (str, int)) and str(value).strip():
        return str(value).strip()
    for source in ("annotations", "predictions"):
        for item in task.get(source) or []:
            if not isinstance(item, dict) or item.get("was_cancelled"):
                continue
            for region in item.get("result") or []:
                if not isinstance(region, dict) or region.get("type") != "choices":
                    continue
                if setup.choices_names and region.get("from_name") not in setup.choices_names:
                    continue
                choices = (region.get("value") or {}).get("choices") or []
                if len(choices) == 1 and str(choices[0]).strip():
                    return str(choices[0]).strip()
    return None


def resolve_weak_label(value: str, setup: LabelingSetup, categories: Sequence[str] | None
                       ) -> tuple[str, str] | str:
    """`(category, label studio label)` for a weak label, or the reason there is none.

    The value may be a Label Studio label of the config (`Cat`) or a project category (`cat`).
    """
    if value in setup.label_to_category:
        return setup.label_to_category[value], value
    if value in setup.unknown_labels:
        return f"label {value!r} of the config matches no project category"
    pool = list(categories) if categories is not None else list(setup.label_to_category.values())
    category = match_category(value, pool)
    if category is None:
        by_label = match_category(value, list(setup.label_to_category))
        if by_label is not None:
            return setup.label_to_category[by_label], by_label
        return f"weak label {value!r} is neither a label of the config nor a project category"
    label = setup.label_for_category(category)
    if label is None:
        return f"category {category!r} has no <Label> in the RectangleLabels {setup.from_name!r}"
    return category, label


def human_boxes_of(annotation: dict[str, Any], labeling: LabelingSetup, image_value: str
                   ) -> tuple[list[StoredBox], list[str]]:
    """The rectangles of one annotation as boxes of project categories, and why any were left out."""
    boxes: list[StoredBox] = []
    problems: list[str] = []
    for region in annotation.get("result") or []:
        if not isinstance(region, dict) or region.get("type") != "rectanglelabels":
            continue
        if region.get("from_name") not in (None, labeling.from_name):
            continue
        try:
            label, box = box_from_region(region)
        except GenprompError as exc:
            problems.append(str(exc))
            continue
        category = labeling.label_to_category.get(label)
        if category is None:
            problems.append(f"region {region.get('id', '?')}: label {label!r} matches no project category")
            continue
        boxes.append(StoredBox(image_value, category, box, str(region.get("id") or "") or None))
    return boxes, problems


def store_annotation(store: Any, project_name: str, annotation_id: Any, boxes: Sequence[StoredBox],
                     image_value: str, weak_category: str | None, fetcher: Any, task_id: Any = None) -> int:
    """Replace one Label Studio annotation's human boxes in the store (its image found by content hash,
    fetched through `fetcher`'s rules, a download kept as a durable copy); how many boxes are stored."""
    from genpromp_annotate import project as gp
    from genpromp_annotate.labelstudio.media import durable_uri

    path = fetcher.local_path(image_value, task_id)  # before the write transaction: may download
    item = gp.ImageBoxes(durable_uri(project_name, image_value, path), path, [(b.category, b.box) for b in boxes],
                         weak_category=weak_category)
    return gp.record_human_boxes(store, project_name, annotation_external_id(annotation_id), item)


def human_annotated_images(store: Any, project_name: str, fetcher: Any) -> tuple[list, list[str], list] | str:
    """The project's human-annotated images, their categories and `(K, 4)` boxes (original pixels), for
    re-calibration; or the reason there are none. A store uri that is a local path was put there by
    `import` or copied by `durable_uri` (trusted); anything else came from Label Studio and goes through
    the fetcher's rules. Unreadable images are skipped with a warning."""
    import numpy as np

    from genpromp_annotate import project as gp
    from genpromp_annotate.engine.images import load_image
    from genpromp_annotate.log import get_logger
    from genpromp_annotate.sources import open_uri, path_for_uri

    truth = gp.human_boxes_by_image(store, project_name)
    if not truth:
        return "no human boxes yet"
    images, labels, boxes = [], [], []
    for uri, category, rows in truth:
        try:
            path = path_for_uri(uri)
            local = path is not None and path.is_file()
            images.append(load_image(open_uri(uri) if local else fetcher.local_path(uri), name=uri))
        except (GenprompError, OSError) as exc:
            get_logger(__name__).warning("re-calibration skips %s: %s", uri, exc)
            continue
        labels.append(category)
        boxes.append(np.asarray(rows, dtype=np.float64))
    return (images, labels, boxes) if images else "no human-annotated image could be read"

