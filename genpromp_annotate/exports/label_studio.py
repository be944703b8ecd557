"""Box table → a JSON list of Label Studio tasks, each with its boxes as predictions (method §8 regions).

A task is `{"data": {"image": uri, "label": category}, "predictions": [prediction, ...]}` with one
prediction per model_version of the image's boxes:
`{"model_version": str, "score": float, "result": [region, ...]}` (scores calibrated where the table has
`calibrated_score`). Regions are rectanglelabels in percent
of the original size, top-left anchored, with `original_width/height` (Label Studio's COCO/VOC exports
need them). An image without a box gets `"predictions": []`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pandas as pd

from genpromp_annotate.exports.table import ExportBox, ExportImage, category_names, group_by_image


def rectangle_region(x1: float, y1: float, x2: float, y2: float, label: str, score: float, width: int, height: int,
                     from_name: str = "label", to_name: str = "image") -> dict:
    """One Label Studio `rectanglelabels` region of a box in original pixels (x2/y2 one past the last pixel).

    The one place regions are built (exports and the ML backend). `x, y, width, height` are percent of
    the image size: a 200×100 image with box 20,10→120,60 gives x = 20/200·100 = 10,
    y = 10/100·100 = 10, width = 100/200·100 = 50, height = 50/100·100 = 50.
    """
    x = min(max(x1 / width * 100.0, 0.0), 100.0)
    y = min(max(y1 / height * 100.0, 0.0), 100.0)
    # x + width may round to 100.00000000000001 (e.g. x1 = 1, x2 = 3 of a 3 px image); keep it inside the image
    w = min(max((x2 - x1) / width * 100.0, 0.0), 100.0 - x)
    h = min(max((y2 - y1) / height * 100.0, 0.0), 100.0 - y)
    return {
        "from_name": from_name,
        "to_name": to_name,
        "type": "rectanglelabels",
        "original_width": int(width),
        "original_height": int(height),
        "image_rotation": 0,
        "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [label]},
        "score": float(score),
    }


def region_from_box(box: ExportBox, width: int, height: int, from_name: str = "label",
                    to_name: str = "image") -> dict:
    """The region of one exported box."""
    return rectangle_region(box.x1, box.y1, box.x2, box.y2, box.label, box.confidence, width, height, from_name,
                            to_name)


def task_from_image(image: ExportImage, from_name: str = "label", to_name: str = "image",
                    data_key: str = "image", label_key: str | None = "label") -> dict:
    """The Label Studio task of one image; its prediction score is the best box score of that version
    (calibrated where the table has it: Label Studio's sort by score then puts the least certain first)."""
    data: dict = {data_key: image.uri}
    if label_key and image.label is not None:
        data[label_key] = image.label
    by_version: dict[str, list[ExportBox]] = {}
    for box in image.boxes:
        by_version.setdefault(box.model_version, []).append(box)
    predictions = [
        {"model_version": version,
         "score": max(b.confidence for b in found),
         "result": [region_from_box(b, image.width, image.height, from_name, to_name) for b in found]}
        for version, found in by_version.items()
    ]
    return {"data": data, "predictions": predictions}


def label_studio_tasks(boxes: pd.DataFrame, categories: Sequence[str] | None = None, from_name: str = "label",
                       to_name: str = "image", data_key: str = "image",
                       label_key: str | None = "label") -> list[dict]:
    """The task list (module docstring), one task per image in table order."""
    category_names(boxes, categories)
    return [task_from_image(image, from_name, to_name, data_key, label_key) for image in group_by_image(boxes)]


def label_config_xml(categories: Sequence[str], from_name: str = "label", to_name: str = "image",
                     data_key: str = "image") -> str:
    """A minimal labeling config whose RectangleLabels/Image pair matches the exported regions."""
    labels = "".join(f"\n    <Label value={quoteattr(str(c))}/>" for c in categories)
    return (f"<View>\n  <Image name={quoteattr(to_name)} value={quoteattr('$' + data_key)}/>\n"
            f"  <RectangleLabels name={quoteattr(from_name)} toName={quoteattr(to_name)}>{labels}\n"
            f"  </RectangleLabels>\n</View>\n")


def write_label_studio(boxes: pd.DataFrame, out: Path, categories: Sequence[str] | None = None,
                       **options) -> Path:
    """Write `label_studio_tasks(boxes, categories, **options)` to the JSON file `out` (importable in
    Label Studio's Import dialog or with the SDK). `options`: from_name, to_name, data_key, label_key."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(label_studio_tasks(boxes, categories, **options), indent=1), encoding="utf-8")
    return out
