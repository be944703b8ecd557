"""Label Studio webhook events → the store: human boxes on annotation events; on START_TRAINING (or after
enough new human boxes) re-calibrate the threshold on them and train missing concept tokens.

Everything runs in one background thread, in arrival order, so the webhook answers at once (Label
Studio waits 1 s for annotation events) and two improvements never overlap.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

from genpromp_annotate.errors import GenprompError
from genpromp_annotate.labelstudio.label_config import LabelingSetup
from genpromp_annotate.labelstudio.media import MediaFetcher
from genpromp_annotate.labelstudio.tasks import human_boxes_of, resolve_weak_label, weak_label_of
from genpromp_annotate.log import get_logger
from genpromp_annotate_backend.projects import ProjectBackend

logger = get_logger(__name__)

ANNOTATION_SAVED = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
ANNOTATION_DELETED = ("ANNOTATION_DELETED", "ANNOTATIONS_DELETED")
START_TRAINING = "START_TRAINING"


class Feedback:
    """Queues webhook work on one background thread and counts what it did (for /metrics)."""

    def __init__(self, retrain_every: int = 50, fetcher: MediaFetcher | None = None) -> None:
        self.retrain_every = retrain_every
        self.fetcher = fetcher or MediaFetcher.from_env()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feedback")
        self._futures: list[Future] = []
        self._new_boxes: Counter = Counter()
        self._counts: Counter = Counter()
        self._last: dict[str, Any] = {}
        self._lock = threading.Lock()

    def submit(self, action: str, payload: dict[str, Any], labeling: LabelingSetup, project: ProjectBackend,
               on_model_change: Callable[[], None] | None = None) -> bool:
        """Queue the work an event asks for; False when the event needs none."""
        if action in ANNOTATION_SAVED:
            job: Callable[[], None] = lambda: self._store(payload, labeling, project, on_model_change)
        elif action in ANNOTATION_DELETED:
            job = lambda: self._delete(payload, project)
        elif action == START_TRAINING:
            job = lambda: self._improve(project, labeling, on_model_change)
        else:
            return False
        with self._lock:
            self._counts["queued"] += 1
            self._futures = [f for f in self._futures if not f.done()]
            self._futures.append(self._pool.submit(self._guarded, action, job))
        return True

    def _guarded(self, action: str, job: Callable[[], None]) -> None:
        try:
            job()
            with self._lock:
                self._counts["done"] += 1
        except Exception as exc:  # a background failure must be counted and logged, never lost
            logger.exception("webhook %s failed", action)
            with self._lock:
                self._counts["failed"] += 1
                self._last["error"] = f"{action}: {type(exc).__name__}: {exc}"

    def _store(self, payload: dict[str, Any], labeling: LabelingSetup, project: ProjectBackend,
               on_model_change: Callable[[], None] | None) -> None:
        annotation = payload.get("annotation") or {}
        task = payload.get("task") or {}
        if annotation.get("was_cancelled"):
            return
        image_value = (task.get("data") or {}).get(labeling.image_key)
        if not isinstance(image_value, str) or not image_value:
            raise GenprompError(f"annotation {annotation.get('id')}: task.data.{labeling.image_key} is missing")
        boxes, problems = human_boxes_of(annotation, labeling, image_value)
        for problem in problems:
            logger.warning("annotation %s: %s", annotation.get("id"), problem)
        weak = weak_label_of(task, labeling)
        resolved = resolve_weak_label(weak, labeling, project.categories) if weak else None
        weak_category = resolved[0] if isinstance(resolved, tuple) else None
        stored = project.record_human_boxes(str(annotation.get("id")), boxes, image_value,
                                            weak_category, self.fetcher, task.get("id"))
        logger.info("annotation %s: %d human box(es) stored for project %s", annotation.get("id"), stored,
                    project.name)
        with self._lock:
            self._counts["human_boxes"] += stored
            self._new_boxes[project.name] += stored
            due = self.retrain_every > 0 and self._new_boxes[project.name] >= self.retrain_every
        if due:
            self._improve(project, labeling, on_model_change)

    def _delete(self, payload: dict[str, Any], project: ProjectBackend) -> None:
        ids = [str(a.get("id")) for a in payload.get("annotations") or [] if isinstance(a, dict)]
        if isinstance(payload.get("annotation"), dict):
            ids.append(str(payload["annotation"].get("id")))
        for annotation_id in ids:
            removed = project.delete_human_boxes(annotation_id)
            logger.info("annotation %s deleted: %d human box(es) removed", annotation_id, removed)

    def _improve(self, project: ProjectBackend, labeling: LabelingSetup,
                 on_model_change: Callable[[], None] | None) -> None:
        started = time.perf_counter()
        with self._lock:
            self._new_boxes[project.name] = 0
        report = project.improve(labeling.settings)
        report["seconds"] = round(time.perf_counter() - started, 2)
        logger.info("project %s improved: %s", project.name, report)
        with self._lock:
            self._counts["improvements"] += 1
            self._last["improvement"] = report
        if on_model_change is not None:
            on_model_change()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until the queued work is done (tests, shutdown); False on timeout."""
        with self._lock:
            pending = list(self._futures)
        _, not_done = wait(pending, timeout=timeout)
        return not not_done

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"feedback": {**dict(self._counts), **self._last}}

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
