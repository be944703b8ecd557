"""What comes back from reviewers and serving: model boxes of served images, human boxes, and the
re-calibration and token training that learn from them."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete

from genpromp_annotate.engine.boxes import Box
from genpromp_annotate.log import get_logger
from genpromp_annotate.project.images import image_for_file
from genpromp_annotate.project.scores import DEFAULT_MIN_BOXES, recalibration_fit
from genpromp_annotate.project.settings import project_settings
from genpromp_annotate.project.version import read_snapshot
from genpromp_annotate.store import queries as q
from genpromp_annotate.store.database import Store
from genpromp_annotate.store.models import Prediction

logger = get_logger(__name__)

HUMAN_VERSION = "human"  # model_version of boxes drawn by people


@dataclass(frozen=True)
class ImageBoxes:
    """Boxes (original pixels) of one image, with where its bytes are (hashing finds the store image)."""

    uri: str  # how the store keeps it: a path, or a durable copy of a downloaded file
    path: Path | None  # the local file to hash
    boxes: Sequence[tuple[str, Box]]  # (category name, box); unknown categories are skipped
    size: tuple[int, int] | None = None  # (width, height)
    weak_category: str | None = None  # the weak label of a new image


def record_predictions(store: Store, project_name: str, model_version: str, images: Sequence[ImageBoxes]) -> None:
    """Keep served model boxes: each image is annotated with the version (with no box if it has none)."""
    with store.write() as session:
        project = q.get_project(session, project_name)
        categories = {c.name: c for c in q.list_categories(session, project)}
        for item in images:
            image = image_for_file(session, project, item.uri, item.path, item.size,
                                   item.weak_category or next((c for c, _ in item.boxes), None))
            pairs: list[tuple[Any, Any]] = [(categories[c], box) for c, box in item.boxes if c in categories]
            q.add_predictions(session, image, model_version, pairs, source="model")
            image.status, image.error = "done", None


def record_human_boxes(store: Store, project_name: str, external_id: str, item: ImageBoxes) -> int:
    """Replace the human boxes stored under `external_id` (e.g. a Label Studio annotation); how many now."""
    with store.write() as session:
        project = q.get_project(session, project_name)
        categories = {c.name: c for c in q.list_categories(session, project)}
        image = image_for_file(session, project, item.uri, item.path, item.size,
                               item.weak_category or next((c for c, _ in item.boxes), None))
        session.execute(delete(Prediction).where(Prediction.external_id == external_id,
                                                 Prediction.source == "human"))
        pairs: list[tuple[Any, Any]] = [(categories[c], box) for c, box in item.boxes if c in categories]
        q.add_predictions(session, image, HUMAN_VERSION, pairs, source="human", replace=False,
                          external_id=external_id)
    return len(pairs)


def delete_human_boxes(store: Store, project_name: str, external_id: str) -> int:
    with store.write() as session:
        return q.delete_human_boxes(session, q.get_project(session, project_name), external_id)


def recalibrate(store: Store, project_name: str, localizer: Any, images: Sequence[Any], labels: Sequence[str],
                human_boxes: Sequence[Any], omegas: Sequence[float] = (), lock: Any = None,
                min_boxes: int = DEFAULT_MIN_BOXES) -> dict[str, Any]:
    """Choose the project's τ (and, with `omegas`, ω) on human-annotated images and store them; then
    calibrate the new version's box scores on the same images (`report["scores"]`).

    The maps are made with the project's *stored* settings (whatever `localizer`'s are), and only τ and ω
    change in them: every other stored setting survives. `lock` guards the model (shared by a server).
    The score calibration needs `min_boxes` boxes (else `report["scores"]` says why there is none).
    """
    from genpromp_annotate.evaluation.recalibration import calibrate

    current = read_snapshot(store, project_name).config
    base = localizer.with_config(current)
    order = [current.omega] + [w for w in dict.fromkeys(omegas) if w != current.omega]
    maps: dict[float, list[Any]] = {}
    for omega in order:
        candidate = base if omega == current.omega else base.with_config(current.replace(omega=omega))
        with lock if lock is not None else contextlib.nullcontext():
            results = candidate.localize(list(images), list(labels), keep_maps=True)
        maps[omega] = [r.map_512 for r in results]
    chosen = calibrate(maps, human_boxes, [im.size for im in images], current.threshold, current.multi_box,
                       current.min_box_area)
    tuned = current.replace(threshold=chosen.threshold, omega=chosen.omega)
    with store.write() as session:
        project = q.get_project(session, project_name)
        project.settings = project_settings(tuned)
    logger.info("project %s: τ %.2f → %.2f, ω %.2f → %.2f (MaxBoxAcc@0.5 %.1f%% on %d human-annotated images)",
                project_name, current.threshold, chosen.threshold, current.omega, chosen.omega, chosen.accuracy,
                len(images))
    report: dict[str, Any] = {"recalibrated": True, "threshold_before": current.threshold,
                              "threshold": chosen.threshold, "accuracy": chosen.accuracy, "images": len(images)}
    if len(order) > 1:
        report.update(omega_before=current.omega, omega=chosen.omega,
                      tried={str(w): {"threshold": s.threshold, "accuracy": s.accuracy} for w, s in chosen.tried.items()})
    # the new version's box scores, calibrated on the same human boxes (its boxes come from these maps)
    report["scores"] = recalibration_fit(store, project_name, base.with_config(tuned), maps[chosen.omega],
                                         [im.size for im in images], human_boxes, min_boxes)
    return report


def categories_without_token(store: Store, project_name: str) -> list[str]:
    with store.read() as session:
        return [c.name for c in q.list_categories(session, q.get_project(session, project_name))
                if c.embedding is None]


def train_missing_tokens(store: Store, project_name: str, options: Any = None, model: Any = None,
                         device: str | None = None, dtype: str | None = None) -> dict[str, Any]:
    """Stage 1 for the categories without a concept token (`training.runs.train_project`), on `model`
    when given; what was trained, what had no images, and how long it took."""
    from genpromp_annotate.training.runs import TrainOptions, train_project

    if not categories_without_token(store, project_name):
        return {"trained": [], "reason": "every category has a token"}
    summary = train_project(store, project_name, options or TrainOptions(device=device, dtype=dtype), model=model)
    return {"trained": list(summary.trained), "without_images": list(summary.skipped),
            "seconds": round(summary.seconds, 2)}

