"""Score one split's maps: Loc metrics at a fixed τ, the τ sweep, MaxBoxAcc v1/V2, per image and per class.

`score_split` reads every image's map from a map reader (`map_sources.py`), applies the engine's one-box
rule at τ in the engine's frame for GT-known / Top-1 / Top-5 Loc and the error breakdown, feeds the same
map to MaxBoxAcc (v1, δ = 50) and MaxBoxAccV2 (δ 30/50/70), and sweeps τ for the Loc metrics. Images
whose map cannot be read are listed as failed, not scored.

Each image is scored by a pure function (`score_image`); with `workers > 1` a pool of processes runs it
(reading the maps too) and the results are gathered in order, so the numbers do not depend on `workers`.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from genpromp_annotate.engine.boxes import reference_box
from genpromp_annotate.errors import GenprompError
from genpromp_annotate.evaluation.layouts import EvalRecord
from genpromp_annotate.evaluation.loc_metrics import LocOutcome, LocSummary, evaluate_image, summarize
from genpromp_annotate.evaluation.loc_sweep import LocSweep, LocSweepResult, sweep_ious
from genpromp_annotate.evaluation.map_sources import LoadedMap
from genpromp_annotate.evaluation.maxboxacc import MaxBoxAccEvaluator, MaxBoxAccResult, image_best_ious

# Below this many images a pool costs more (process start-up) than it saves.
MIN_IMAGES_PER_WORKER = 64


class MapReader(Protocol):
    def load(self, record: EvalRecord) -> LoadedMap: ...


@dataclass(frozen=True)
class ImageResult:
    """One scored image: the box the Loc metrics used (engine frame) and its outcome."""

    record: EvalRecord
    label: str
    box: tuple[float, float, float, float]
    width: int
    height: int
    outcome: LocOutcome


@dataclass
class SplitScores:
    """Everything computed on one split (MaxBoxAcc None when only the sweep was asked for)."""

    loc: LocSummary
    sweep: LocSweepResult | None
    maxboxacc_v1: MaxBoxAccResult | None
    maxboxacc_v2: MaxBoxAccResult | None
    images: list[ImageResult] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def per_class(self) -> dict[str, dict[str, float]]:
        """label → {"n", "gt_known_loc", "mean_iou"}, in label order."""
        grouped: dict[str, list[LocOutcome]] = {}
        for item in self.images:
            grouped.setdefault(item.label, []).append(item.outcome)
        return {label: {"n": len(outcomes), "gt_known_loc": 100.0 * sum(o.gt_known for o in outcomes) / len(outcomes),
                        "mean_iou": float(np.mean([o.iou for o in outcomes]))}
                for label, outcomes in sorted(grouped.items())}


@dataclass(frozen=True)
class ScoreSettings:
    threshold: float  # τ of the Loc metrics' box rule
    size: int  # the engine's frame
    thresholds: np.ndarray  # the τ grid of MaxBoxAcc and of the Loc sweep
    maxboxacc: bool


@dataclass(frozen=True)
class ImageParts:
    """What one image contributes: its Loc box and outcome, and its per-τ IoUs for the sweeps."""

    box: tuple[float, float, float, float]
    width: int
    height: int
    outcome: LocOutcome
    sweep: np.ndarray  # (T,) Loc box IoU per τ
    v1: np.ndarray | None  # (T,) MaxBoxAcc: largest contour
    v2: np.ndarray | None  # (T,) MaxBoxAccV2: best of all contours


def score_image(maps: MapReader, settings: ScoreSettings, record: EvalRecord, ranking: object | None) -> ImageParts:
    """Score one image (raises a GenprompError when its map cannot be read)."""
    loaded = maps.load(record)
    box = reference_box(loaded.frame, settings.threshold)
    xyxy = (box.x1, box.y1, box.x2, box.y2)
    outcome = evaluate_image(list(xyxy), record.gt_boxes, loaded.width, loaded.height, record.label,
                             size=settings.size, ranking=ranking)
    ious = sweep_ious(loaded.frame, record.gt_boxes, loaded.width, loaded.height, settings.thresholds, settings.size)
    v1 = v2 = None
    if settings.maxboxacc:
        image_size = record.size or (loaded.width, loaded.height)
        v1 = image_best_ious(loaded.raw, record.gt_boxes, image_size, settings.thresholds, "v1")
        v2 = image_best_ious(loaded.raw, record.gt_boxes, image_size, settings.thresholds, "v2")
    return ImageParts(xyxy, loaded.width, loaded.height, outcome, ious, v1, v2)


_worker_state: dict[str, Any] = {}


def _init_worker(maps: MapReader, settings: ScoreSettings) -> None:
    _worker_state.update(maps=maps, settings=settings)


def _score_job(job: tuple[EvalRecord, object | None]) -> ImageParts | str:
    """In a worker: the image's parts, or the message of the GenprompError that stopped it."""
    try:
        return score_image(_worker_state["maps"], _worker_state["settings"], *job)
    except GenprompError as exc:
        return str(exc)


def _results(maps: MapReader, settings: ScoreSettings, jobs: Sequence[tuple[EvalRecord, object | None]],
             workers: int) -> Iterator[ImageParts | str]:
    if workers <= 1 or len(jobs) < 2 * MIN_IMAGES_PER_WORKER:
        _init_worker(maps, settings)
        yield from map(_score_job, jobs)
        return
    workers = min(workers, len(jobs) // MIN_IMAGES_PER_WORKER)
    # spawn, not fork: the parent may hold torch/OpenCV threads, which a forked child can deadlock on
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_init_worker, initargs=(maps, settings)) as pool:
        yield from pool.imap(_score_job, jobs, chunksize=16)


def score_split(records: Sequence[EvalRecord], labels: Sequence[str], maps: MapReader, threshold: float,
                rankings: Mapping[str, np.ndarray] | None = None, size: int = 512, interval: float = 0.01,
                maxboxacc: bool = True, skip: set[str] | None = None,
                progress: Callable[[int], None] | None = None, workers: int = 1) -> SplitScores:
    """Score `records` (see the module docstring).

    Args:
        labels: the label string of each record (its class id is `record.label`).
        maps: reads an image's map (raises a GenprompError for a map that cannot be read); with
            `workers > 1` it is sent to the worker processes, so it must pickle.
        threshold: τ of the Loc metrics' box rule.
        rankings: classifier class ids by image prediction name (best first); None = GT-known only.
        interval: the τ grid step of MaxBoxAcc and of the Loc sweep.
        skip: image ids already known to have failed (e.g. unreadable images).
        workers: processes scoring images in parallel (1 = in this process).
    """
    settings = ScoreSettings(threshold, size, np.arange(0, 1, interval), maxboxacc)
    todo = [(record, label) for record, label in zip(records, labels) if not (skip and record.image_id in skip)]
    if progress is not None and len(todo) < len(records):
        progress(len(records) - len(todo))
    jobs = [(record, rankings[record.prediction_name] if rankings is not None else None) for record, _ in todo]
    sweep = LocSweep(thresholds=settings.thresholds, size=size)
    # fed per-image IoUs through add(): the evaluators need no GT or size tables
    v1 = MaxBoxAccEvaluator({}, {}, version="v1", interval=interval) if maxboxacc else None
    v2 = MaxBoxAccEvaluator({}, {}, version="v2", interval=interval) if maxboxacc else None
    images: list[ImageResult] = []
    failed: list[tuple[str, str]] = []
    for (record, label), (_, ranking), parts in zip(todo, jobs, _results(maps, settings, jobs, workers)):
        if progress is not None:
            progress(1)
        if isinstance(parts, str):
            failed.append((record.image_id, parts))
            continue
        sweep.add(parts.sweep, record.label, ranking)
        if v1 is not None and v2 is not None and parts.v1 is not None and parts.v2 is not None:
            v1.add(record.image_id, parts.v1)
            v2.add(record.image_id, parts.v2)
        images.append(ImageResult(record, label, parts.box, parts.width, parts.height, parts.outcome))
    scored = bool(images)
    return SplitScores(
        loc=summarize([item.outcome for item in images]), sweep=sweep.compute() if scored else None,
        maxboxacc_v1=v1.compute() if v1 is not None and scored else None,
        maxboxacc_v2=v2.compute() if v2 is not None and scored else None,
        images=images, failed=failed,
    )
