"""Box table → one COCO detection JSON (images, annotations, categories)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from genpromp_annotate.exports.table import category_names, group_by_image


def coco_dataset(boxes: pd.DataFrame, categories: Sequence[str] | None = None,
                 description: str = "genpromp-annotate pseudo-labels") -> dict:
    """The COCO dict.

    Ids are stable: image ids 1…N in order of first appearance in the table, category ids 1…C in the
    order of `categories` (or of the sorted labels), annotation ids 1…M in table order. Boxes are
    `bbox = [x, y, w, h]` in original pixels (`w = x2 − x1`, x2 one past the last pixel), with
    `area = w·h`, `iscrowd = 0` and the box `score`, so the file also loads as detection results.
    """
    names = category_names(boxes, categories)
    category_id = {name: i + 1 for i, name in enumerate(names)}
    images: list[dict] = []
    annotations: list[dict] = []
    for image_id, image in enumerate(group_by_image(boxes), start=1):
        images.append({"id": image_id, "file_name": image.uri, "width": image.width, "height": image.height})
        for box in image.boxes:
            w, h = box.x2 - box.x1, box.y2 - box.y1
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": category_id[box.label],
                "bbox": [box.x1, box.y1, w, h],
                "area": w * h,
                "iscrowd": 0,
                "score": box.score,
                "model_version": box.model_version,
            })
    return {
        "info": {"description": description},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": category_id[n], "name": n, "supercategory": "object"} for n in names],
    }


def write_coco(boxes: pd.DataFrame, out: Path, categories: Sequence[str] | None = None, **options) -> Path:
    """Write `coco_dataset(boxes, categories, **options)` to the JSON file `out`; returns `out`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(coco_dataset(boxes, categories, **options), indent=1), encoding="utf-8")
    return out
