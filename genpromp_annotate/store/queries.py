"""The named queries of the workflow: projects, categories and embeddings, runs, images, claims, predictions,
score calibrations.

Every function takes an open Session (from `Store.read()` / `Store.write()`) and leaves committing to
the caller. Functions that write must run inside `Store.write()` (SQLite's BEGIN IMMEDIATE).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import torch
from sqlalchemy import delete, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from genpromp_annotate.errors import StoreError, UnknownLabelError
from genpromp_annotate.store.model_version import ModelVersionParts
from genpromp_annotate.store.models import (
    PREDICTION_SOURCES,
    RUN_STATUSES,
    TRAINING_STATES,
    Annotation,
    Category,
    Image,
    ModelVersion,
    Prediction,
    Project,
    StoredScoreCalibration,
    TrainingRun,
    image_labels,
    utc_now,
)

# A claim that is not released within this time is free again (a worker on another host died).
DEFAULT_LEASE_S = 30 * 60


# ---- projects ---------------------------------------------------------------------------------------
def find_project(session: Session, name: str) -> Project | None:
    return session.scalar(select(Project).where(Project.name == name))


def get_project(session: Session, name: str) -> Project:
    """The project called `name`, or StoreError naming it and the `init` command."""
    project = find_project(session, name)
    if project is None:
        known = session.scalars(select(Project.name).order_by(Project.name).limit(10)).all()
        hint = f" (projects here: {', '.join(known)})" if known else " (this database has no project yet)"
        raise StoreError(f"no project named {name!r}{hint}; create it with "
                         f"`genpromp-annotate init {name} --model MODEL --label NAME`")
    return project


def create_project(session: Session, name: str, base_model: str, settings: Mapping[str, Any] | None = None) -> Project:
    """A new project; StoreError when the name is taken."""
    if not name or not name.strip():
        raise StoreError("a project needs a non-empty name")
    if find_project(session, name) is not None:
        raise StoreError(f"project {name!r} already exists; see `genpromp-annotate status {name}`")
    project = Project(name=name, base_model=str(base_model), settings=dict(settings or {}))
    session.add(project)
    session.flush()
    return project


def select_unet(session: Session, project: Project, unet_path: str | None, unet_digest: str | None) -> None:
    """Use a finetuned UNet (diffusers `unet` folder + its weights digest) for inference; None = base UNet."""
    project.unet_path = unet_path
    project.unet_digest = unet_digest if unet_path else None
    session.flush()


# ---- categories ---------------------------------------------------------------------------------------
def find_category(session: Session, project: Project, name: str) -> Category | None:
    return session.scalar(select(Category).where(Category.project_id == project.id, Category.name == name))


def get_category(session: Session, project: Project, name: str) -> Category:
    """The category `name` of the project, or UnknownLabelError listing the known ones and the fix."""
    category = find_category(session, project, name)
    if category is None:
        known = [c.name for c in list_categories(session, project)]
        raise UnknownLabelError(
            f"unknown label {name!r} in project {project.name!r} (labels: {', '.join(known) or 'none'}); "
            f"add it with `genpromp-annotate labels {project.name} add {name!r}`")
    return category


def list_categories(session: Session, project: Project) -> list[Category]:
    return list(session.scalars(select(Category).where(Category.project_id == project.id).order_by(Category.id)))


def add_category(session: Session, project: Project, name: str, meta_token: str, concept_token: str,
                 meta_token_id: int | None = None, meta_forced: bool = False) -> Category:
    """A new category (its meta token computed by the caller with the model's tokenizer)."""
    if find_category(session, project, name) is not None:
        raise StoreError(f"label {name!r} already exists in project {project.name!r}")
    category = Category(project_id=project.id, name=name, meta_token=meta_token, meta_token_id=meta_token_id,
                        meta_forced=meta_forced,
                        concept_token=concept_token, training_state="untrained")
    session.add(category)
    session.flush()
    return category


def set_category_embedding(category: Category, embedding: torch.Tensor | None, state: str = "trained") -> None:
    """Store a learned concept embedding, e.g. `(768,)` float32, as bytes + dtype + shape (None clears it)."""
    if state not in TRAINING_STATES:
        raise StoreError(f"training_state must be one of {TRAINING_STATES}, got {state!r}")
    if embedding is None:
        category.embedding = category.embedding_dtype = category.embedding_shape = None
    else:
        tensor = embedding.detach().to("cpu").contiguous()
        category.embedding = tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
        category.embedding_dtype = str(tensor.dtype).removeprefix("torch.")
        category.embedding_shape = list(tensor.shape)
    category.training_state = state
    if state == "trained":
        category.trained_at = utc_now()


def category_embedding(category: Category) -> torch.Tensor | None:
    """The stored embedding with its stored dtype and shape, or None when the category is not trained."""
    if category.embedding is None or category.embedding_dtype is None:
        return None
    dtype = getattr(torch, category.embedding_dtype, None)
    if not isinstance(dtype, torch.dtype):
        raise StoreError(f"category {category.name!r}: stored embedding dtype {category.embedding_dtype!r} is unknown")
    shape = tuple(category.embedding_shape or [-1])
    flat = torch.frombuffer(bytearray(category.embedding), dtype=torch.uint8).view(dtype)
    return flat.reshape(shape).clone()


# ---- training runs ----------------------------------------------------------------------------------------
def create_training_run(session: Session, project: Project, kind: str, config: Mapping[str, Any] | None = None,
                        status: str = "queued") -> TrainingRun:
    """A new run row (kind e.g. "concept_tokens" or "unet_finetune") holding its resolved config."""
    run = TrainingRun(project_id=project.id, kind=kind, config=dict(config or {}), status=status, metrics={})
    if status == "running":
        run.started_at = utc_now()
    session.add(run)
    session.flush()
    return run


def update_training_run(session: Session, run_id: int, *, status: str | None = None, progress: float | None = None,
                        metrics: Mapping[str, Any] | None = None, error: str | None = None,
                        output_path: str | None = None) -> TrainingRun:
    """Update a run; `running` sets started_at, `done`/`failed`/`cancelled` set finished_at; metrics merge."""
    run = session.get(TrainingRun, run_id)
    if run is None:
        raise StoreError(f"no training run with id {run_id}")
    if status is not None:
        if status not in RUN_STATUSES:
            raise StoreError(f"run status must be one of {RUN_STATUSES}, got {status!r}")
        run.status = status
        if status == "running" and run.started_at is None:
            run.started_at = utc_now()
        if status in ("done", "failed", "cancelled"):
            run.finished_at = utc_now()
    if progress is not None:
        run.progress = float(progress)
    if metrics:
        run.metrics = {**(run.metrics or {}), **dict(metrics)}  # a new dict: JSON columns track assignment
    if error is not None:
        run.error = error
    if output_path is not None:
        run.output_path = output_path
    session.flush()
    return run


# ---- images -------------------------------------------------------------------------------------------
def find_image_by_hash(session: Session, project: Project, content_hash: str) -> Image | None:
    return session.scalar(select(Image).where(Image.project_id == project.id, Image.content_hash == content_hash))


def set_image_error(image: Image, error: str) -> None:
    image.status = "error"
    image.error = error


# ---- claims: which worker annotates which image ---------------------------------------------------------
def worker_id() -> str:
    """`host:pid:nonce` of this process (the nonce tells apart two loops in one process)."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def release_dead_claims(session: Session, project: Project) -> int:
    """Free the claims of workers on this host whose process is gone (SIGKILL, crash). Returns how many."""
    host = socket.gethostname()
    owners = session.scalars(select(Image.claimed_by).where(Image.project_id == project.id,
                                                            Image.claimed_by.is_not(None)).distinct()).all()
    dead = []
    for owner in owners:
        parts = (owner or "").split(":")
        if len(parts) == 3 and parts[0] == host and parts[1].isdigit() and not _pid_alive(int(parts[1])):
            dead.append(owner)
    if not dead:
        return 0
    result = session.execute(update(Image).where(Image.project_id == project.id, Image.claimed_by.in_(dead))
                             .values(claimed_by=None, claimed_until=None))
    return int(getattr(result, "rowcount", 0) or 0)


def _is_annotated(model_version: str, since: datetime | None = None):
    """The image has an Annotation of the version (boxes or none), made at or after `since` when given."""
    condition = exists().where(Annotation.image_id == Image.id, Annotation.model_version == model_version)
    if since is not None:
        condition = condition.where(Annotation.created_at >= since)
    return condition


def pending_images_query(project: Project, model_version: str, force_since: datetime | None = None):
    """Images still to annotate with `model_version`.

    Normal run: images not annotated with that version (see `Annotation`), except images in error. Forced run
    (`force_since` = when it started): every image not annotated since then, errors included (an error
    retried in this run has its claim released after `force_since` and is not taken again).
    """
    query = select(Image).where(Image.project_id == project.id)
    if force_since is None:
        return query.where(Image.status != "error", ~_is_annotated(model_version))
    retried = Image.claimed_until.is_not(None) & (Image.claimed_until >= force_since) & Image.claimed_by.is_(None)
    return query.where(~_is_annotated(model_version, force_since),
                       or_(Image.status != "error", ~retried))


def count_pending(session: Session, project: Project, model_version: str, force_since: datetime | None = None) -> int:
    sub = pending_images_query(project, model_version, force_since).with_only_columns(Image.id).subquery()
    return int(session.scalar(select(func.count()).select_from(sub)) or 0)


def claim_images(session: Session, project: Project, model_version: str, worker: str, limit: int,
                 lease_s: float = DEFAULT_LEASE_S, force_since: datetime | None = None) -> list[Image]:
    """Atomically claim up to `limit` pending images for `worker` (call inside `Store.write()`).

    On SQLite the write transaction (BEGIN IMMEDIATE) serialises claimers; on PostgreSQL rows another
    transaction is claiming are skipped (FOR UPDATE SKIP LOCKED). A claim is free again when released,
    when its lease ends, or when its worker's process on this host is gone; never while its worker holds
    it, since the annotate loop claims its next batch before it has stored the current one.
    """
    now = utc_now()
    free = or_(Image.claimed_by.is_(None), Image.claimed_until < now)
    query = (pending_images_query(project, model_version, force_since).where(free)
             .order_by(Image.id).limit(limit).with_for_update(skip_locked=True, of=Image))
    images = list(session.scalars(query))
    for image in images:
        image.claimed_by = worker
        image.claimed_until = now + timedelta(seconds=lease_s)
    session.flush()
    if images:  # weak labels, loaded while the rows are locked
        session.scalars(select(Image).where(Image.id.in_([i.id for i in images]))
                        .options(selectinload(Image.categories))).all()
    return images


def release_claims(session: Session, worker: str) -> int:
    """Free every claim of `worker` (a clean stop). The lease end becomes now: see pending_images_query."""
    result = session.execute(update(Image).where(Image.claimed_by == worker)
                             .values(claimed_by=None, claimed_until=utc_now()))
    return int(getattr(result, "rowcount", 0) or 0)


# ---- predictions ---------------------------------------------------------------------------------------
class BoxLike(Protocol):
    x1: float
    y1: float
    x2: float
    y2: float
    score: float


def _box_values(box: BoxLike | Mapping[str, Any]) -> tuple[float, float, float, float, float | None]:
    if isinstance(box, Mapping):
        return (float(box["x1"]), float(box["y1"]), float(box["x2"]), float(box["y2"]),
                None if box.get("score") is None else float(box["score"]))
    return float(box.x1), float(box.y1), float(box.x2), float(box.y2), float(box.score)


def add_predictions(session: Session, image: Image, model_version: str,
                    boxes: Sequence[tuple[Category, BoxLike | Mapping[str, Any]]], source: str = "model",
                    replace: bool = True, external_id: str | None = None) -> list[Prediction]:
    """Store boxes (original pixels) for one image and model version.

    Model boxes also record the image as annotated with the version (`Annotation`), so an image
    without a box (no pixel survived τ) is done for it and never stored as a fake box.

    Args:
        boxes: (category, box) pairs; a box is an engine `Box` or a mapping with x1, y1, x2, y2[, score].
        source: "model" or "human".
        replace: first delete this image's predictions of the same model version and source (so
            re-running never duplicates boxes).
        external_id: e.g. the Label Studio annotation id, to find human boxes again.
    """
    if source not in PREDICTION_SOURCES:
        raise StoreError(f"prediction source must be one of {PREDICTION_SOURCES}, got {source!r}")
    if replace:
        session.execute(delete(Prediction).where(Prediction.image_id == image.id,
                                                 Prediction.model_version == model_version,
                                                 Prediction.source == source))
    rows = []
    for category, box in boxes:
        x1, y1, x2, y2, score = _box_values(box)
        rows.append(Prediction(image_id=image.id, category_id=category.id, x1=x1, y1=y1, x2=x2, y2=y2, score=score,
                               model_version=model_version, source=source, external_id=external_id))
    session.add_all(rows)
    session.flush()
    if source == "model":
        mark_annotated(session, image, model_version, len(rows) if replace else None)
    return rows


def mark_annotated(session: Session, image: Image, model_version: str, boxes: int | None = None) -> Annotation:
    """Record (or refresh) that `image` was annotated with `model_version`; `boxes` None = count them."""
    if boxes is None:
        boxes = int(session.scalar(select(func.count(Prediction.id)).where(
            Prediction.image_id == image.id, Prediction.model_version == model_version,
            Prediction.source == "model")) or 0)
    now = utc_now()
    where = (Annotation.image_id == image.id, Annotation.model_version == model_version)
    row = session.scalar(select(Annotation).where(*where))
    if row is None:
        row = Annotation(image_id=image.id, model_version=model_version, boxes=boxes, created_at=now)
        try:
            # A savepoint: the backend's /predict and an `annotate` may annotate one image at once.
            with session.begin_nested():
                session.add(row)
            return row
        except IntegrityError:
            row = session.scalar(select(Annotation).where(*where))
            if row is None:
                raise
    row.boxes, row.created_at = boxes, now
    session.flush()
    return row


def record_model_version(session: Session, project: Project, parts: ModelVersionParts) -> ModelVersion:
    """The model_versions row of `parts` (created on first use)."""
    row = session.scalar(select(ModelVersion).where(ModelVersion.project_id == project.id,
                                                    ModelVersion.name == parts.name))
    if row is not None:
        return row
    row = ModelVersion(project_id=project.id, name=parts.name, base_model=parts.base_model,
                       tokens_digest=parts.tokens_digest, unet=parts.unet, settings_key=parts.settings_key)
    try:
        # A savepoint: another process may record the same version between our SELECT and INSERT
        # (PostgreSQL runs both transactions at once); then its row is the one to use.
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        row = session.scalar(select(ModelVersion).where(ModelVersion.project_id == project.id,
                                                        ModelVersion.name == parts.name))
        if row is None:
            raise
    return row


# ---- status -------------------------------------------------------------------------------------------
@dataclass
class VersionCount:
    name: str
    images: int  # model: images annotated with the version (with or without a box); human: with a box
    boxes: int
    source: str
    parts: ModelVersion | None
    without_box: int = 0  # model: annotated images where no box came out


def image_status_counts(session: Session, project: Project) -> dict[str, int]:
    rows = session.execute(select(Image.status, func.count()).where(Image.project_id == project.id)
                           .group_by(Image.status)).all()
    counts = {status: 0 for status in ("pending", "done", "error")}
    counts.update({status: int(n) for status, n in rows})
    return counts


def version_counts(session: Session, project: Project) -> list[VersionCount]:
    """Per model version and source: images, boxes, images without a box, and the version's recorded parts."""
    parts = {v.name: v for v in session.scalars(select(ModelVersion).where(ModelVersion.project_id == project.id))}
    model_rows = session.execute(
        select(Annotation.model_version, func.count(Annotation.id), func.coalesce(func.sum(Annotation.boxes), 0),
               func.count(Annotation.id).filter(Annotation.boxes == 0))
        .join(Image, Image.id == Annotation.image_id).where(Image.project_id == project.id)
        .group_by(Annotation.model_version)).all()
    human_rows = session.execute(
        select(Prediction.model_version, func.count(func.distinct(Prediction.image_id)), func.count(Prediction.id))
        .join(Image, Image.id == Prediction.image_id).where(Image.project_id == project.id,
                                                            Prediction.source == "human")
        .group_by(Prediction.model_version)).all()
    counts = [VersionCount(name, int(images), int(boxes), "model", parts.get(name), int(empty))
              for name, images, boxes, empty in model_rows]
    counts += [VersionCount(name, int(images), int(boxes), "human", parts.get(name)) for name, images, boxes in human_rows]
    return sorted(counts, key=lambda c: (c.name, c.source))


def latest_model_version(session: Session, project: Project) -> str | None:
    """The model version the project's images were most recently annotated with."""
    return session.scalar(select(Annotation.model_version).join(Image, Image.id == Annotation.image_id)
                          .where(Image.project_id == project.id)
                          .order_by(Annotation.created_at.desc(), Annotation.id.desc()).limit(1))


# ---- boxes out ------------------------------------------------------------------------------------------
def annotated_images(session: Session, project: Project, model_version: str) -> list[tuple[Image, list[Prediction]]]:
    """Every image annotated with `model_version`, with its model boxes of that version (possibly none),
    in image order; the boxes' categories and the images' weak labels loaded."""
    images = session.scalars(
        select(Image).join(Annotation, Annotation.image_id == Image.id)
        .where(Image.project_id == project.id, Annotation.model_version == model_version)
        .options(selectinload(Image.categories)).order_by(Image.id)).all()
    boxes: dict[int, list[Prediction]] = {image.id: [] for image in images}
    for prediction in session.scalars(
            select(Prediction).join(Image, Image.id == Prediction.image_id)
            .where(Image.project_id == project.id, Prediction.model_version == model_version,
                   Prediction.source == "model")
            .options(selectinload(Prediction.category)).order_by(Prediction.image_id, Prediction.id)):
        if prediction.image_id in boxes:
            boxes[prediction.image_id].append(prediction)
    return [(image, boxes[image.id]) for image in images]


def box_rows(session: Session, project: Project, model_version: str | None, source: str) -> list[tuple[Prediction, Image]]:
    """(box, image) pairs of a project in image order: one model version (or "all") and source ("all" too)."""
    query = (select(Prediction, Image).join(Image, Image.id == Prediction.image_id)
             .where(Image.project_id == project.id).options(selectinload(Prediction.category))
             .order_by(Image.id, Prediction.id))
    if model_version != "all":
        query = query.where(Prediction.model_version == (model_version or ""))
    if source != "all":
        query = query.where(Prediction.source == source)
    return [(prediction, image) for prediction, image in session.execute(query)]


def labelled_images(session: Session, project: Project) -> list[Image]:
    """The project's images not in error, weak labels loaded, in image order."""
    return list(session.scalars(select(Image).where(Image.project_id == project.id, Image.status != "error")
                                .options(selectinload(Image.categories)).order_by(Image.id)))


def human_boxes(session: Session, project: Project) -> list[Prediction]:
    """Every human box of the project, image and category loaded, in image order."""
    return list(session.scalars(select(Prediction).join(Image, Image.id == Prediction.image_id)
                                .where(Image.project_id == project.id, Prediction.source == "human")
                                .options(selectinload(Prediction.image), selectinload(Prediction.category))
                                .order_by(Prediction.image_id, Prediction.id)))


def delete_human_boxes(session: Session, project: Project, external_id: str) -> int:
    """Delete the human boxes stored under `external_id` (a Label Studio annotation); how many went."""
    ids = select(Image.id).where(Image.project_id == project.id)
    result = session.execute(delete(Prediction).where(Prediction.external_id == external_id,
                                                      Prediction.source == "human", Prediction.image_id.in_(ids)))
    return int(getattr(result, "rowcount", 0) or 0)


def human_box_rows(session: Session, project: Project, split: str | None = None) -> list[Prediction]:
    """Human boxes of the project (of one split when given), image loaded, in image order."""
    query = (select(Prediction).join(Image, Image.id == Prediction.image_id)
             .where(Image.project_id == project.id, Prediction.source == "human")
             .options(selectinload(Prediction.image)).order_by(Prediction.image_id, Prediction.id))
    if split is not None:
        query = query.where(Image.split == split)
    return list(session.scalars(query))


def image_counts_by_category(session: Session, categories: Sequence[Category]) -> dict[int, int]:
    """category id → images weakly labelled with it."""
    return {int(k): int(v) for k, v in session.execute(
        select(image_labels.c.category_id, func.count())
        .where(image_labels.c.category_id.in_([c.id for c in categories]))
        .group_by(image_labels.c.category_id)).all()}


def readable_image_uris_by_category(session: Session, project: Project) -> dict[int, list[str]]:
    """category id → URIs of its images not in error, in image order."""
    rows = session.execute(select(image_labels.c.category_id, Image.uri).join(Image, Image.id == image_labels.c.image_id)
                           .where(Image.project_id == project.id, Image.status != "error")
                           .order_by(Image.id)).all()
    found: dict[int, list[str]] = {}
    for category_id, uri in rows:
        found.setdefault(int(category_id), []).append(uri)
    return found


def model_boxes_on_human_annotated_images(session: Session, project: Project, model_version: str) -> list[Prediction]:
    """The model boxes of `model_version` on images that have a human box, category loaded, in image order."""
    reviewed = (select(Prediction.image_id).join(Image, Image.id == Prediction.image_id)
                .where(Image.project_id == project.id, Prediction.source == "human"))
    return list(session.scalars(select(Prediction).where(Prediction.model_version == model_version,
                                                         Prediction.source == "model",
                                                         Prediction.image_id.in_(reviewed))
                                .options(selectinload(Prediction.category))
                                .order_by(Prediction.image_id, Prediction.id)))


# ---- score calibrations ---------------------------------------------------------------------------
def score_calibration(session: Session, project: Project, model_version: str) -> StoredScoreCalibration | None:
    return session.scalar(select(StoredScoreCalibration).where(StoredScoreCalibration.project_id == project.id,
                                                               StoredScoreCalibration.model_version == model_version))


def score_calibrations(session: Session, project: Project,
                       model_versions: Sequence[str] | None = None) -> dict[str, StoredScoreCalibration]:
    """model version → its stored calibration (of `model_versions` only, when given)."""
    query = select(StoredScoreCalibration).where(StoredScoreCalibration.project_id == project.id)
    if model_versions is not None:
        query = query.where(StoredScoreCalibration.model_version.in_(list(model_versions)))
    return {row.model_version: row for row in session.scalars(query)}


def save_score_calibration(session: Session, project: Project, model_version: str, knots: Mapping[str, Any],
                           boxes: int, hits: int, fitted_from: str) -> StoredScoreCalibration:
    """Store (or replace) the calibration of one model version (call inside `Store.write()`)."""
    values = {"knots": dict(knots), "boxes": int(boxes), "hits": int(hits), "fitted_from": fitted_from,
              "fitted_at": utc_now()}
    row = score_calibration(session, project, model_version)
    if row is None:
        try:
            # A savepoint: two processes may fit one version at once (PostgreSQL); the later fit wins.
            with session.begin_nested():
                row = StoredScoreCalibration(project_id=project.id, model_version=model_version, **values)
                session.add(row)
            return row
        except IntegrityError:
            row = score_calibration(session, project, model_version)
            if row is None:
                raise
    for name, value in values.items():
        setattr(row, name, value)
    session.flush()
    return row


# ---- training runs: status ------------------------------------------------------------------------------
UNFINISHED_RUN_STATUSES = ("running", "failed", "queued")


def unfinished_runs(session: Session, project: Project, kind: str | None = None) -> list[TrainingRun]:
    """Runs that did not finish (running after a kill, failed, or queued), oldest first."""
    query = select(TrainingRun).where(TrainingRun.project_id == project.id,
                                      TrainingRun.status.in_(UNFINISHED_RUN_STATUSES))
    if kind is not None:
        query = query.where(TrainingRun.kind == kind)
    return list(session.scalars(query.order_by(TrainingRun.id)))


def lock_training_run(session: Session, run_id: int) -> None:
    """Row-lock a run (PostgreSQL) so concurrent metric merges from several processes lose no update."""
    session.execute(select(TrainingRun.id).where(TrainingRun.id == run_id).with_for_update())


def categories_trained_since(session: Session, project: Project, since: datetime) -> list[str]:
    return list(session.scalars(select(Category.name).where(Category.project_id == project.id,
                                                           Category.training_state == "trained",
                                                           Category.trained_at >= since)))


def categories_in_state(session: Session, project: Project, state: str) -> list[Category]:
    return list(session.scalars(select(Category).where(Category.project_id == project.id,
                                                       Category.training_state == state)))

