"""Calibrated box scores: fit a model version's raw score → P(IoU ≥ 0.5) on human boxes, store it,
read it back for the exports, `push` and the backend's /predict.

A box is a hit when its IoU with a human box of its label on the same image is at least 0.5; a model
box on an image a person annotated, of a label they drew nothing of, is a miss. The fit itself is
`evaluation.calibration.fit_calibration`; this module only pairs boxes and keeps fits per version.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from genpromp_annotate.engine.boxes import Box
from genpromp_annotate.evaluation.calibration import (
    DEFAULT_PRIOR,
    CalibrationError,
    ReliabilityBin,
    ScoreCalibration,
    box_hits,
    expected_calibration_error,
    fit_calibration,
    reliability_table,
)
from genpromp_annotate.log import get_logger
from genpromp_annotate.project.localizer import current_model_version
from genpromp_annotate.store import queries as q
from genpromp_annotate.store.database import Store

logger = get_logger(__name__)

DEFAULT_MIN_BOXES = 20  # fewer paired boxes than this and a fit says more about chance than the model
FROM_STORED_BOXES = "stored boxes"  # the version's boxes in the store (annotate, /predict)
FROM_RECALIBRATION = "re-calibration maps"  # boxes of the re-calibrated τ, ω from re-calibration's maps


@dataclass(frozen=True)
class ScoreFit:
    """A fitted calibration and the boxes behind it (raw scores, hits), for the before/after tables."""

    model_version: str
    calibration: ScoreCalibration
    scores: np.ndarray
    hits: np.ndarray
    fitted_from: str

    def table(self, calibrated: bool, bins: int = 10) -> list[ReliabilityBin]:
        return reliability_table(self.calibration.apply(self.scores) if calibrated else self.scores, self.hits, bins)

    def ece(self, calibrated: bool) -> float:
        return expected_calibration_error(self.calibration.apply(self.scores) if calibrated else self.scores,
                                          self.hits)

    def report(self) -> dict[str, Any]:
        return {"fitted": True, "model_version": self.model_version, "boxes": int(self.scores.size),
                "hits": int(self.hits.sum()), "fitted_from": self.fitted_from,
                "ece_before": round(self.ece(False), 4), "ece_after": round(self.ece(True), 4)}


def load_score_calibration(store: Store, project_name: str, model_version: str) -> ScoreCalibration | None:
    """The stored calibration of `model_version`, or None (never fitted: the raw score is all there is)."""
    with store.read() as session:
        row = q.score_calibration(session, q.get_project(session, project_name), model_version)
        return ScoreCalibration.from_dict(row.knots) if row is not None else None


def calibrations_of(session: Any, project: Any, model_versions: Sequence[str] | None = None) -> dict[str, ScoreCalibration]:
    """model version → its calibration, inside an open session (the box table reads them with its boxes)."""
    return {version: ScoreCalibration.from_dict(row.knots)
            for version, row in q.score_calibrations(session, project, model_versions).items()}


def calibrated_box(box: Box, calibration: ScoreCalibration | None) -> Box:
    """The box with its calibrated score (4 decimals, as stored scores), or unchanged without a calibration."""
    if calibration is None:
        return box
    return dataclasses.replace(box, score=round(calibration.probability(box.score), 4))


def save_fit(store: Store, project_name: str, model_version: str, scores: Sequence[float] | np.ndarray,
             hits: Sequence[bool] | np.ndarray, fitted_from: str, min_boxes: int = DEFAULT_MIN_BOXES,
             prior: float = DEFAULT_PRIOR) -> ScoreFit:
    """Fit on paired boxes and store the calibration of `model_version`; CalibrationError below `min_boxes`."""
    s, h = np.asarray(scores, dtype=np.float64), np.asarray(hits, dtype=bool)
    if s.size < max(1, min_boxes):
        raise CalibrationError(
            f"project {project_name!r}, model version {model_version}: {s.size} box(es) on human-annotated images, "
            f"at least {max(1, min_boxes)} needed to calibrate scores; annotate more images by hand (Label Studio, "
            f"then `genpromp-annotate pull {project_name} ...`) or lower --min-boxes")
    calibration = fit_calibration(s, h, prior=prior)
    with store.write() as session:
        q.save_score_calibration(session, q.get_project(session, project_name), model_version,
                                 calibration.as_dict(), calibration.boxes, calibration.hits, fitted_from)
    fit = ScoreFit(model_version, calibration, s, h, fitted_from)
    logger.info("project %s, %s: scores calibrated on %d boxes (%d hits), ECE %.3f → %.3f", project_name,
                model_version, s.size, int(h.sum()), fit.ece(False), fit.ece(True))
    return fit


def stored_pairs(store: Store, project_name: str, model_version: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Raw scores and hits of the version's stored boxes on human-annotated images, and how many such images."""
    with store.read() as session:
        project = q.get_project(session, project_name)
        truth: dict[tuple[int, int], list[tuple[float, float, float, float]]] = {}
        for row in q.human_boxes(session, project):
            truth.setdefault((row.image_id, row.category_id), []).append((row.x1, row.y1, row.x2, row.y2))
        predicted = [p for p in q.model_boxes_on_human_annotated_images(session, project, model_version)
                     if p.score is not None]
        scores = np.array([p.score for p in predicted], dtype=np.float64)
        hits = np.array([bool(box_hits(np.array([[p.x1, p.y1, p.x2, p.y2]]),
                                       np.array(truth.get((p.image_id, p.category_id), []), dtype=np.float64))[0])
                         for p in predicted], dtype=bool)
    return scores, hits, len({image_id for image_id, _ in truth})


def calibrate_scores(store: Store, project_name: str, model_version: str | None = None,
                     min_boxes: int = DEFAULT_MIN_BOXES, prior: float = DEFAULT_PRIOR) -> ScoreFit:
    """Fit and store the calibration of a version (default: the current one) from its stored boxes.

    Raises CalibrationError naming what is missing: human boxes, the version's boxes on those images,
    or enough of them.
    """
    version = model_version or current_model_version(store, project_name)
    if version is None:
        with store.read() as session:
            version = q.latest_model_version(session, q.get_project(session, project_name))
    if version is None:
        raise CalibrationError(f"project {project_name!r} has no annotated images yet: run "
                               f"`genpromp-annotate annotate {project_name}` first")
    scores, hits, reviewed = stored_pairs(store, project_name, version)
    if not reviewed:
        raise CalibrationError(f"project {project_name!r} has no human boxes to calibrate scores on; draw some in "
                               f"Label Studio and `genpromp-annotate pull {project_name} ...` them")
    if not scores.size:
        raise CalibrationError(f"model version {version} has no box on the {reviewed} human-annotated image(s) "
                               f"of project {project_name!r}: annotate them with it "
                               f"(`genpromp-annotate annotate {project_name}`) or pass --model-version")
    return save_fit(store, project_name, version, scores, hits, FROM_STORED_BOXES, min_boxes, prior)


def recalibration_fit(store: Store, project_name: str, localizer: Any, maps: Sequence[np.ndarray],
                      sizes: Sequence[tuple[int, int]], human_boxes: Sequence[np.ndarray],
                      min_boxes: int = DEFAULT_MIN_BOXES) -> dict[str, Any]:
    """After re-calibration: the boxes the new current version makes from re-calibration's own maps
    (`localizer` has the new settings), paired with the human boxes, fitted for that version.

    Re-calibration changes τ (part of the version), so the stored boxes belong to the old version; the
    maps it already computed give the new version's boxes on the same images at no model cost.
    """
    version = current_model_version(store, project_name)
    if version is None:
        return {"fitted": False, "reason": "the selected UNet has no recorded digest yet: the version is unknown"}
    scores: list[float] = []
    hits: list[bool] = []
    for map_s, (width, height), truth in zip(maps, sizes, human_boxes):
        boxes = localizer.boxes_for_map(map_s, width, height)
        found = box_hits(np.array([[b.x1, b.y1, b.x2, b.y2] for b in boxes]).reshape(-1, 4), truth)
        scores += [b.score for b in boxes]
        hits += [bool(x) for x in found]
    try:
        return save_fit(store, project_name, version, scores, hits, FROM_RECALIBRATION, min_boxes).report()
    except CalibrationError as exc:
        return {"fitted": False, "model_version": version, "reason": str(exc)}
