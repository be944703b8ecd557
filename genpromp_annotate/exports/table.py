"""The one-row-per-box table: its columns, the export filters, its grouping by image, CSV and parquet.

Every writer in `genpromp_annotate.exports` reads this table (what `load_boxes(project)` returns):

    image_uri  str    a path or URL
    width      int    original pixels
    height     int    original pixels
    label      str    the image's category
    x1, y1     float  original pixels, top-left
    x2, y2     float  original pixels, one past the last pixel
    score      float  the raw box score in [0, 1] (a map statistic: higher is surer, not a probability)
    model_version str what produced the box
    calibrated_score float  optional: P(IoU ≥ 0.5 with a true object) where the box's model version
                     has a score calibration (`calibrate-scores`), NaN elsewhere

An image without a box (yet) is one row whose box columns (`x1 … score`, often `model_version` too) are NaN;
writers write it as an image without annotations. A box without a score (drawn by a person) exports with
score 1.0 and is never dropped by `min_score`. `min_score` compares the calibrated score where there is
one and the raw score otherwise; csv/parquet keep both columns, the Label Studio tasks carry the
calibrated one (Label Studio sorts by it), the other formats the raw `score`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import pandas as pd

from genpromp_annotate.errors import ConfigError, GenprompError
from genpromp_annotate.log import get_logger

logger = get_logger(__name__)

BOX_COLUMNS: tuple[str, ...] = ("image_uri", "width", "height", "label", "x1", "y1", "x2", "y2", "score",
                                "model_version")
CALIBRATED = "calibrated_score"  # the optional column (module docstring)
_COORDS = ["x1", "y1", "x2", "y2"]


class ExportError(GenprompError):
    """A box table that a writer cannot export (missing column, unknown label, impossible box)."""


@dataclass(frozen=True)
class ExportBox:
    """One box of an image, original pixels, `x2`/`y2` one past the last pixel."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    model_version: str
    calibrated_score: float | None = None  # P(IoU ≥ 0.5), where the version has a calibration

    @property
    def confidence(self) -> float:
        """The calibrated score where there is one, else the raw score (what `min_score` compares)."""
        return self.score if self.calibrated_score is None else self.calibrated_score


@dataclass(frozen=True)
class ExportImage:
    """One image and its boxes (possibly none), in the order images first appear in the table."""

    uri: str
    width: int
    height: int
    label: str | None
    boxes: tuple[ExportBox, ...]


def check_box_table(boxes: pd.DataFrame) -> pd.DataFrame:
    """Raise ExportError naming the first missing column or bad row; return the table unchanged."""
    missing = [c for c in BOX_COLUMNS if c not in boxes.columns]
    if missing:
        raise ExportError(f"box table: missing column(s) {missing}; expected columns {list(BOX_COLUMNS)} "
                          f"(what genpromp_annotate.load_boxes returns), got {list(boxes.columns)}")
    if boxes["image_uri"].isna().any():
        row = int(boxes["image_uri"].isna().to_numpy().nonzero()[0][0])
        raise ExportError(f"box table row {row}: image_uri is empty")
    has_box = boxes[_COORDS].notna().all(axis=1)
    bad_size = (boxes["width"].isna() | boxes["height"].isna() | (boxes["width"] <= 0) | (boxes["height"] <= 0))
    if bad_size.any():
        row = boxes[bad_size].iloc[0]
        raise ExportError(f"box table, image {row['image_uri']!r}: width/height must be positive pixel sizes, "
                          f"got {row['width']}×{row['height']}")
    inverted = has_box & ((boxes["x2"] < boxes["x1"]) | (boxes["y2"] < boxes["y1"]))
    if inverted.any():
        row = boxes[inverted].iloc[0]
        raise ExportError(f"box table, image {row['image_uri']!r}: box [{row['x1']}, {row['y1']}, {row['x2']}, "
                          f"{row['y2']}] has x2 < x1 or y2 < y1 (expected x1 ≤ x2, y1 ≤ y2)")
    no_label = has_box & boxes["label"].isna()
    if no_label.any():
        raise ExportError(f"box table, image {boxes[no_label].iloc[0]['image_uri']!r}: a box without a label")
    return boxes


def filter_boxes(boxes: pd.DataFrame, min_score: float | None = None,
                 model_version: str | Sequence[str] | None = None) -> pd.DataFrame:
    """Drop boxes below `min_score` or of another `model_version`, keeping every image and unscored boxes.

    `min_score` compares a box's `calibrated_score` where the table has one for it, its raw `score` otherwise.

    An image that loses all its boxes stays as one row with NaN box columns, so exports still list it
    (as an image without annotations) — a filter selects boxes, never images.

    Args:
        boxes: the box table (module docstring).
        min_score: keep boxes scored (calibrated, else raw) at least this; None keeps all.
        model_version: one version or several; None keeps all.
    Returns:
        A new table with the same columns, images in their original order.
    """
    check_box_table(boxes)
    if min_score is not None and not 0.0 <= float(min_score) <= 1.0:
        raise ConfigError(f"--min-score must be within [0, 1], got {min_score}")
    has_box = boxes[_COORDS].notna().all(axis=1)
    keep = has_box.copy()
    if min_score is not None:
        keep &= confidences(boxes).fillna(math.inf) >= float(min_score)  # unscored = a person's box: kept
    if model_version is not None:
        versions = [model_version] if isinstance(model_version, str) else list(model_version)
        keep &= boxes["model_version"].isin(versions)
    kept = boxes[keep]
    lost = boxes[~boxes["image_uri"].isin(kept["image_uri"])].drop_duplicates("image_uri")
    if len(lost):
        lost = lost.copy()
        lost.loc[:, _COORDS + ["score", "model_version"] + ([CALIBRATED] if CALIBRATED in boxes else [])] = math.nan
    logger.debug("filter_boxes: %d of %d boxes kept, %d images without a box", len(kept), int(has_box.sum()),
                 len(lost))
    out = pd.concat([kept, lost]) if len(lost) else kept.copy()
    # back to the images' original order (stable within an image)
    order = {uri: i for i, uri in enumerate(pd.unique(boxes["image_uri"]))}
    out = out.assign(_order=out["image_uri"].map(order)).sort_values("_order", kind="stable")
    return out.drop(columns="_order").reset_index(drop=True)


def confidences(boxes: pd.DataFrame) -> pd.Series:
    """Per row the calibrated score where there is one, else the raw score (NaN: no box, or a person's)."""
    if CALIBRATED not in boxes.columns:
        return boxes["score"]
    return boxes[CALIBRATED].where(boxes[CALIBRATED].notna(), boxes["score"])


def _table_columns(boxes: pd.DataFrame) -> list[str]:
    """What csv/parquet write: the box columns, and the calibrated score when the table has it."""
    return list(BOX_COLUMNS) + ([CALIBRATED] if CALIBRATED in boxes.columns else [])


def category_names(boxes: pd.DataFrame, categories: Sequence[str] | None = None) -> list[str]:
    """The ordered category list: `categories` when given (ids = positions), else the sorted labels.

    Raises ExportError when a box carries a label that `categories` lacks.
    """
    labels = set(boxes.loc[boxes[_COORDS].notna().all(axis=1), "label"].astype(str))
    if categories is None:
        return sorted(labels | set(boxes["label"].dropna().astype(str)))
    names = [str(c) for c in categories]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise ExportError(f"categories: duplicate name(s) {dupes}")
    unknown = sorted(labels - set(names))
    if unknown:
        raise ExportError(f"box table: label(s) {unknown} are not in the category list {names}; "
                          "add them to the list or leave the list out")
    return names


def group_by_image(boxes: pd.DataFrame) -> list[ExportImage]:
    """Images in order of first appearance, each with its boxes in table order (NaN rows give no box)."""
    check_box_table(boxes)
    images: list[ExportImage] = []
    for uri, rows in boxes.groupby("image_uri", sort=False):
        first = rows.iloc[0]
        sizes = rows[["width", "height"]].drop_duplicates()
        if len(sizes) > 1:
            raise ExportError(f"box table, image {uri!r}: rows disagree on its size "
                              f"{sizes.to_numpy().tolist()}")
        with_box = rows[rows[_COORDS].notna().all(axis=1)]
        calibrated = with_box[CALIBRATED] if CALIBRATED in with_box.columns else pd.Series(math.nan, with_box.index)
        found = tuple(
            ExportBox(str(r.label), float(r.x1), float(r.y1), float(r.x2), float(r.y2),
                      float(r.score) if pd.notna(r.score) else 1.0,
                      str(r.model_version) if pd.notna(r.model_version) else "",
                      float(c) if pd.notna(c) else None)
            for r, c in zip(with_box.itertuples(index=False), calibrated)
        )
        labels = rows["label"].dropna()
        images.append(ExportImage(str(uri), int(first["width"]), int(first["height"]),
                                  str(labels.iloc[0]) if len(labels) else None, found))
    return images


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def image_file_name(uri: str) -> str:
    """The image's base file name (with extension) from a path, a URL or a Label Studio media uri.

    Understands plain paths, URLs and Label Studio's `/data/local-files/?d=folder/a.jpg` and
    `/data/upload/3/1a2b-a.jpg` forms.
    """
    parsed = urlparse(uri)
    path = parsed.path
    query = parse_qs(parsed.query)
    if "d" in query:  # Label Studio local files keep the real path in ?d=
        path = query["d"][0]
    return unquote(path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1])


def image_stem(uri: str) -> str:
    """A file-name stem for an image: its base name without extension, made file-system safe."""
    name = image_file_name(uri)
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return _UNSAFE.sub("_", stem).strip("._") or "image"


def unique_stems(uris: Sequence[str]) -> list[str]:
    """`image_stem` of each uri, with `_2`, `_3`, … appended on collisions (case-insensitive, so the
    names also stay distinct on case-insensitive file systems)."""
    taken: set[str] = set()
    stems = []
    for uri in uris:
        base = image_stem(uri)
        stem, n = base, 1
        while stem.lower() in taken:
            n += 1
            stem = f"{base}_{n}"
        taken.add(stem.lower())
        stems.append(stem)
    return stems


def write_csv(boxes: pd.DataFrame, out: Path, categories: Sequence[str] | None = None, **options) -> Path:
    """Write the box table as CSV (one row per box, images without a box as empty box columns; the
    `calibrated_score` column too when the table has it).

    `categories` only checks the labels; `options` go to `DataFrame.to_csv`.
    """
    check_box_table(boxes)
    if categories is not None:
        category_names(boxes, categories)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    boxes.loc[:, _table_columns(boxes)].to_csv(out, index=False, **options)
    return out


def write_parquet(boxes: pd.DataFrame, out: Path, categories: Sequence[str] | None = None, **options) -> Path:
    """Write the box table as parquet (needs pyarrow: `pip install 'genpromp-annotate[parquet]'`)."""
    check_box_table(boxes)
    if categories is not None:
        category_names(boxes, categories)
    try:
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise ExportError(f"{out}: parquet export needs pyarrow; run `pip install 'genpromp-annotate[parquet]'`"
                          ) from exc
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table = boxes.loc[:, _table_columns(boxes)].astype({"width": "int64", "height": "int64"})
    table.to_parquet(out, index=False, **options)
    return out
