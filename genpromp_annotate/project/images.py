"""Images into a project, idempotent by content hash: `import` and the Label Studio backend's tasks."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session

from genpromp_annotate.errors import ImageError, StoreError
from genpromp_annotate.sources import ImportRecord, path_for_uri, read_uri_bytes
from genpromp_annotate.store import queries as q
from genpromp_annotate.store.database import Store
from genpromp_annotate.store.models import Category, Image, Project


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


def image_for_file(session: Session, project: Project, uri: str, path: Path | None,
                   size: tuple[int, int] | None = None, category_name: str | None = None) -> Image:
    """The project's image holding the bytes of `path` (found by content hash), added as annotated ("done")
    under `uri` if it is new; `category_name` becomes its weak label when it names a category."""
    from genpromp_annotate.engine.images import load_image

    if path is None:
        raise StoreError(f"{uri}: the image file is not available to hash")
    digest = content_digest(path)
    image = q.find_image_by_hash(session, project, digest)
    if image is None:
        width, height = size or load_image(path, name=uri).size
        image = Image(project_id=project.id, uri=uri, content_hash=digest, width=width, height=height,
                      status="done")
        category = q.find_category(session, project, category_name) if category_name else None
        image.categories = [category] if category is not None else []
        session.add(image)
        session.flush()
    return image


def content_digest(path: Path) -> str:
    """sha256 hex of a file's bytes: how the store recognises an image whatever its name or URL."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ensure_project_exists(store: Store, project_name: str) -> None:
    """StoreError naming `init` when the project is missing."""
    with store.read() as session:
        q.get_project(session, project_name)
