"""A Label Studio project served from a project-store project: an adapter between the backend's HTTP
world (label-config settings, task URLs, annotation ids) and the project API (`genpromp_annotate.project`)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from genpromp_annotate import project as gp
from genpromp_annotate.engine.localizer import Localizer
from genpromp_annotate.errors import GenprompError
from genpromp_annotate.evaluation.calibration import ScoreCalibration
from genpromp_annotate.labelstudio.label_config import ProjectSettings
from genpromp_annotate.labelstudio.media import MediaFetcher, durable_uri
from genpromp_annotate.labelstudio.tasks import (
    StoredBox,
    annotation_external_id,
    human_annotated_images,
    store_annotation,
)
from genpromp_annotate.log import get_logger
from genpromp_annotate.store.database import Store, open_store
from genpromp_annotate_backend.projects import SharedModel, shared_model

logger = get_logger(__name__)




@dataclass
class StoreProject:
    """One project-store project served to Label Studio."""

    name: str
    store: Store
    device: str | None = None
    dtype: str | None = None
    train_options: Any = None  # training.runs.TrainOptions; None = the paper's stage 1 on this device
    calibrate_omegas: tuple[float, ...] = ()  # ω values re-calibration tries besides the current one
    _localizers: dict[str, Localizer] = field(default_factory=dict)
    _improve_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, name: str, db_url: str | None = None, device: str | None = None,
             dtype: str | None = None, calibrate_omegas: Sequence[float] = ()) -> StoreProject:
        """Open the store, check the project exists, load its base model (shared by the process)."""
        project = cls(name, open_store(db_url), device, dtype, calibrate_omegas=tuple(calibrate_omegas))
        project.shared  # noqa: B018 - load the model now, not during the first /predict
        return project

    @property
    def shared(self) -> SharedModel:
        return shared_model(gp.read_snapshot(self.store, self.name).base_model, self.device, self.dtype)

    @property
    def categories(self) -> list[str]:
        return list(gp.read_snapshot(self.store, self.name).categories)

    def model_version(self, settings: ProjectSettings) -> str:
        snapshot = gp.read_snapshot(self.store, self.name)
        config = gp.effective_config(snapshot.config, settings.preset, settings.config_changes())
        return gp.model_version(snapshot, config, settings.min_score).name

    def localizer(self, settings: ProjectSettings) -> tuple[Localizer, str, SharedModel]:
        snapshot = gp.read_snapshot(self.store, self.name)
        config = gp.effective_config(snapshot.config, settings.preset, settings.config_changes())
        version = gp.model_version(snapshot, config, settings.min_score).name
        shared = self.shared
        with shared.lock:
            loc = self._localizers.get(version)
            if loc is None:
                loc = gp.build_localizer(self.store, self.name, model=shared.model, config=config,
                                         min_score=settings.min_score).localizer
                self._localizers = {version: loc}  # older versions are stale: their tokens were overwritten
        return loc, version, shared

    def score_calibration(self, model_version: str) -> ScoreCalibration | None:
        return gp.load_score_calibration(self.store, self.name, model_version)

    def record_predictions(self, model_version: str, boxes: Sequence[StoredBox]) -> None:
        by_image: dict[str, list[StoredBox]] = {}
        for box in boxes:
            by_image.setdefault(box.image_uri, []).append(box)
        gp.record_predictions(self.store, self.name, model_version, [
            gp.ImageBoxes(durable_uri(self.name, uri, group[0].local_path), group[0].local_path,
                          [(b.category, b.box) for b in group], group[0].size)
            for uri, group in by_image.items()])

    def record_human_boxes(self, annotation_id: str, boxes: Sequence[StoredBox], image_value: str,
                           weak_category: str | None, fetcher: MediaFetcher, task_id: Any = None) -> int:
        return store_annotation(self.store, self.name, annotation_id, boxes, image_value, weak_category, fetcher,
                                task_id)

    def delete_human_boxes(self, annotation_id: str) -> int:
        return gp.delete_human_boxes(self.store, self.name, annotation_external_id(annotation_id))

    def recalibrate(self, settings: ProjectSettings, fetcher: MediaFetcher | None = None) -> dict[str, Any]:
        """τ (and the `calibrate_omegas` ω) from the human boxes, with the project's own stored settings:
        a Label Studio config's overrides (`settings`) apply to /predict, never to what is stored."""
        loaded = human_annotated_images(self.store, self.name, fetcher or MediaFetcher.from_env())
        if isinstance(loaded, str):
            return {"recalibrated": False, "reason": loaded}
        localizer, _, shared = self.localizer(ProjectSettings())
        return gp.recalibrate(self.store, self.name, localizer, *loaded, self.calibrate_omegas, lock=shared.lock)

    def train_missing_tokens(self) -> dict[str, Any]:
        """Stage 1 for the categories without a concept token, on the shared model (predictions wait)."""
        shared = self.shared
        with shared.lock:
            return gp.train_missing_tokens(self.store, self.name, self.train_options, shared.model,
                                           device=self.device, dtype=self.dtype)

    def calibrate_served_scores(self, settings: ProjectSettings) -> dict[str, Any]:
        """Re-calibration fits the project's own new version; a Label Studio config that overrides settings
        serves another version, fitted here from its stored /predict boxes when there are enough."""
        served = self.model_version(settings)
        if served == gp.current_model_version(self.store, self.name):
            return {"fitted": False, "reason": f"{served} is the project's own version (see calibration.scores)"}
        try:
            return gp.calibrate_scores(self.store, self.name, served).report()
        except GenprompError as exc:
            return {"fitted": False, "model_version": served, "reason": str(exc)}

    def improve(self, settings: ProjectSettings) -> dict[str, Any]:
        with self._improve_lock:
            report: dict[str, Any] = {"tokens": self.train_missing_tokens(), "calibration": self.recalibrate(settings)}
            report["served_scores"] = self.calibrate_served_scores(settings)
            report["model_version"] = self.model_version(settings)
            return report
