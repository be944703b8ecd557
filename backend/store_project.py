"""A Label Studio project backed by a project-store project: its model, tokens and settings come from the
store, predictions and human boxes go back into it, and `improve` re-calibrates τ (and optionally ω) and trains
tokens."""

from __future__ import annotations

import hashlib
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import selectinload

from genpromp_annotate.engine.images import load_image
from genpromp_annotate.engine.localizer import Localizer
from genpromp_annotate.engine.tokens import concept_tokens_digest, embedding_digest
from genpromp_annotate.errors import GenprompError, StoreError
from genpromp_annotate.log import get_logger
from genpromp_annotate.presets import LocalizeConfig, preset
from genpromp_annotate.store import queries as q
from genpromp_annotate.store.database import Store, open_store
from genpromp_annotate.store.model_version import model_version_for
from genpromp_annotate.store.models import Image, Prediction
from genpromp_annotate_backend.label_config import ProjectSettings
from genpromp_annotate_backend.media import MediaFetcher
from genpromp_annotate_backend.projects import SharedModel, StoredBox, shared_model

logger = get_logger(__name__)

HUMAN_VERSION = "human"  # model_version of boxes drawn by people


def annotation_external_id(annotation_id: Any) -> str:
    """How a Label Studio annotation is named in `Prediction.external_id` (webhook and `pull` agree)."""
    return f"ls-annotation:{annotation_id}"


def tokens_digest_of(embeddings: Sequence[tuple[str, Any]]) -> str:
    """The digest `Localizer.tokens_digest` gives for these `(category, (D,) tensor)` concept tokens,
    computed from the store without touching the model (so /setup never waits for a running batch)."""
    return concept_tokens_digest({label: embedding_digest(vector) for label, vector in embeddings
                                  if vector is not None})


@dataclass
class _Snapshot:
    """What a model version depends on, read from the store in one short transaction."""

    base_model: str
    config: LocalizeConfig
    unet_id: str | None
    tokens_digest: str
    categories: list[str]


@dataclass
class StoreProject:
    """One project-store project served to Label Studio."""

    name: str
    store: Store
    device: str | None = None
    dtype: str | None = None
    train_options: Any = None  # training.runs.TrainOptions; None = the paper's stage 1 on this device
    calibrate_omegas: tuple[float, ...] = ()  # ω values re-calibration tries besides the current one; () = τ only
    _localizers: dict[str, Localizer] = field(default_factory=dict)
    _improve_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, name: str, db_url: str | None = None, device: str | None = None,
             dtype: str | None = None, calibrate_omegas: Sequence[float] = ()) -> StoreProject:
        """Open the store, check the project exists, load its base model (shared by the process)."""
        project = cls(name, open_store(db_url), device, dtype, calibrate_omegas=tuple(calibrate_omegas))
        project.shared  # noqa: B018 - load the model now, not during the first /predict
        return project

    # ---- the model -----------------------------------------------------------------------------
    def _snapshot(self, settings: ProjectSettings | None = None) -> _Snapshot:
        from genpromp_annotate.workflow import config_for_project

        with self.store.read() as session:
            project = q.get_project(session, self.name)
            categories = q.list_categories(session, project)
            config = config_for_project(project)
            tokens = tokens_digest_of([(c.name, q.category_embedding(c)) for c in categories])
            snapshot = _Snapshot(project.base_model, config, project.unet_digest if project.unet_path else None,
                                 tokens, [c.name for c in categories])
        if settings is not None:
            base = preset(settings.preset).replace(seed=config.seed) if settings.preset else config
            snapshot.config = base.replace(**settings.config_changes())
        return snapshot

    @property
    def shared(self) -> SharedModel:
        with self.store.read() as session:
            base_model = q.get_project(session, self.name).base_model
        return shared_model(base_model, self.device, self.dtype)

    @property
    def categories(self) -> list[str]:
        with self.store.read() as session:
            return [c.name for c in q.list_categories(session, q.get_project(session, self.name))]

    def _version(self, snap: _Snapshot, settings: ProjectSettings) -> str:
        key = snap.config.box_settings_key + (f"|min{settings.min_score}" if settings.min_score else "")
        return model_version_for(snap.base_model, snap.tokens_digest, snap.unet_id, key).name

    def model_version(self, settings: ProjectSettings) -> str:
        return self._version(self._snapshot(settings), settings)

    def localizer(self, settings: ProjectSettings) -> tuple[Localizer, str, SharedModel]:
        from genpromp_annotate.workflow import build_localizer

        snap = self._snapshot(settings)
        version = self._version(snap, settings)
        shared = self.shared
        with shared.lock:
            loc = self._localizers.get(version)
            if loc is None:
                built = build_localizer(self.store, self.name, model=shared.model, config=snap.config)
                loc = built.localizer
                self._localizers = {version: loc}  # older versions are stale: their tokens were overwritten
        return loc, version, shared

    # ---- predictions and human boxes ------------------------------------------------------------
    def _image_for(self, session: Any, project: Any, image_uri: str, path: Path | None,
                   size: tuple[int, int] | None, category_name: str | None) -> Image:
        """The store image holding these bytes (found by content hash), created from the task if new."""
        if path is None:
            raise StoreError(f"{image_uri}: the image file is not available to hash")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        image = q.find_image_by_hash(session, project, digest)
        if image is None:
            width, height = size or load_image(path, name=image_uri).size
            image = Image(project_id=project.id, uri=self._durable_uri(image_uri, path, digest),
                          content_hash=digest, width=width, height=height, status="done")
            category = q.find_category(session, project, category_name) if category_name else None
            image.categories = [category] if category is not None else []
            session.add(image)
            session.flush()
        return image

    def _durable_uri(self, image_uri: str, path: Path, digest: str) -> str:
        """A local task image keeps its path; a downloaded one is copied next to the store (the download
        cache is temporary), so that re-calibration and token training can read it later."""
        if Path(image_uri).is_absolute() and Path(image_uri).resolve() == path.resolve():
            return image_uri
        from genpromp_annotate.store.database import genpromp_home

        folder = genpromp_home() / "projects" / self.name / "label-studio-media"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{digest}{path.suffix.lower() or '.img'}"
        if not target.exists():
            shutil.copyfile(path, target)
        return str(target)

    def record_predictions(self, model_version: str, boxes: Sequence[StoredBox]) -> None:
        by_image: dict[str, list[StoredBox]] = {}
        for box in boxes:
            by_image.setdefault(box.image_uri, []).append(box)
        with self.store.write() as session:
            project = q.get_project(session, self.name)
            categories = {c.name: c for c in q.list_categories(session, project)}
            for group in by_image.values():
                first = group[0]
                image = self._image_for(session, project, first.image_uri, first.local_path, first.size, first.category)
                pairs: list[tuple[Any, Any]] = [(categories[b.category], b.box) for b in group if b.category in categories]
                q.add_predictions(session, image, model_version, pairs, source="model")
                image.status, image.error = "done", None

    def record_human_boxes(self, annotation_id: str, boxes: Sequence[StoredBox], image_value: str,
                           weak_category: str | None, fetcher: MediaFetcher, task_id: Any = None) -> int:
        path = fetcher.local_path(image_value, task_id)  # outside the write transaction: may download
        external = annotation_external_id(annotation_id)
        with self.store.write() as session:
            project = q.get_project(session, self.name)
            categories = {c.name: c for c in q.list_categories(session, project)}
            image = self._image_for(session, project, image_value, path, None,
                                    weak_category or (boxes[0].category if boxes else None))
            session.execute(delete(Prediction).where(Prediction.external_id == external,
                                                     Prediction.source == "human"))
            pairs: list[tuple[Any, Any]] = [(categories[b.category], b.box) for b in boxes if b.category in categories]
            q.add_predictions(session, image, HUMAN_VERSION, pairs, source="human", replace=False,
                              external_id=external)
        return len(pairs)

    def delete_human_boxes(self, annotation_id: str) -> int:
        with self.store.write() as session:
            project = q.get_project(session, self.name)
            ids = select(Image.id).where(Image.project_id == project.id)
            result = session.execute(delete(Prediction).where(
                Prediction.external_id == annotation_external_id(annotation_id), Prediction.source == "human",
                Prediction.image_id.in_(ids)))
            return int(getattr(result, "rowcount", 0) or 0)

    # ---- feedback ---------------------------------------------------------------------------------
    def human_boxes(self) -> list[tuple[str, str, list[tuple[float, float, float, float]]]]:
        """`(image uri, category, [x1, y1, x2, y2 boxes in original pixels])` per image and category."""
        with self.store.read() as session:
            project = q.get_project(session, self.name)
            rows = session.scalars(select(Prediction).join(Image, Image.id == Prediction.image_id)
                                   .where(Image.project_id == project.id, Prediction.source == "human")
                                   .options(selectinload(Prediction.image), selectinload(Prediction.category))
                                   .order_by(Prediction.image_id, Prediction.id)).all()
            grouped: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
            for row in rows:
                grouped.setdefault((row.image.uri, row.category.name), []).append((row.x1, row.y1, row.x2, row.y2))
        return [(uri, category, boxes) for (uri, category), boxes in grouped.items()]

    def recalibrate(self, settings: ProjectSettings, fetcher: MediaFetcher | None = None) -> dict[str, Any]:
        """Sweep τ (MaxBoxAcc at IoU 0.5, the engine's own box rule) on the human-corrected boxes and store
        the best one as the project's threshold; with `calibrate_omegas`, the maps of each of those ω are
        swept too and the best (ω, τ) is stored. Returns the old and new values and the accuracies."""
        from genpromp_annotate.evaluation.maxboxacc import best_threshold
        from genpromp_annotate.sources import open_uri, path_for_uri
        from genpromp_annotate.workflow import project_settings

        fetcher = fetcher or MediaFetcher.from_env()
        truth = self.human_boxes()
        if not truth:
            return {"recalibrated": False, "reason": "no human boxes yet"}
        images, labels, gts = [], [], []
        for uri, category, boxes in truth:
            try:
                # a store uri that is a path was put there by `import` (trusted); anything else came from
                # Label Studio and goes through the fetcher's rules
                path = path_for_uri(uri)
                local = path is not None and path.is_file()
                images.append(load_image(open_uri(uri) if local else fetcher.local_path(uri), name=uri))
            except (GenprompError, OSError) as exc:
                logger.warning("re-calibration skips %s: %s", uri, exc)
                continue
            labels.append(category)
            gts.append(np.asarray(boxes, dtype=np.float64))
        if not images:
            return {"recalibrated": False, "reason": "no human-annotated image could be read"}
        project_settings_now = ProjectSettings(preset=settings.preset)  # the project's own τ, not the LS override
        localizer, _, shared = self.localizer(project_settings_now)
        current = localizer.config
        # the current ω first: among equally good (ω, τ) the current ω is kept
        omegas = [current.omega] + [w for w in dict.fromkeys(self.calibrate_omegas) if w != current.omega]
        tried: dict[float, Any] = {}
        for omega in omegas:
            candidate = localizer if omega == current.omega else localizer.with_config(current.replace(omega=omega))
            with shared.lock:
                results = candidate.localize(images, labels, keep_maps=True)
            # boxes are inclusive-pixel in the evaluation: the last covered pixel is x2 − 1
            tried[omega] = best_threshold([r.map_512 for r in results if r.map_512 is not None],
                                          [g - np.array([0, 0, 1, 1]) for g in gts],
                                          image_sizes=[im.size for im in images], multi_box=current.multi_box,
                                          min_area_fraction=current.min_box_area, prefer=current.threshold)
        omega = max(omegas, key=lambda w: tried[w].accuracy)  # max keeps the first of equal accuracies
        sweep = tried[omega]
        with self.store.write() as session:
            project = q.get_project(session, self.name)
            project.settings = project_settings(current.replace(threshold=sweep.threshold, omega=omega))
        logger.info("project %s: τ %.2f → %.2f, ω %.2f → %.2f (MaxBoxAcc@0.5 %.1f%% on %d human-annotated images)",
                    self.name, current.threshold, sweep.threshold, current.omega, omega, sweep.accuracy, len(images))
        report = {"recalibrated": True, "threshold_before": current.threshold, "threshold": sweep.threshold,
                  "accuracy": sweep.accuracy, "images": len(images)}
        if len(omegas) > 1:
            report.update(omega_before=current.omega, omega=omega,
                          tried={str(w): {"threshold": tried[w].threshold, "accuracy": tried[w].accuracy}
                                 for w in omegas})
        return report

    def train_missing_tokens(self) -> dict[str, Any]:
        """Stage 1 for the categories without a concept token (`training.runs.train_project`), on the
        shared model: predictions wait for it, as they would for any other use of the model."""
        from genpromp_annotate.training.runs import TrainOptions, train_project

        with self.store.read() as session:
            missing = [c.name for c in q.list_categories(session, q.get_project(session, self.name))
                       if c.embedding is None]
        if not missing:
            return {"trained": [], "reason": "every category has a token"}
        options = self.train_options or TrainOptions(device=self.device, dtype=self.dtype)
        shared = self.shared
        with shared.lock:
            summary = train_project(self.store, self.name, options, model=shared.model)
        return {"trained": list(summary.trained), "without_images": list(summary.skipped),
                "seconds": round(summary.seconds, 2)}

    def improve(self, settings: ProjectSettings) -> dict[str, Any]:
        with self._improve_lock:
            report: dict[str, Any] = {"tokens": self.train_missing_tokens()}
            report["calibration"] = self.recalibrate(settings)
            report["model_version"] = self.model_version(settings)
            return report
