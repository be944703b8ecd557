"""A project's boxes as a table (the source of every export), and its human boxes per image."""

from __future__ import annotations

from typing import Any

from genpromp_annotate.project.scores import calibrations_of
from genpromp_annotate.store import queries as q
from genpromp_annotate.store.database import Store

BOX_TABLE_COLUMNS = ["image_uri", "width", "height", "label", "x1", "y1", "x2", "y2", "score", "model_version",
                     "calibrated_score"]


def load_boxes_frame(store: Store, project_name: str, model_version: str | None = None, source: str = "model",
                     include_unannotated: bool = True):  # -> pandas.DataFrame
    """One row per box (columns of `genpromp_annotate.exports.table.BOX_COLUMNS`, then `calibrated_score`:
    P(IoU ≥ 0.5) where the box's model version has a score calibration, NaN otherwise and for human boxes).

    Args:
        model_version: a version name, "all", or None for the version the project was last annotated with.
        source: "model", "human" or "all".
        include_unannotated: images (not in error) without a box, including those annotated with no
            detection, get one row with NaN box columns.
    """
    import pandas as pd

    rows: list[dict[str, Any]] = []
    with store.read() as session:
        project = q.get_project(session, project_name)
        version = model_version or q.latest_model_version(session, project)
        seen: set[int] = set()
        for prediction, image in q.box_rows(session, project, version, source):
            seen.add(image.id)
            rows.append({"image_uri": image.uri, "width": image.width, "height": image.height,
                         "label": prediction.category.name, "x1": prediction.x1, "y1": prediction.y1,
                         "x2": prediction.x2, "y2": prediction.y2, "score": prediction.score,
                         "model_version": prediction.model_version, "_order": image.id})
        calibrations = calibrations_of(session, project, sorted({r["model_version"] for r in rows}))
        if include_unannotated:
            for image in q.labelled_images(session, project):
                if image.id not in seen and image.categories:
                    rows.append({"image_uri": image.uri, "width": image.width, "height": image.height,
                                 "label": image.categories[0].name, "_order": image.id})
    frame = pd.DataFrame(rows, columns=[*BOX_TABLE_COLUMNS, "_order"])
    frame = frame.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)
    frame = frame.astype({"width": "Int64", "height": "Int64", "x1": "float64", "y1": "float64", "x2": "float64",
                          "y2": "float64", "score": "float64", "calibrated_score": "float64"})
    for version, calibration in calibrations.items():
        of_version = frame["model_version"] == version
        # 4 decimals, as stored raw scores and what Label Studio is sent
        frame.loc[of_version, "calibrated_score"] = calibration.apply(frame.loc[of_version, "score"].to_numpy()).round(4)
    return frame


def human_boxes_by_image(store: Store, project_name: str) -> list[tuple[str, str, list[tuple[float, float, float, float]]]]:
    """`(image uri, category, [x1, y1, x2, y2 boxes in original pixels])` per image and category."""
    with store.read() as session:
        grouped: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
        for row in q.human_boxes(session, q.get_project(session, project_name)):
            grouped.setdefault((row.image.uri, row.category.name), []).append((row.x1, row.y1, row.x2, row.y2))
    return [(uri, category, boxes) for (uri, category), boxes in grouped.items()]
