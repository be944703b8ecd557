"""Box table → Pascal VOC: one `<stem>.xml` annotation file per image.

Coordinates follow the VOC devkit: integers, 1-based, both ends inclusive. A box whose first pixel
column is `x1` (0-based) and whose `x2` is one past the last pixel covers 1-based columns `x1+1 … x2`,
so `xmin = round(x1) + 1`, `xmax = round(x2)` (same for y). A zero-width box keeps `xmax = xmin`.
File names are the image names without extension, `_2`, `_3`, … on collisions (as YOLO's).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from genpromp_annotate.exports.table import (
    ExportImage,
    category_names,
    group_by_image,
    image_file_name,
    image_stem,
    unique_stems,
)


def voc_bndbox(x1: float, y1: float, x2: float, y2: float, width: int, height: int) -> tuple[int, int, int, int]:
    """`(xmin, ymin, xmax, ymax)`, VOC 1-based inclusive, clipped to the image (module docstring)."""
    xmin = min(max(round(x1) + 1, 1), width)
    ymin = min(max(round(y1) + 1, 1), height)
    xmax = min(max(round(x2), xmin), width)
    ymax = min(max(round(y2), ymin), height)
    return xmin, ymin, xmax, ymax


def voc_element(image: ExportImage, folder: str = "images", database: str = "genpromp-annotate") -> ET.Element:
    """The `<annotation>` element of one image."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = folder
    ET.SubElement(root, "filename").text = image_file_name(image.uri) or image_stem(image.uri)
    ET.SubElement(root, "path").text = image.uri
    source = ET.SubElement(root, "source")
    ET.SubElement(source, "database").text = database
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(image.width)
    ET.SubElement(size, "height").text = str(image.height)
    ET.SubElement(size, "depth").text = "3"
    ET.SubElement(root, "segmented").text = "0"
    for box in image.boxes:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = box.label
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        # not a devkit field; readers skip unknown children, and reviewers can sort by it
        ET.SubElement(obj, "score").text = f"{box.score:.4f}"
        bndbox = ET.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"),
                              voc_bndbox(box.x1, box.y1, box.x2, box.y2, image.width, image.height)):
            ET.SubElement(bndbox, tag).text = str(value)
    return root


def write_voc(boxes: pd.DataFrame, out: Path, categories: Sequence[str] | None = None,
              **options) -> list[Path]:
    """Write one VOC XML per image into the folder `out`; returns the files in image order.

    `options`: `folder` (the `<folder>` text, default "images") and `database` (`<source><database>`).
    `categories` only checks the labels (VOC names classes by string).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    category_names(boxes, categories)
    images = group_by_image(boxes)
    written = []
    for image, stem in zip(images, unique_stems([image.uri for image in images])):
        tree = ET.ElementTree(voc_element(image, **options))
        ET.indent(tree)
        path = out / f"{stem}.xml"
        tree.write(path, encoding="utf-8", xml_declaration=True)
        written.append(path)
    return written
