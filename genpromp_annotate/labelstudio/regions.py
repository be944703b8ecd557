"""Pixel boxes ↔ Label Studio rectangle regions (percent of the image, top-left anchor; method §8)."""

from __future__ import annotations

import uuid
from typing import Any

from genpromp_annotate.engine.boxes import Box
from genpromp_annotate.errors import LabelConfigError
from genpromp_annotate.exports.label_studio import rectangle_region


def region_from_box(box: Box, width: int, height: int, label: str, from_name: str, to_name: str) -> dict[str, Any]:
    """One `rectanglelabels` region (with a region id) for a box in original pixels of a `width × height` image.

    Box `x2`/`y2` are one past the last pixel, so `(x2 − x1) / W · 100` is exactly the covered share
    of the width; Label Studio's COCO export multiplies back by `original_width` and gets the pixels.
    """
    if width <= 0 or height <= 0:
        raise LabelConfigError(f"image size must be positive to place a region, got {width}×{height}")
    region = rectangle_region(box.x1, box.y1, box.x2, box.y2, label, box.score, width, height, from_name, to_name)
    return {"id": uuid.uuid4().hex[:10], **region}


def box_from_region(region: dict[str, Any], width: int | None = None, height: int | None = None) -> tuple[str, Box]:
    """The label and pixel box of a Label Studio rectangle region (an annotation's or a prediction's).

    Args:
        region: `{"type": "rectanglelabels", "value": {"x", "y", "width", "height", "rectanglelabels"}, ...}`.
        width, height: the image size in pixels; default the region's `original_width/height`.
    Returns:
        `(label, Box)` with the box in pixels (`x2`/`y2` one past the last pixel) and score 1.0 unless the
        region carries one.
    Raises:
        LabelConfigError naming the missing field, or when the region is rotated (not an axis-aligned box).
    """
    value = region.get("value") or {}
    width = width or region.get("original_width")
    height = height or region.get("original_height")
    missing = [k for k in ("x", "y", "width", "height") if not isinstance(value.get(k), (int, float))]
    if missing:
        raise LabelConfigError(f"region {region.get('id', '?')}: value.{missing[0]} is missing or not a number")
    if not width or not height:
        raise LabelConfigError(f"region {region.get('id', '?')}: original_width/original_height are missing; "
                               "pass the image size")
    if abs(float(value.get("rotation") or 0.0)) > 1e-6:
        raise LabelConfigError(f"region {region.get('id', '?')}: rotation is {value['rotation']}°; "
                               "only axis-aligned rectangles are boxes")
    labels = value.get("rectanglelabels") or value.get("labels") or []
    if not labels:
        raise LabelConfigError(f"region {region.get('id', '?')}: value.rectanglelabels is empty")
    x1 = float(value["x"]) / 100.0 * width
    y1 = float(value["y"]) / 100.0 * height
    box = Box(
        x1=round(x1, 2), y1=round(y1, 2),
        x2=round(x1 + float(value["width"]) / 100.0 * width, 2),
        y2=round(y1 + float(value["height"]) / 100.0 * height, 2),
        score=float(region.get("score", 1.0) if region.get("score") is not None else 1.0),
    )
    return str(labels[0]), box
