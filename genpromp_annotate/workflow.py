"""The annotation workflow over a project store: import images, build the project's Localizer, annotate.

    report = import_records(store, "birds", read_source("data/", "imagefolder"))
    project_localizer = build_localizer(store, "birds", device="cpu")
    summary = annotate_project(store, "birds", project_localizer, batch_size=8)

`annotate_project` is resumable and safe to run in several processes at once: it claims batches of
images atomically (see `store.queries.claim_images`), commits boxes per batch, and only takes images
without a prediction of the current model version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from genpromp_annotate.engine.tokens import concept_token_name, meta_token_for, versioned_token
from genpromp_annotate.errors import GenprompError, ImageError, StoreError, UnknownLabelError
from genpromp_annotate.log import get_logger
from genpromp_annotate.presets import LocalizeConfig, preset
from genpromp_annotate.sources import ImportRecord, display_uri, open_uri, path_for_uri, read_uri_bytes
from genpromp_annotate.store import queries as q
from genpromp_annotate.store.database import Store
from genpromp_annotate.store.model_version import ModelVersionParts, model_version_for
from genpromp_annotate.store.models import Category, Image, Project, utc_now

logger = get_logger(__name__)

# Project settings that are tuples in LocalizeConfig but lists in JSON.
_TUPLE_SETTINGS = ("timesteps", "resolutions")
DECODE_THREADS = 8  # images of an annotate batch decoded at once


# ---- settings ---------------------------------------------------------------------------------------------
def project_settings(config: LocalizeConfig) -> dict[str, Any]:
    """The JSON settings a project stores: its preset name plus every field that differs from the preset."""
    base = preset(config.preset).as_dict() if config.preset else LocalizeConfig().as_dict()
    settings: dict[str, Any] = {"preset": config.preset}
    for key, value in config.as_dict().items():
        if key != "preset" and base.get(key) != value:
            settings[key] = list(value) if isinstance(value, tuple) else value
    return settings


def config_for_project(project: Project) -> LocalizeConfig:
    """The LocalizeConfig a project's boxes are made with (its preset + stored overrides)."""
    settings = dict(project.settings or {})
    base = preset(settings.pop("preset", "paper"))
    for key in _TUPLE_SETTINGS:
        if key in settings and settings[key] is not None:
            settings[key] = tuple(settings[key])
    return base.replace(**settings)


# ---- categories -----------------------------------------------------------------------------------------
def add_labels(store: Store, project_name: str, names: Sequence[str], tokenizer: Any) -> list[Category]:
    """Add categories with their meta token (method §2, computed with `tokenizer`) and concept token name."""
    added = []
    with store.write() as session:
        project = q.get_project(session, project_name)
        taken = {c.concept_token for c in q.list_categories(session, project)}
        for name in names:
            name = name.strip()
            if not name:
                raise UnknownLabelError("a label must not be empty")
            meta = meta_token_for(name, tokenizer)
            token = concept_token_name(name)
            suffix = 2
            while token in taken:  # "cat, x" and "cat, y" would both be <cat>
                token = concept_token_name(name).removesuffix(">") + f"-{suffix}>"
                suffix += 1
            taken.add(token)
            added.append(q.add_category(session, project, name, meta.word, token, meta.token_id))
    return added


def load_tokenizer(model_source: str) -> Any:
    """Only the CLIP tokenizer of a model (cheap), for meta tokens at `init` / `labels add`."""
    from pathlib import Path

    from genpromp_annotate.errors import ModelLoadError

    path = Path(model_source).expanduser()
    if path.is_dir() and (path / "tokenizer").is_dir():
        from transformers import CLIPTokenizer

        try:
            return CLIPTokenizer.from_pretrained(str(path / "tokenizer"))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{path / 'tokenizer'}: cannot load the CLIP tokenizer ({exc})") from exc
    from genpromp_annotate.engine.loading import load_stable_diffusion

    return load_stable_diffusion(model_source, device="cpu").tokenizer


# ---- import -------------------------------------------------------------------------------------------------
@dataclass
class ImportReport:
    added: int = 0
    duplicates: int = 0
    updated: int = 0  # re-imported images whose labels or earlier error changed
    errors: list[tuple[str, str]] = field(default_factory=list)  # (uri for display, error)

    @property
    def total(self) -> int:
        return self.added + self.duplicates + self.updated


@dataclass
class _Inspected:
    record: ImportRecord
    content_hash: str
    width: int | None = None
    height: int | None = None
    error: str | None = None


def _inspect(record: ImportRecord) -> _Inspected:
    """Hash the bytes and decode the image (size after EXIF rotation), or say why not. Never raises."""
    from genpromp_annotate.engine.images import load_image

    try:
        data = read_uri_bytes(record.uri)
    except OSError as exc:
        unreadable = "u-" + hashlib.sha256(record.uri.encode("utf-8", "surrogateescape")).hexdigest()[:62]
        return _Inspected(record, unreadable, error=f"{record.display}: cannot read ({exc.strerror or exc})")
    digest = hashlib.sha256(data).hexdigest()
    if record.error:
        return _Inspected(record, digest, error=record.error)
    try:
        local = path_for_uri(record.uri)
        image = load_image(local if local is not None else io.BytesIO(data), name=record.display)
    except ImageError as exc:
        return _Inspected(record, digest, error=str(exc))
    return _Inspected(record, digest, image.width, image.height)


def import_records(store: Store, project_name: str, records: Iterable[ImportRecord], split: str | None = None,
                   on_progress: Callable[[int], None] | None = None, chunk_size: int = 64) -> ImportReport:
    """Add images to a project, idempotent by content hash.

    Unreadable images and unknown labels are stored with status "error" and their message; they never
    stop the import. Re-importing an image adds labels it did not have and retries an image in error.
    """
    report = ImportReport()
    pending: list[ImportRecord] = []

    def flush() -> None:
        inspected = [_inspect(record) for record in pending]  # decoding happens outside the write lock
        with store.write() as session:
            project = q.get_project(session, project_name)
            categories = {c.name: c for c in q.list_categories(session, project)}
            for item in inspected:
                _store_one(session, project, categories, item, split, report)
        if on_progress:
            on_progress(len(pending))
        pending.clear()

    for record in records:
        pending.append(record)
        if len(pending) >= chunk_size:
            flush()
    if pending:
        flush()
    return report


def _store_one(session, project: Project, categories: dict[str, Category], item: _Inspected,
               split: str | None, report: ImportReport) -> None:
    record = item.record
    unknown = [label for label in record.labels if label not in categories]
    error = item.error
    if error is None and not record.labels:
        error = f"{record.display}: no label"
    if error is None and unknown:
        known = ", ".join(categories) or "none"
        error = (f"{record.display}: unknown label {unknown[0]!r} (project {project.name!r} has: {known}); "
                 f"add it with `genpromp-annotate labels {project.name} add {unknown[0]!r}` and import again")
    wanted = [categories[label] for label in record.labels if label in categories]
    image = q.find_image_by_hash(session, project, item.content_hash)
    if image is None:
        image = Image(project_id=project.id, uri=record.uri, content_hash=item.content_hash, width=item.width,
                      height=item.height, split=record.split or split, status="error" if error else "pending",
                      error=error)
        image.categories = [] if error else wanted
        session.add(image)
        session.flush()
        report.added += 1
    else:
        changed = False
        if image.status == "error" and error is None:
            image.status, image.error, image.uri = "pending", None, record.uri
            image.width, image.height = item.width, item.height
            changed = True
        if error is None:
            for category in wanted:
                if category not in image.categories:
                    image.categories.append(category)
                    changed = True
        if changed:
            report.updated += 1
        else:
            report.duplicates += 1
    if error:
        report.errors.append((record.display, error))


# ---- the project's localizer ----------------------------------------------------------------------------------
@dataclass
class ProjectLocalizer:
    """A Localizer set up for a project, and the model version its boxes carry."""

    localizer: Any  # genpromp_annotate.engine.localizer.Localizer
    version: ModelVersionParts
    config: LocalizeConfig

    @property
    def model_version(self) -> str:
        return self.version.name


def load_finetuned_unet(model: Any, unet_path: str) -> Any:
    """A finetuned UNet (diffusers folder), frozen, on the model's device and dtype; ModelLoadError if unusable."""
    from diffusers import UNet2DConditionModel

    from genpromp_annotate.errors import ModelLoadError

    try:
        unet = UNet2DConditionModel.from_pretrained(unet_path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"finetuned UNet {unet_path}: cannot load ({exc}); select another one or none") from exc
    unet.requires_grad_(False)
    unet.eval()
    return unet.to(model.device, model.dtype)


def build_localizer(store: Store, project_name: str, device: str | None = None, dtype: str | None = None,
                    model: Any = None, config: LocalizeConfig | None = None) -> ProjectLocalizer:
    """The project's base model (or `model`, e.g. an already loaded copy), its selected finetuned UNet,
    the concept tokens of every trained category, and the resulting model version (recorded)."""
    from genpromp_annotate.engine.loading import load_stable_diffusion, weights_digest
    from genpromp_annotate.engine.localizer import Localizer

    with store.read() as session:
        project = q.get_project(session, project_name)
        categories = q.list_categories(session, project)
        trained = [(c.name, c.concept_token, q.category_embedding(c)) for c in categories]
        base_model, unet_path, unet_digest = project.base_model, project.unet_path, project.unet_digest
        config = config or config_for_project(project)
    if model is None:
        model = load_stable_diffusion(base_model, device=device, dtype=dtype)
    unet_id = None
    if unet_path:
        # A copy of the model record around the project's UNet: `model` may be shared by other projects.
        model = dataclasses.replace(model, unet=load_finetuned_unet(model, unet_path))
        unet_id = unet_digest or weights_digest(model.unet)
    localizer = Localizer(model, config)
    for name, token, embedding in trained:
        if embedding is not None:
            localizer.set_concept_token(name, embedding.float(), versioned_token(token, embedding.float()))
    version = model_version_for(base_model, localizer.tokens_digest, unet_id, config.box_settings_key)
    with store.write() as session:
        q.record_model_version(session, q.get_project(session, project_name), version)
    logger.info("project %s: model %s on %s (%s), model version %s, settings %s", project_name, base_model,
                model.device, model.dtype, version.name, config.box_settings_key)
    return ProjectLocalizer(localizer, version, config)


def current_model_version(store: Store, project_name: str) -> str | None:
    """The model version `build_localizer` would give now, worked out without loading the model (base model,
    learned tokens, selected UNet's digest, settings); None when a selected UNet has no recorded digest."""
    from genpromp_annotate.engine.tokens import concept_tokens_digest, embedding_digest

    with store.read() as session:
        project = q.get_project(session, project_name)
        digests = {c.name: embedding_digest(embedding.float()) for c in q.list_categories(session, project)
                   if (embedding := q.category_embedding(c)) is not None}
        base_model, unet_path, unet_digest = project.base_model, project.unet_path, project.unet_digest
        settings_key = config_for_project(project).box_settings_key
    if unet_path and not unet_digest:
        return None
    return model_version_for(base_model, concept_tokens_digest(digests), unet_digest if unet_path else None,
                             settings_key).name


# ---- annotate --------------------------------------------------------------------------------------------------
@dataclass
class BatchReport:
    """What one committed batch did (for progress displays)."""

    images: int
    boxes: int
    errors: list[tuple[str, str]]
    seconds: float


@dataclass
class AnnotateSummary:
    model_version: str
    images: int = 0
    boxes: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    stopped: bool = False  # True when should_stop() ended the loop early
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def pending_count(store: Store, project_name: str, model_version: str, force_since: Any = None) -> int:
    with store.read() as session:
        return q.count_pending(session, q.get_project(session, project_name), model_version, force_since)


def _localize_batch(project_localizer: ProjectLocalizer, images: list[Image], batch_size: int,
                    ) -> tuple[dict[int, list[tuple[int, Any]]], dict[int, str], dict[int, tuple[int, int]]]:
    """Boxes per image id: ({image id: [(category id, Box)]}, {image id: error}, {image id: (w, h)})."""
    from genpromp_annotate.engine.images import load_image

    def decode(image: Image) -> Any:
        """The upright RGB image, or the message saying why it cannot be used."""
        name = display_uri(image.uri)
        if not image.categories:
            return f"{name}: no label"
        try:
            return load_image(open_uri(image.uri), name=name)
        except (ImageError, OSError) as exc:
            return str(exc) if isinstance(exc, ImageError) else f"{name}: cannot read ({exc})"

    boxes: dict[int, list[tuple[int, Any]]] = {}
    errors: dict[int, str] = {}
    sizes: dict[int, tuple[int, int]] = {}
    pils, labels, owners = [], [], []
    # decoding (and downloading) on threads: PIL and sockets release the GIL
    with ThreadPoolExecutor(max(1, min(DECODE_THREADS, len(images))), thread_name_prefix="image-decode") as pool:
        decoded = list(pool.map(decode, images))
    for image, pil in zip(images, decoded):
        if isinstance(pil, str):
            errors[image.id] = pil
            continue
        sizes[image.id] = pil.size
        boxes[image.id] = []
        for category in image.categories:
            pils.append(pil)
            labels.append(category.name)
            owners.append((image.id, category.id))
    if not pils:
        return boxes, errors, sizes
    localizer = project_localizer.localizer
    try:
        results = localizer.localize(pils, labels, batch_size=batch_size)
    except GenprompError:  # find the entry at fault, keep the others
        results = []
        for pil, label, (image_id, _) in zip(pils, labels, owners):
            try:
                results.extend(localizer.localize([pil], [label], batch_size=1))
            except GenprompError as exc:
                errors[image_id] = str(exc)
                results.append(None)
    for result, (image_id, category_id) in zip(results, owners):
        if result is not None and image_id not in errors:
            boxes[image_id].extend((category_id, box) for box in result.boxes)
    for image_id in errors:
        boxes.pop(image_id, None)
    return boxes, errors, sizes


def annotate_project(store: Store, project_name: str, project_localizer: ProjectLocalizer, *, batch_size: int = 8,
                     limit: int | None = None, force: bool = False, worker: str | None = None,
                     lease_s: float = q.DEFAULT_LEASE_S, on_batch: Callable[[BatchReport], None] | None = None,
                     should_stop: Callable[[], bool] | None = None) -> AnnotateSummary:
    """Annotate the project's images that lack a prediction of the current model version.

    Each batch is claimed in one short write transaction, localized without holding any lock, and its
    boxes committed in another; a killed process loses at most its current batch, whose claim is freed
    by the next run (same host: the process is gone) or when its lease ends.

    Args:
        limit: stop after this many images (this process).
        force: annotate every image again (and retry images in error), once, resumably.
        should_stop: checked between batches (Ctrl-C handling in the CLI).
    """
    version = project_localizer.model_version
    worker = worker or q.worker_id()
    force_since = utc_now() if force else None
    summary = AnnotateSummary(model_version=version)
    started = time.perf_counter()
    try:
        while limit is None or summary.images < limit:
            if should_stop and should_stop():
                summary.stopped = True
                break
            want = batch_size if limit is None else min(batch_size, limit - summary.images)
            with store.write() as session:
                project = q.get_project(session, project_name)
                q.release_dead_claims(session, project)
                claimed = q.claim_images(session, project, version, worker, want, lease_s, force_since)
            if not claimed:
                break
            batch_started = time.perf_counter()
            boxes, errors, sizes = _localize_batch(project_localizer, claimed, batch_size)
            n_boxes = 0
            with store.write() as session:
                categories = {c.id: c for c in q.list_categories(session, q.get_project(session, project_name))}
                for image in claimed:
                    row = session.get(Image, image.id)
                    if row is None or row.claimed_by != worker:
                        continue  # deleted, or our lease ended and another worker took it
                    if image.id in errors:
                        q.set_image_error(row, errors[image.id])
                    else:
                        pairs = [(categories[cid], box) for cid, box in boxes.get(image.id, [])]
                        q.add_predictions(session, row, version, pairs, source="model")
                        row.status, row.error = "done", None
                        row.width, row.height = sizes[image.id]
                        n_boxes += len(pairs)
                    row.claimed_by, row.claimed_until = None, utc_now()
            report = BatchReport(images=len(claimed), boxes=n_boxes,
                                 errors=[(display_uri(i.uri), errors[i.id]) for i in claimed if i.id in errors],
                                 seconds=time.perf_counter() - batch_started)
            summary.images += report.images
            summary.boxes += report.boxes
            summary.errors.extend(report.errors)
            if on_batch:
                on_batch(report)
    finally:
        try:
            with store.write() as session:
                q.release_claims(session, worker)
        except Exception:  # best effort on the way out; a stale claim expires or is freed by the next run
            logger.warning("could not release the claims of %s", worker, exc_info=True)
        summary.seconds = time.perf_counter() - started
    logger.info("annotated %d images (%d boxes, %d errors) with %s in %.1fs", summary.images, summary.boxes,
                len(summary.errors), version, summary.seconds)
    return summary


# ---- boxes as a table ------------------------------------------------------------------------------------------
def load_boxes_frame(store: Store, project_name: str, model_version: str | None = None, source: str = "model",
                     include_unannotated: bool = True):  # -> pandas.DataFrame
    """One row per box (columns of `genpromp_annotate.exports.table.BOX_COLUMNS`).

    Args:
        model_version: a version name, "all", or None for the project's latest model version.
        source: "model", "human" or "all".
        include_unannotated: images (not in error) without a box get one row with NaN box columns.
    """
    import pandas as pd
    from sqlalchemy import select
    from sqlalchemy.orm import selectinload

    from genpromp_annotate.store.models import Prediction

    columns = ["image_uri", "width", "height", "label", "x1", "y1", "x2", "y2", "score", "model_version"]
    with store.read() as session:
        project = q.get_project(session, project_name)
        version = model_version or q.latest_model_version(session, project)
        query = (select(Prediction, Image).join(Image, Image.id == Prediction.image_id)
                 .where(Image.project_id == project.id).options(selectinload(Prediction.category))
                 .order_by(Image.id, Prediction.id))
        if version != "all":
            query = query.where(Prediction.model_version == (version or ""))
        if source != "all":
            query = query.where(Prediction.source == source)
        rows: list[dict[str, Any]] = []
        seen: set[int] = set()
        for prediction, image in session.execute(query):
            seen.add(image.id)
            rows.append({"image_uri": image.uri, "width": image.width, "height": image.height,
                         "label": prediction.category.name, "x1": prediction.x1, "y1": prediction.y1,
                         "x2": prediction.x2, "y2": prediction.y2, "score": prediction.score,
                         "model_version": prediction.model_version, "_order": image.id})
        if include_unannotated:
            images = session.scalars(select(Image).where(Image.project_id == project.id, Image.status != "error")
                                     .options(selectinload(Image.categories)).order_by(Image.id))
            for image in images:
                if image.id not in seen and image.categories:
                    rows.append({"image_uri": image.uri, "width": image.width, "height": image.height,
                                 "label": image.categories[0].name, "_order": image.id})
    frame = pd.DataFrame(rows, columns=[*columns, "_order"])
    frame = frame.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)
    frame = frame.astype({"width": "Int64", "height": "Int64", "x1": "float64", "y1": "float64", "x2": "float64",
                          "y2": "float64", "score": "float64"})
    return frame


def ensure_project_exists(store: Store, project_name: str) -> None:
    """StoreError naming `init` when the project is missing."""
    with store.read() as session:
        q.get_project(session, project_name)


__all__ = ["AnnotateSummary", "BatchReport", "ImportReport", "ProjectLocalizer", "StoreError", "add_labels",
           "annotate_project", "build_localizer", "config_for_project", "import_records", "load_boxes_frame",
           "load_tokenizer", "pending_count", "project_settings"]
