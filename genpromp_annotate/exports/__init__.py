"""Export the one-row-per-box table (`load_boxes(project)`) to common annotation formats.

Every writer has the signature `(boxes, out, categories=None, **options) -> Path | list[Path]`;
`export_boxes` filters (min score, model version) and then dispatches by format name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from genpromp_annotate.errors import ConfigError
from genpromp_annotate.exports.coco import write_coco
from genpromp_annotate.exports.label_studio import write_label_studio
from genpromp_annotate.exports.table import (
    BOX_COLUMNS,
    ExportError,
    category_names,
    filter_boxes,
    write_csv,
    write_parquet,
)
from genpromp_annotate.exports.voc import write_voc
from genpromp_annotate.exports.yolo import write_yolo

Writer = Callable[..., "Path | list[Path]"]

# format name → (writer, whether `out` is a file (True) or a folder (False))
WRITERS: dict[str, tuple[Writer, bool]] = {
    "csv": (write_csv, True),
    "parquet": (write_parquet, True),
    "coco": (write_coco, True),
    "yolo": (write_yolo, False),
    "voc": (write_voc, False),
    "label-studio": (write_label_studio, True),
}


def export_boxes(boxes: pd.DataFrame, fmt: str, out: Path, categories: Sequence[str] | None = None,
                 min_score: float | None = None, model_version: str | Sequence[str] | None = None,
                 **options) -> Path | list[Path]:
    """Filter the box table (`filter_boxes`), then write it with the writer of `fmt` (a WRITERS key)."""
    if fmt not in WRITERS:
        raise ConfigError(f"export format {fmt!r} is unknown; choose one of {sorted(WRITERS)}")
    writer, _ = WRITERS[fmt]
    return writer(filter_boxes(boxes, min_score=min_score, model_version=model_version), Path(out),
                  categories, **options)


__all__ = ["BOX_COLUMNS", "WRITERS", "ExportError", "category_names", "export_boxes", "filter_boxes",
           "write_coco", "write_csv", "write_label_studio", "write_parquet", "write_voc", "write_yolo"]
