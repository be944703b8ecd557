"""genpromp-annotate: bounding-box pseudo-labels from weakly labelled images with GenPromp.

Public API (heavy modules load on first use):

    Localizer, LocalizeResult       the engine (genpromp_annotate.engine.localizer)
    load_boxes(project, db=None)    a project's boxes as a pandas DataFrame, one row per box
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    import pandas as pd

    from genpromp_annotate.engine.localizer import Localizer, LocalizeResult


def load_boxes(project: str, db: str | None = None, model_version: str | None = None,
               source: str = "model") -> pd.DataFrame:
    """The boxes of a project: one row per box, boxes in original pixels.

    Columns: image_uri, width, height, label, x1, y1, x2, y2 (x2/y2 one past the last pixel), score,
    model_version. Images not annotated yet (and not in error) appear once with NaN box columns.

    Args:
        project: the project name.
        db: database URL; default GENPROMP_DATABASE_URL or SQLite under $GENPROMP_HOME.
        model_version: a version name, "all", or None for the project's latest model version.
        source: "model" (default), "human" or "all".

    Example:
        >>> boxes = load_boxes("birds")
        >>> boxes[boxes.score > 0.5].head()
    """
    from genpromp_annotate.project import load_boxes_frame
    from genpromp_annotate.store.database import open_store

    store = open_store(db)
    try:
        return load_boxes_frame(store, project, model_version=model_version, source=source)
    finally:
        store.dispose()


def __getattr__(name: str) -> Any:
    if name in ("Localizer", "LocalizeResult"):
        from genpromp_annotate.engine import localizer

        return getattr(localizer, name)
    raise AttributeError(f"module 'genpromp_annotate' has no attribute {name!r}")


__all__ = ["LocalizeResult", "Localizer", "__version__", "load_boxes"]
