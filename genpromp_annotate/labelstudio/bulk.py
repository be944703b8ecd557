"""The bulk path: push a project's boxes into Label Studio as tasks with predictions, through the SDK in
chunks (for datasets too large for one /predict call), and pull human annotations back into the store.

Pushing is resumable: every task carries `data.genpromp_image_id`; images that already have a task get
only the predictions of the new model version, and tasks that hold it already are left alone.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from genpromp_annotate.engine.boxes import Box
from genpromp_annotate.errors import GenprompError, LabelConfigError
from genpromp_annotate.labelstudio.label_config import LabelingSetup, parse_label_config
from genpromp_annotate.labelstudio.media import MediaFetcher
from genpromp_annotate.labelstudio.regions import region_from_box
from genpromp_annotate.labelstudio.tasks import (
    human_boxes_of,
    resolve_weak_label,
    store_annotation,
    weak_label_of,
)
from genpromp_annotate.log import get_logger
from genpromp_annotate.project.scores import calibrated_box, load_score_calibration
from genpromp_annotate.project.version import read_snapshot
from genpromp_annotate.sources import path_for_uri
from genpromp_annotate.store import queries as q
from genpromp_annotate.store.database import Store

logger = get_logger(__name__)

IMAGE_ID_FIELD = "genpromp_image_id"


def task_image_value(uri: str, local_files_root: Path | None) -> str | None:
    """How Label Studio should refer to a store image: http(s) URLs as they are, local files under
    Label Studio's local-files root as `/data/local-files/?d=<relative path>`; None otherwise."""
    path = path_for_uri(uri)
    if path is None:
        return uri
    if local_files_root is None:
        return None
    resolved, root = path.resolve(), local_files_root.resolve()
    if not resolved.is_relative_to(root):
        return None
    return "/data/local-files/?d=" + quote(resolved.relative_to(root).as_posix())


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), max(1, size)):
        yield items[start : start + size]


def labeling_for(client: Any, ls_project: int, categories: Sequence[str]) -> LabelingSetup:
    """The Label Studio project's label config, mapped to the store project's categories."""
    config = client.projects.get(id=ls_project).label_config
    return parse_label_config(config, categories)


@dataclass
class PushReport:
    model_version: str
    created_tasks: int = 0
    added_predictions: int = 0
    up_to_date: int = 0
    without_box: int = 0  # images annotated with no detection (their prediction has no region)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (image uri, reason)


def _existing_tasks(client: Any, ls_project: int) -> dict[int, tuple[int, set[str]]]:
    """store image id → (task id, model versions of its predictions), for tasks this command created."""
    found: dict[int, tuple[int, set[str]]] = {}
    for task in client.tasks.list(project=ls_project, fields="all"):
        data = task.data or {}
        if IMAGE_ID_FIELD not in data:
            continue
        versions = set()
        for prediction in task.predictions or []:
            version = prediction.get("model_version") if isinstance(prediction, dict) else \
                getattr(prediction, "model_version", None)
            versions.add(str(version))
        found[int(data[IMAGE_ID_FIELD])] = (task.id, versions)
    return found


def push_predictions(store: Store, project_name: str, client: Any, ls_project: int, model_version: str,
                     local_files_root: Path | None = None, chunk_size: int = 100, label_field: str = "label",
                     on_progress: Callable[[int], None] | None = None) -> PushReport:
    """Create (or complete) Label Studio tasks with the boxes of `model_version` as predictions, their
    scores calibrated (P(IoU ≥ 0.5)) where the version has a score calibration, raw otherwise.

    Args:
        client: a `label_studio_sdk.LabelStudio` client.
        ls_project: the Label Studio project id; its label config must have RectangleLabels on an Image.
        local_files_root: Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT, to turn local image paths
            into `/data/local-files/?d=…` URLs; images elsewhere are skipped (and reported).
        chunk_size: tasks or predictions per SDK call.
    """
    with store.read() as session:
        project = q.get_project(session, project_name)
        categories = [c.name for c in q.list_categories(session, project)]
        annotated = q.annotated_images(session, project, model_version)
    # Label Studio sorts tasks by prediction score: a calibrated one puts the least certain first
    calibration = load_score_calibration(store, project_name, model_version)
    labeling = labeling_for(client, ls_project, categories)
    existing = _existing_tasks(client, ls_project)
    report = PushReport(model_version)
    new_tasks: list[dict[str, Any]] = []
    new_predictions: list[dict[str, Any]] = []
    for image, predictions in annotated:
        image_id = image.id
        value = task_image_value(image.uri, local_files_root)
        if value is None:
            report.skipped.append((image.uri, "not under the Label Studio local-files root (--local-files-root)"))
            continue
        regions = []
        for p in predictions:
            label = labeling.label_for_category(p.category.name)
            if label is None:
                report.skipped.append((image.uri, f"category {p.category.name!r} has no <Label> in the config"))
                continue
            box = calibrated_box(Box(p.x1, p.y1, p.x2, p.y2, p.score or 0.0), calibration)
            regions.append(region_from_box(box, image.width or 1, image.height or 1, label, labeling.from_name,
                                           labeling.to_name))
        if predictions and not regions:
            continue
        if not predictions:
            report.without_box += 1  # annotated, nothing found: a task with an empty prediction, no region
        entry = {"model_version": model_version, "score": max((r["score"] for r in regions), default=0.0),
                 "result": regions}
        if image_id in existing:
            task_id, versions = existing[image_id]
            if model_version in versions:
                report.up_to_date += 1
            else:
                new_predictions.append({"task": task_id, **entry})
            continue
        weak = image.categories[0].name if image.categories else None
        data = {labeling.image_key: value, IMAGE_ID_FIELD: image_id}
        if weak is not None:
            data[label_field] = labeling.label_for_category(weak) or weak
        new_tasks.append({"data": data, "predictions": [entry]})
    for chunk in _chunks(new_tasks, chunk_size):
        client.projects.import_tasks(ls_project, request=list(chunk))
        report.created_tasks += len(chunk)
        if on_progress:
            on_progress(len(chunk))
    for chunk in _chunks(new_predictions, chunk_size):
        client.projects.import_predictions(ls_project, request=list(chunk))
        report.added_predictions += len(chunk)
        if on_progress:
            on_progress(len(chunk))
    logger.info("push %s → Label Studio project %s: %d new tasks, %d new predictions, %d up to date, %d skipped",
                project_name, ls_project, report.created_tasks, report.added_predictions, report.up_to_date,
                len(report.skipped))
    return report


@dataclass
class PullReport:
    annotations: int = 0
    boxes: int = 0
    skipped: list[tuple[Any, str]] = field(default_factory=list)  # (task id, reason)


def export_tasks(client: Any, ls_project: int) -> list[dict[str, Any]]:
    """Every annotated task of a Label Studio project, as its JSON export gives them."""
    raw = b"".join(client.projects.exports.download_sync(ls_project, export_type="JSON"))
    if raw[:2] == b"PK":  # some versions wrap the export in a zip
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            raw = archive.read(next(n for n in archive.namelist() if n.endswith(".json")))
    tasks = json.loads(raw)
    if not isinstance(tasks, list):
        raise LabelConfigError(f"the JSON export of Label Studio project {ls_project} is not a list of tasks")
    return tasks


def pull_annotations(store: Store, project_name: str, client: Any, ls_project: int,
                     fetcher: MediaFetcher) -> PullReport:
    """Store the rectangles of every (not cancelled) annotation as human boxes; re-pulling replaces them."""
    categories = list(read_snapshot(store, project_name).categories)
    labeling = labeling_for(client, ls_project, categories)
    report = PullReport()
    for task in export_tasks(client, ls_project):
        image_value = (task.get("data") or {}).get(labeling.image_key)
        for annotation in task.get("annotations") or []:
            if annotation.get("was_cancelled"):
                continue
            boxes, problems = human_boxes_of(annotation, labeling, str(image_value))
            report.skipped.extend((task.get("id"), p) for p in problems)
            weak = weak_label_of(task, labeling)
            resolved = resolve_weak_label(weak, labeling, categories) if weak else None
            try:
                stored = store_annotation(store, project_name, annotation.get("id"), boxes, str(image_value),
                                          resolved[0] if isinstance(resolved, tuple) else None, fetcher,
                                          task.get("id"))
            except GenprompError as exc:
                report.skipped.append((task.get("id"), str(exc)))
                continue
            report.annotations += 1
            report.boxes += stored
    return report
