"""Where boxes land, with a model that localizes: the shipped toy model on toy-world images.

Random models give whole-image boxes, which hide geometry bugs (EXIF frames, non-square scaling,
percent regions, COCO xywh). Here every path a box travels — the engine, import → annotate → every
export format read back by its own reader, the Label Studio backend's regions — must put the box on
the object, for images stretched up and down to non-square sizes and for EXIF-rotated copies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageOps

from genpromp_annotate.cli import cli
from genpromp_annotate.evaluation.iou import iou_inclusive
from genpromp_annotate.exports import WRITERS
from genpromp_annotate.presets import preset
from genpromp_annotate.toy.world import BASE_CLASSES, WorldImage, render_scene, split_images, wrong_word
from tests.exports.readers import READERS

EXIF_ORIENTATION = 0x0112
# (suffix, size, EXIF orientation or None): stretched up, squeezed down, and EXIF-rotated copies of both
VARIANTS = (("up", (160, 96), None), ("down", (56, 40), None), ("up-exif6", (160, 96), 6), ("down-exif8", (56, 40), 8))
MIN_ON_OBJECT = 0.85  # share of resized / EXIF-rotated copies boxed on the object, through each path
MIN_LOCALIZED = 0.85  # the toy model's GT-known on this small set (93.7 % on the held-out test split)


def world_items(n: int) -> list[WorldImage]:
    return [it for it in split_images("test", n * 2, seed=0) if it.label in BASE_CLASSES][:n]


def boxed_on_object(model, items: list[WorldImage], words: list[str] | None = None) -> list[bool]:
    """Whether the engine's box for each 64-px image (with `words`, default each label) is on the label's object."""
    from genpromp_annotate.engine.localizer import Localizer

    rendered = [render_scene(it.scene) for it in items]
    words = words or [it.label for it in items]
    results = Localizer(model, preset("toy")).localize([img for img, _ in rendered], words)
    return [bool(r.boxes) and on_object([r.boxes[0].x1, r.boxes[0].y1, r.boxes[0].x2, r.boxes[0].y2],
                                        [b for c, b in objs if c == it.label])
            for r, it, (_, objs) in zip(results, items, rendered)]


def localized_items(model, n: int, pool: int = 40) -> list[WorldImage]:
    """The first `n` test images whose 64-px original the engine boxes on the object (the Label Studio
    end-to-end test picks its three tasks from these, so a model error cannot fail it)."""
    items = world_items(pool)
    return [it for it, hit in zip(items, boxed_on_object(model, items)) if hit][:n]


def on_object(box, gt_boxes) -> bool:
    return float(iou_inclusive(np.asarray([box], dtype=float), np.asarray(gt_boxes, dtype=float)).max()) >= 0.5


def write_variant(item: WorldImage, folder: Path, suffix: str, size: tuple[int, int], orientation: int | None):
    """Write one image; return (path, GT boxes in the upright frame of `size`)."""
    upright, objects = render_scene(item.scene, *size)
    gts = [box for cls, box in objects if cls == item.label]
    path = folder / item.label / f"{Path(item.image_id).stem}-{suffix}.{'jpg' if orientation else 'png'}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if orientation is None:
        upright.save(path)
    else:
        # Stored sideways: a viewer applies the EXIF orientation to see `upright` (6: turn 90° clockwise,
        # 8: turn 90° counter-clockwise), so the stored pixels are turned the other way.
        stored = upright.transpose(Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270)
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = orientation
        stored.save(path, quality=95, exif=exif.tobytes())
        with Image.open(path) as check:
            assert ImageOps.exif_transpose(check).size == size  # the copy really is stored rotated
    return path, gts


@pytest.fixture(scope="module")
def geometry_images(toy_model, tmp_path_factory) -> dict[Path, tuple[str, list]]:
    folder = tmp_path_factory.mktemp("geometry")
    truth = {}
    for item in world_items(10):  # the first test images, whether or not the model boxes them right
        for suffix, size, orientation in VARIANTS:
            path, gts = write_variant(item, folder, suffix, size, orientation)
            truth[path] = (item.label, gts)
    return truth


def test_localize_puts_boxes_on_the_objects(toy_model):
    hits = boxed_on_object(toy_model, world_items(20))
    assert np.mean(hits) >= MIN_LOCALIZED, hits


def test_a_wrong_word_rarely_lands_on_the_object(toy_model):
    """The control that makes the test above mean something: the box follows the word, not the image."""
    items = world_items(20)
    wrong = [wrong_word(it.label) for it in items]
    hits = boxed_on_object(toy_model, items, wrong)
    assert np.mean(hits) <= 0.3, hits


@pytest.fixture(scope="module")
def annotated_project(toy_model_dir, geometry_images, tmp_path_factory):
    """import → annotate on SQLite with the toy preset; returns the CLI invoker and the database folder."""
    home = tmp_path_factory.mktemp("home")
    db = f"sqlite:///{home / 'geo.db'}"
    runner = CliRunner(env={"GENPROMP_HOME": str(home)})

    def run(*args: str) -> str:
        result = runner.invoke(cli, ["--db", db, *args])
        assert result.exit_code == 0, result.output + repr(result.exception)
        return result.output

    folder = next(iter(geometry_images)).parent.parent
    run("init", "geo", "--model", str(toy_model_dir), "--preset", "toy",
        *[arg for label in BASE_CLASSES for arg in ("--label", label)])
    run("import", "geo", str(folder), "--format", "imagefolder")
    run("annotate", "geo", "--batch-size", "16")
    return run, home


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_every_export_puts_boxes_on_the_objects(fmt, annotated_project, geometry_images):
    run, home = annotated_project
    out = home / (f"export-{fmt}.{fmt}" if WRITERS[fmt][1] else f"export-{fmt}")
    run("export", "geo", "--format", fmt, "--out", str(out))
    if WRITERS[fmt][1]:
        written: Path | list[Path] = out
    else:  # the per-image files: YOLO's labels/*.txt, VOC's *.xml
        written = sorted((out / "labels").glob("*.txt")) if fmt == "yolo" else sorted(out.glob("*.xml"))
    import pandas as pd

    csv_path = home / "rows.csv"
    run("export", "geo", "--format", "csv", "--out", str(csv_path))
    table = pd.read_csv(csv_path)
    rows = [(r.image_uri, int(r.width), int(r.height), r.label, r.x1, r.y1, r.x2, r.y2, r.score, r.model_version)
            for r in table.itertuples()]
    reader, _ = READERS[fmt]
    content = reader(written, rows, list(BASE_CLASSES))
    by_path = {Path(uri.removeprefix("file://")).name: value for uri, value in content.items()}
    hits = {}
    for path, (label, gts) in geometry_images.items():
        width, height, boxes = by_path[path.name]
        with Image.open(path) as image:
            assert (width, height) == ImageOps.exif_transpose(image).size, (fmt, path.name)  # the upright frame
        mine = [b for b in boxes if b[0] == label]
        hits[path.name] = bool(mine) and on_object(mine[0][1:], gts)
    for suffix, _, _ in VARIANTS:
        share = np.mean([hit for name, hit in hits.items() if name.endswith((f"-{suffix}.png", f"-{suffix}.jpg"))])
        assert share >= MIN_ON_OBJECT, (fmt, suffix, hits)


def test_backend_regions_land_on_the_objects(toy_model, geometry_images, tmp_path):
    from fastapi.testclient import TestClient

    from genpromp_annotate.exports.label_studio import label_config_xml
    from genpromp_annotate.labelstudio.media import MediaFetcher
    from genpromp_annotate_backend.app import BackendSettings, BackendState, create_app
    from genpromp_annotate_backend.projects import ModelProject, SharedModel
    from genpromp_annotate_backend.setups import SetupRegistry

    root = next(iter(geometry_images)).parent.parent
    shared = SharedModel(toy_model)
    state = BackendState(BackendSettings(batch_size=8, threads=2),
                         lambda name: ModelProject(name, shared, preset("toy")),
                         fetcher=MediaFetcher(roots=[root], cache_dir=tmp_path / "cache"),
                         registry=SetupRegistry(tmp_path / "state"))
    config = label_config_xml(list(BASE_CLASSES))
    paths = list(geometry_images)
    tasks = [{"id": i, "data": {"image": str(p), "label": geometry_images[p][0]}, "annotations": [], "predictions": []}
             for i, p in enumerate(paths)]
    with TestClient(create_app(state)) as client:
        setup = client.post("/setup", json={"project": "3.1", "schema": config, "hostname": "http://ls:8080",
                                            "access_token": "t", "extra_params": None})
        assert setup.status_code == 200, setup.text
        response = client.post("/predict", json={"tasks": tasks, "project": "3.1", "label_config": config,
                                                 "params": {"login": None, "password": None, "context": None}})
    assert response.status_code == 200, response.text
    hits = []
    for path, entry in zip(paths, response.json()["results"]):
        region = entry["result"][0]
        w, h, v = region["original_width"], region["original_height"], region["value"]
        with Image.open(path) as image:
            assert (w, h) == ImageOps.exif_transpose(image).size
        box = [v["x"] * w / 100, v["y"] * h / 100, (v["x"] + v["width"]) * w / 100, (v["y"] + v["height"]) * h / 100]
        hits.append(on_object(box, geometry_images[path][1]))
    assert np.mean(hits) >= MIN_ON_OBJECT, hits
