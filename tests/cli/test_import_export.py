"""`import` (three source formats, bad files) and `export` (every format) through click, on both databases."""

import csv
import json
import xml.etree.ElementTree as ET

import pandas as pd
import pytest
from bad_images import BROKEN, READABLE, good_image, problem_folder


@pytest.fixture()
def project(run, tiny_model_dir):
    run("init", "p", "--model", str(tiny_model_dir), "--label", "cat", "--label", "dog")
    return "p"


def test_import_imagefolder_records_bad_files_and_is_idempotent(run, project, tmp_path):
    problem_folder(tmp_path / "data")
    out = run("import", project, str(tmp_path / "data"))
    assert f"10 images read from {tmp_path / 'data'}: 10 added, 0 updated, 0 already there, 4 with errors" in out
    for fragment in ("empty file (0 bytes)", "corrupt or truncated", "decompression bomb", "unknown label 'zebra'"):
        assert fragment in out
    again = run("import", project, str(tmp_path / "data"))
    assert "0 added, 0 updated, 10 already there" in again
    status = run("status", project)
    assert f"images:    10  (pending {len(READABLE)}, done 0, error {len(BROKEN)})" in status
    assert "more" not in status or "… " in status


def test_import_csv_and_label_studio(run, project, tmp_path):
    good_image(tmp_path / "imgs" / "a.jpg", 1)
    good_image(tmp_path / "imgs" / "b.jpg", 2)
    good_image(tmp_path / "imgs" / "c.jpg", 3)
    listing = tmp_path / "list.csv"
    listing.write_text("path,label,split\nimgs/a.jpg,cat,train\nimgs/b.jpg,dog,val\nimgs/b.jpg,cat,val\n")
    assert "2 added" in run("import", project, str(listing), "--format", "csv")
    export = tmp_path / "ls.json"
    export.write_text(json.dumps([{"id": 7, "data": {"image": "/data/local-files/?d=imgs/c.jpg"}, "annotations": [
        {"result": [{"type": "choices", "from_name": "c", "to_name": "image", "value": {"choices": ["dog"]}}]}]}]))
    out = run("import", project, str(export), "--format", "label-studio", "--root", str(tmp_path))
    assert "1 added" in out
    listing_labels = run("labels", project)
    assert [line.split()[-1] for line in listing_labels.splitlines()[1:]] == ["2", "2"]  # cat: a, b; dog: b, c


def test_import_into_a_missing_project_fails_before_reading(run, tmp_path):
    good_image(tmp_path / "d" / "cat" / "a.jpg", 1)
    assert "no project named 'nope'" in run("import", "nope", str(tmp_path / "d"), code=1)


@pytest.fixture()
def annotated(run, project, tmp_path):
    for i in range(2):
        good_image(tmp_path / "data" / "cat" / f"c{i}.jpg", 10 + i, size=(120, 80))
    good_image(tmp_path / "data" / "dog" / "d0.png", 20, size=(64, 96))
    run("import", project, str(tmp_path / "data"))
    out = run("annotate", project, "--batch-size", "3")
    assert "3 images annotated (3 boxes, 0 errors)" in out
    return project


@pytest.mark.slow
def test_export_every_format(run, annotated, tmp_path):
    from pycocotools.coco import COCO

    out = run("export", annotated, "--format", "csv", "--out", str(tmp_path / "b.csv"))
    assert "3 boxes on 3 images" in out
    rows = list(csv.DictReader((tmp_path / "b.csv").open()))
    assert [r["label"] for r in rows] == ["cat", "cat", "dog"]
    assert [(r["width"], r["height"]) for r in rows] == [("120", "80"), ("120", "80"), ("64", "96")]
    assert len({r["model_version"] for r in rows}) == 1 and rows[0]["model_version"].startswith("gp-")

    run("export", annotated, "--format", "parquet", "--out", str(tmp_path / "b.parquet"))
    assert len(pd.read_parquet(tmp_path / "b.parquet")) == 3

    run("export", annotated, "--format", "coco", "--out", str(tmp_path / "coco.json"))
    coco = COCO(str(tmp_path / "coco.json"))
    assert len(coco.getImgIds()) == 3 and len(coco.getAnnIds()) == 3
    assert sorted(c["name"] for c in coco.loadCats(coco.getCatIds())) == ["cat", "dog"]

    run("export", annotated, "--format", "yolo", "--out", str(tmp_path / "yolo"))
    assert len(list((tmp_path / "yolo").rglob("*.txt"))) >= 3

    run("export", annotated, "--format", "voc", "--out", str(tmp_path / "voc"))
    xmls = sorted((tmp_path / "voc").rglob("*.xml"))
    assert len(xmls) == 3 and ET.parse(xmls[0]).getroot().find("object/bndbox/xmin") is not None

    run("export", annotated, "--format", "label-studio", "--out", str(tmp_path / "tasks.json"))
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    assert len(tasks) == 3 and all(t["predictions"][0]["model_version"].startswith("gp-") for t in tasks)

    none = run("export", annotated, "--format", "csv", "--out", str(tmp_path / "none.csv"), "--min-score", "1.0")
    assert "0 boxes" in none
    other = run("export", annotated, "--format", "csv", "--out", str(tmp_path / "v.csv"), "--model-version", "gp-x")
    assert "0 boxes" in other
