"""Box table → YOLO detection labels: one `labels/<image>.txt` per image, plus classes and data files.

Layout written under `out/`:

    labels/<stem>.txt   one line per box: `class cx cy w h`, normalised by the image size, class = 0-based id
    classes.txt         one category name per line, line order = class id
    data.yaml           `nc`, `names` (id → name) and `train: images.txt`
    images.txt          the image uris, one per line, in label-file order
    manifest.csv        image_uri,label_file,width,height (how each label file was named)

Label file names are the image names without extension; two images with the same name get `_2`, `_3`, ….
An image without a box gets an empty label file (YOLO's "background image").
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from genpromp_annotate.exports.table import category_names, group_by_image, unique_stems


def _number(value: float) -> str:
    """Fixed-point with at most 6 decimals and no trailing zeros (`0.35`, `1`, `0`)."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def yolo_line(class_id: int, x1: float, y1: float, x2: float, y2: float, width: int, height: int) -> str:
    """`class cx cy w h` of a box in original pixels (x2/y2 one past the last pixel), clipped to [0, 1].

    Example (the golden test): 200×100 image, box 20,10→120,60 → cx = 70/200, cy = 35/100, w = 100/200,
    h = 50/100 → `0 0.35 0.35 0.5 0.5`.
    """
    def clip(v: float) -> float:
        return min(max(v, 0.0), 1.0)

    cx = clip((x1 + x2) / 2 / width)
    cy = clip((y1 + y2) / 2 / height)
    w = clip((x2 - x1) / width)
    h = clip((y2 - y1) / height)
    return " ".join([str(class_id), _number(cx), _number(cy), _number(w), _number(h)])


def write_yolo(boxes: pd.DataFrame, out: Path, categories: Sequence[str] | None = None,
               **options) -> list[Path]:
    """Write the YOLO folder `out` (module docstring). Returns the label files, in image order."""
    if options:
        raise TypeError(f"write_yolo: unknown option(s) {sorted(options)}")
    out = Path(out)
    labels_dir = out / "labels"
    labels_dir.mkdir(parents=True, exist_ok=True)
    names = category_names(boxes, categories)
    class_id = {name: i for i, name in enumerate(names)}
    images = group_by_image(boxes)
    stems = unique_stems([image.uri for image in images])
    written = []
    for image, stem in zip(images, stems):
        lines = [yolo_line(class_id[b.label], b.x1, b.y1, b.x2, b.y2, image.width, image.height)
                 for b in image.boxes]
        path = labels_dir / f"{stem}.txt"
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        written.append(path)
    (out / "classes.txt").write_text("".join(n + "\n" for n in names), encoding="utf-8")
    (out / "images.txt").write_text("".join(image.uri + "\n" for image in images), encoding="utf-8")
    # JSON strings are valid YAML scalars: quoting every name keeps `yes`, `1:2` or `#` from being misread
    yaml = ["path: .", "train: images.txt", "val: images.txt", f"nc: {len(names)}", "names:" if names else "names: {}"]
    yaml += [f"  {i}: {json.dumps(n, ensure_ascii=False)}" for i, n in enumerate(names)]
    (out / "data.yaml").write_text("\n".join(yaml) + "\n", encoding="utf-8")
    with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_uri", "label_file", "width", "height"])
        for image, path in zip(images, written):
            writer.writerow([image.uri, path.relative_to(out).as_posix(), image.width, image.height])
    return written
