"""Readers of every export format, each through that format's usual reader library or spec.

Each reader turns the written files back into {image_uri: (width, height, [(label, x1, y1, x2, y2), ...])}
in original pixels (x2/y2 one past the last pixel). Shared by the exporter contract test and the
geometry tests of the toy model.
"""

from __future__ import annotations

import csv
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd

from genpromp_annotate.exports.label_studio import label_config_xml

Content = dict[str, tuple[int, int, list[tuple]]]


def expected_content(rows: list[tuple]) -> Content:
    content: Content = {}
    for uri, w, h, label, x1, y1, x2, y2, _score, _version in rows:
        entry = content.setdefault(uri, (w, h, []))
        if not math.isnan(x1):
            entry[2].append((label, x1, y1, x2, y2))
    return content


def read_table(path: Path, frame: pd.DataFrame) -> Content:
    content: Content = {}
    for row in frame.itertuples(index=False):
        entry = content.setdefault(row.image_uri, (int(row.width), int(row.height), []))
        if pd.notna(row.x1):
            entry[2].append((row.label, row.x1, row.y1, row.x2, row.y2))
    return content


def read_csv(path: Path, rows: list[tuple], categories: list[str]) -> Content:
    return read_table(path, pd.read_csv(path))


def read_parquet(path: Path, rows: list[tuple], categories: list[str]) -> Content:
    import pyarrow.parquet as pq

    return read_table(path, pq.read_table(path).to_pandas())


def read_coco(path: Path, rows: list[tuple], categories: list[str]) -> Content:
    from pycocotools.coco import COCO

    coco = COCO(str(path))
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    assert [names[i] for i in sorted(names)] == categories  # ids follow the given order, `bird` included
    content: Content = {}
    for image in coco.loadImgs(coco.getImgIds()):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        content[image["file_name"]] = (image["width"], image["height"], [
            (names[a["category_id"]], a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
             a["bbox"][1] + a["bbox"][3]) for a in anns])
    # the same file also loads as detection results against itself
    results = coco.loadRes([{k: a[k] for k in ("image_id", "category_id", "bbox", "score")}
                            for a in coco.dataset["annotations"]])
    assert len(results.getAnnIds()) == len(coco.getAnnIds())
    return content


def read_yolo(paths: list[Path], rows: list[tuple], categories: list[str]) -> Content:
    """A plain YOLO reader: classes.txt for names, manifest.csv for which image a label file belongs to."""
    out = paths[0].parent.parent
    names = (out / "classes.txt").read_text().splitlines()
    assert names == categories
    content: Content = {}
    with open(out / "manifest.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            w, h = int(row["width"]), int(row["height"])
            found = []
            for line in (out / row["label_file"]).read_text().splitlines():
                cls, cx, cy, bw, bh = line.split()
                cx, cy, bw, bh = float(cx) * w, float(cy) * h, float(bw) * w, float(bh) * h
                found.append((names[int(cls)], cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2))
            content[row["image_uri"]] = (w, h, found)
    return content


def read_voc(paths: list[Path], rows: list[tuple], categories: list[str]) -> Content:
    content: Content = {}
    for path in paths:
        root = ET.parse(path).getroot()
        size = root.find("size")
        found = []
        for obj in root.iter("object"):
            bb = obj.find("bndbox")
            xmin, ymin, xmax, ymax = (int(bb.find(t).text) for t in ("xmin", "ymin", "xmax", "ymax"))
            found.append((obj.find("name").text, xmin - 1, ymin - 1, xmax, ymax))  # 1-based inclusive → ours
        content[root.find("path").text] = (int(size.find("width").text), int(size.find("height").text), found)
    return content


def read_label_studio(path: Path, rows: list[tuple], categories: list[str]) -> Content:
    from label_studio_sdk.label_interface import LabelInterface

    tasks = json.loads(path.read_text())
    interface = LabelInterface(label_config_xml(categories))
    content: Content = {}
    for task in tasks:
        found, size = [], None
        for prediction in task["predictions"]:
            assert interface.validate_prediction(prediction, return_errors=True) == []
            for region in prediction["result"]:
                w, h, v = region["original_width"], region["original_height"], region["value"]
                size = (w, h)
                found.append((v["rectanglelabels"][0], v["x"] * w / 100, v["y"] * h / 100,
                              (v["x"] + v["width"]) * w / 100, (v["y"] + v["height"]) * h / 100))
        # Label Studio tasks carry no size for images without a region: take it from the table
        size = size or next((w, h) for uri, w, h, *_ in rows if uri == task["data"]["image"])
        content[task["data"]["image"]] = (*size, found)
    return content


READERS = {"csv": (read_csv, 1e-9), "parquet": (read_parquet, 1e-9), "coco": (read_coco, 1e-9),
           "yolo": (read_yolo, 1e-3), "voc": (read_voc, 0.5), "label-studio": (read_label_studio, 1e-6)}
