"""Label Studio tasks → engine calls → one result per task, batched inside one /predict call (method §8)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from genpromp_annotate.engine.images import load_image
from genpromp_annotate.errors import GenprompError
from genpromp_annotate.labelstudio.label_config import LabelingSetup
from genpromp_annotate.labelstudio.media import MediaFetcher
from genpromp_annotate.labelstudio.regions import region_from_box
from genpromp_annotate.labelstudio.tasks import StoredBox, resolve_weak_label, weak_label_of
from genpromp_annotate.log import get_logger
from genpromp_annotate.project.scores import calibrated_box
from genpromp_annotate_backend.projects import ProjectBackend

logger = get_logger(__name__)


@dataclass
class PredictOutcome:
    """The /predict answer and what happened to each task."""

    results: list[dict[str, Any]]
    model_version: str
    skipped: list[tuple[Any, str]] = field(default_factory=list)  # (task id, reason)
    seconds: float = 0.0


@dataclass
class _Job:
    index: int
    task_id: Any
    image_value: str
    category: str
    label: str
    image: Image.Image | None = None
    path: Path | None = None


@dataclass
class Predictor:
    """Turns a batch of tasks into Label Studio predictions with one project's Localizer.

    Attributes:
        fetcher: resolves task media (SSRF-safe).
        batch_size: images per UNet call.
        io_threads: parallel media downloads.
    """

    fetcher: MediaFetcher
    batch_size: int = 8
    io_threads: int = 4

    def _fetch(self, jobs: list[_Job], fetcher: MediaFetcher) -> dict[int, str]:
        """Decode every job's image in parallel; returns index → reason for the failures."""
        failures: dict[int, str] = {}

        def one(job: _Job) -> None:
            try:
                job.path = fetcher.local_path(job.image_value, task_id=job.task_id)
                job.image = load_image(job.path, name=job.image_value)
            except GenprompError as exc:
                failures[job.index] = str(exc)

        with ThreadPoolExecutor(max_workers=max(1, self.io_threads), thread_name_prefix="media") as pool:
            list(pool.map(one, jobs))
        return failures

    def predict(self, tasks: Sequence[dict[str, Any]], setup: LabelingSetup, project: ProjectBackend,
                fetcher: MediaFetcher | None = None) -> PredictOutcome:
        """One entry per task, in order: `{"model_version", "score", "result": [regions]}`; a task that
        cannot be predicted (no weak label, bad image) gets `{"result": []}` and a logged reason.

        Scores sent are calibrated where the version has a score calibration; the store keeps raw ones
        (a calibration can be fitted again), and `min_score` filters on the raw score (part of the version).
        """
        started = time.perf_counter()
        fetcher = fetcher or self.fetcher
        localizer, model_version, shared = project.localizer(setup.settings)
        results: list[dict[str, Any]] = [{"result": []} for _ in tasks]
        skipped: list[tuple[Any, str]] = []
        jobs: list[_Job] = []
        for index, task in enumerate(tasks):
            task_id = task.get("id") if isinstance(task, dict) else None
            if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
                skipped.append((task_id, "the task has no 'data' object"))
                continue
            value = weak_label_of(task, setup)
            if value is None:
                skipped.append((task_id, (f"no weak label: data.{setup.settings.label_field} is missing and no "
                                          "Choices annotation or prediction names one")))
                continue
            resolved = resolve_weak_label(value, setup, project.categories)
            if isinstance(resolved, str):
                skipped.append((task_id, resolved))
                continue
            image_value = task["data"].get(setup.image_key)
            if not isinstance(image_value, str) or not image_value:
                skipped.append((task_id, f"data.{setup.image_key} (the <Image> value) is missing"))
                continue
            jobs.append(_Job(index, task_id, image_value, *resolved))

        by_index = {job.index: job for job in jobs}
        for index, reason in sorted(self._fetch(jobs, fetcher).items()):
            skipped.append((by_index[index].task_id, reason))
        ready = [job for job in jobs if job.image is not None]
        stored: list[StoredBox] = []
        if ready:
            with shared.lock:
                located = localizer.localize([j.image for j in ready if j.image is not None], [j.category for j in ready],
                                             batch_size=self.batch_size)
            min_score = setup.settings.min_score
            # Label Studio sorts by prediction score: calibrated (P(IoU ≥ 0.5)) puts the least certain first
            calibration = project.score_calibration(model_version)
            for job, found in zip(ready, located):
                # score 0 is the "nothing above the threshold" placeholder box: no detection
                boxes = [b for b in found.boxes if b.score > 0.0 and b.score >= min_score]
                shown = [calibrated_box(b, calibration) for b in boxes]
                regions = [region_from_box(b, found.width, found.height, job.label, setup.from_name, setup.to_name)
                           for b in shown]
                results[job.index] = {"model_version": model_version,
                                      "score": max((b.score for b in shown), default=0.0),
                                      "result": regions}
                stored.extend(StoredBox(job.image_value, job.category, b, r["id"], job.path, (found.width, found.height))
                              for b, r in zip(boxes, regions))
        for task_id, reason in skipped:
            logger.warning("task %s: empty result: %s", task_id, reason)
        if stored:
            try:
                project.record_predictions(model_version, stored)
            except GenprompError as exc:
                logger.error("predictions of %d task(s) not stored: %s", len(ready), exc)
        return PredictOutcome(results, model_version, skipped, time.perf_counter() - started)
