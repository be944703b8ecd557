"""The annotate loop: claim a batch → decode → localize → store, resumable and safe in several processes.

It claims batches of images atomically (see `store.queries.claim_images`), commits boxes per batch, and
only takes images not yet annotated with the current model version. Claiming, downloading and decoding
run one batch ahead on a thread (`prefetch`), so the model does not wait for them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from genpromp_annotate.errors import GenprompError, ImageError
from genpromp_annotate.log import get_logger
from genpromp_annotate.prefetch import prefetch
from genpromp_annotate.project.localizer import ProjectLocalizer
from genpromp_annotate.sources import display_uri, open_uri
from genpromp_annotate.store import queries as q
from genpromp_annotate.store.database import Store
from genpromp_annotate.store.models import Image, utc_now

logger = get_logger(__name__)

DECODE_THREADS = 8  # images of an annotate batch decoded at once
PREFETCH_BATCHES = 1  # batches claimed and decoded ahead of the model


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


@dataclass
class DecodedBatch:
    """A claimed batch after download and decoding: what the model needs, and what failed."""

    images: list[Image]
    pils: dict[int, Any]  # image id → upright RGB PIL image
    errors: dict[int, str]


def decode_batch(images: list[Image]) -> DecodedBatch:
    """Download and decode a batch on threads (PIL and sockets release the GIL)."""
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

    with ThreadPoolExecutor(max(1, min(DECODE_THREADS, len(images))), thread_name_prefix="image-decode") as pool:
        decoded = list(pool.map(decode, images))
    batch = DecodedBatch(images, {}, {})
    for image, pil in zip(images, decoded):
        if isinstance(pil, str):
            batch.errors[image.id] = pil
        else:
            batch.pils[image.id] = pil
    return batch


def _localize_batch(project_localizer: ProjectLocalizer, batch: DecodedBatch, batch_size: int,
                    ) -> tuple[dict[int, list[tuple[int, Any]]], dict[int, str], dict[int, tuple[int, int]]]:
    """Boxes per image id: ({image id: [(category id, Box)]}, {image id: error}, {image id: (w, h)})."""
    errors = dict(batch.errors)
    sizes = {image_id: pil.size for image_id, pil in batch.pils.items()}
    boxes: dict[int, list[tuple[int, Any]]] = {image_id: [] for image_id in batch.pils}
    pils, labels, owners = [], [], []
    for image in batch.images:
        if image.id not in batch.pils:
            continue
        for category in image.categories:
            pils.append(batch.pils[image.id])
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


def _claimed_batches(store: Store, project_name: str, version: str, worker: str, batch_size: int,
                     limit: int | None, lease_s: float, force_since: Any,
                     should_stop: Callable[[], bool] | None) -> Iterator[list[Image]]:
    """Claim batches until none is left, `limit` images are claimed or `should_stop()` says so."""
    claimed_total = 0
    while limit is None or claimed_total < limit:
        if should_stop and should_stop():
            return
        want = batch_size if limit is None else min(batch_size, limit - claimed_total)
        with store.write() as session:
            project = q.get_project(session, project_name)
            q.release_dead_claims(session, project)
            claimed = q.claim_images(session, project, version, worker, want, lease_s, force_since)
        if not claimed:
            return
        claimed_total += len(claimed)
        yield claimed


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
    # The next batch is claimed, downloaded and decoded on a thread while the model works on this one.
    batches = prefetch((decode_batch(claimed) for claimed in _claimed_batches(
        store, project_name, version, worker, batch_size, limit, lease_s, force_since, should_stop)),
        depth=PREFETCH_BATCHES, name="annotate-prefetch")
    try:
        for batch in batches:
            if should_stop and should_stop():
                break
            claimed = batch.images
            batch_started = time.perf_counter()
            boxes, errors, sizes = _localize_batch(project_localizer, batch, batch_size)
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
        summary.stopped = bool(should_stop and should_stop())
    finally:
        batches.close()  # stops the prefetch thread; a batch it claimed ahead is released just below
        try:
            with store.write() as session:
                q.release_claims(session, worker)
        except Exception:  # best effort on the way out; a stale claim expires or is freed by the next run
            logger.warning("could not release the claims of %s", worker, exc_info=True)
        summary.seconds = time.perf_counter() - started
    logger.info("annotated %d images (%d boxes, %d errors) with %s in %.1fs", summary.images, summary.boxes,
                len(summary.errors), version, summary.seconds)
    return summary


def annotate_with_project_model(store: Store, project_name: str, *, device: str | None = None,
                                dtype: str | None = None, batch_size: int = 8, **options: Any) -> AnnotateSummary:
    """Load the project's model (base, UNet, tokens) and annotate what is pending with it
    (`options` as `annotate_project`)."""
    from genpromp_annotate.project.localizer import build_localizer

    runner = build_localizer(store, project_name, device=device, dtype=dtype)
    return annotate_project(store, project_name, runner, batch_size=batch_size, **options)


def version_to_push(store: Store, project_name: str, device: str | None = None) -> str:
    """The project's current model version, worked out without the model where the store says enough."""
    from genpromp_annotate.project.localizer import build_localizer, current_model_version

    return current_model_version(store, project_name) or build_localizer(store, project_name, device=device).model_version

