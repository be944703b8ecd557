"""Score one split's maps: Loc metrics at a fixed τ, the τ sweep, MaxBoxAcc v1/V2, per image and per class.

`score_split` reads every image's map from a map reader (`map_sources.py`), applies the engine's one-box
rule at τ in the engine's frame for GT-known / Top-1 / Top-5 Loc and the error breakdown, feeds the same
map to MaxBoxAcc (v1, δ = 50) and MaxBoxAccV2 (δ 30/50/70), and sweeps τ for the Loc metrics. Images
whose map cannot be read are listed as failed, not scored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from genpromp_annotate.engine.boxes import boxes_from_map
from genpromp_annotate.errors import GenprompError
from genpromp_annotate.evaluation.layouts import EvalRecord
from genpromp_annotate.evaluation.loc_metrics import LocEvaluator, LocOutcome, LocSummary
from genpromp_annotate.evaluation.loc_sweep import LocSweep, LocSweepResult
from genpromp_annotate.evaluation.map_sources import LoadedMap
from genpromp_annotate.evaluation.maxboxacc import MaxBoxAccEvaluator, MaxBoxAccResult


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


def score_split(records: Sequence[EvalRecord], labels: Sequence[str], maps: MapReader, threshold: float,
                rankings: Mapping[str, np.ndarray] | None = None, size: int = 512, interval: float = 0.01,
                maxboxacc: bool = True, skip: set[str] | None = None,
                progress: Callable[[int], None] | None = None) -> SplitScores:
    """Score `records` (see the module docstring).

    Args:
        labels: the label string of each record (its class id is `record.label`).
        maps: reads an image's map (raises a GenprompError for a map that cannot be read).
        threshold: τ of the Loc metrics' box rule.
        rankings: classifier class ids by image prediction name (best first); None = GT-known only.
        interval: the τ grid step of MaxBoxAcc and of the Loc sweep.
        skip: image ids already known to have failed (e.g. unreadable images).
    """
    loc = LocEvaluator(size=size)
    sweep = LocSweep(thresholds=np.arange(0, 1, interval), size=size)
    gt_boxes: dict[str, np.ndarray] = {}
    sizes: dict[str, tuple[int, int]] = {}
    v1 = MaxBoxAccEvaluator(gt_boxes, sizes, version="v1", interval=interval) if maxboxacc else None
    v2 = MaxBoxAccEvaluator(gt_boxes, sizes, version="v2", interval=interval) if maxboxacc else None
    images: list[ImageResult] = []
    failed: list[tuple[str, str]] = []
    for record, label in zip(records, labels):
        if progress is not None:
            progress(1)
        if skip and record.image_id in skip:
            continue
        try:
            loaded = maps.load(record)
        except GenprompError as exc:
            failed.append((record.image_id, str(exc)))
            continue
        ranking = rankings[record.prediction_name] if rankings is not None else None
        box = boxes_from_map(loaded.frame, threshold)[0]
        xyxy = (box.x1, box.y1, box.x2, box.y2)
        outcome = loc.accumulate(list(xyxy), record.gt_boxes, loaded.width, loaded.height, record.label,
                                 ranking=ranking)
        sweep.accumulate(loaded.frame, record.gt_boxes, loaded.width, loaded.height, record.label, ranking)
        if v1 is not None and v2 is not None:
            gt_boxes[record.image_id] = record.gt_boxes
            sizes[record.image_id] = record.size or (loaded.width, loaded.height)
            v1.accumulate(loaded.raw, record.image_id)
            v2.accumulate(loaded.raw, record.image_id)
        images.append(ImageResult(record, label, xyxy, loaded.width, loaded.height, outcome))
    scored = bool(images)
    return SplitScores(
        loc=loc.compute(), sweep=sweep.compute() if scored else None,
        maxboxacc_v1=v1.compute() if v1 is not None and scored else None,
        maxboxacc_v2=v2.compute() if v2 is not None and scored else None,
        images=images, failed=failed,
    )
