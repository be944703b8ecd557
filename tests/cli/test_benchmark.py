"""`benchmark` through click on small CUB-, ImageNet- and wsolevaluation-format folders made here.

The slow tests run the tiny model: a CUB run shared by the module (4 test images of 2 classes and one
train image that must be left out; first `--limit 2`, then `--resume` over all), a wsolevaluation tree,
and a store project. The fast ones fill the map cache (or a `--maps` folder) with maps whose boxes are
known, so every number can be worked out by hand; no model is loaded.
"""

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from genpromp_annotate.cli import cli
from genpromp_annotate.engine.boxes import boxes_from_map
from genpromp_annotate.engine.localizer import Localizer
from genpromp_annotate.evaluation.grid import grid_size
from genpromp_annotate.evaluation.layouts import read_cub, read_wsolevaluation
from genpromp_annotate.evaluation.loc_metrics import LocEvaluator, gt_boxes_to_frame
from genpromp_annotate.evaluation.map_cache import MapCache, maps_version
from genpromp_annotate.evaluation.maxboxacc import MaxBoxAccEvaluator, evaluate_map_folder
from genpromp_annotate.presets import preset

CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
TOP_LEVEL = {"gt_known_loc", "top1_loc", "top5_loc", "maxboxacc", "maxboxacc_v2", "maxboxacc_v2_per_iou", "errors",
             "thresholds", "n_images"}


def _image(path, size, seed):
    """A real JPEG/PNG: noise with a bright rectangle at [W/4, W/2) × [H/4, H/2) (the GT box below)."""
    width, height = size
    array = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    array[height // 4 : height // 2, width // 4 : width // 2] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _gt_xywh(size):
    width, height = size
    return width // 4, height // 4, width // 4, height // 4


def make_cub(root):
    """5 images: ids 1–4 test (ids 1, 2 of class 1, ids 3, 4 of class 2; 1-based in the files), id 5 train."""
    items = [(1, 1, (96, 64)), (2, 1, (64, 80)), (3, 2, (80, 80)), (4, 2, (120, 72)), (5, 1, (64, 64))]
    lines = {name: [] for name in ("images", "image_class_labels", "train_test_split", "bounding_boxes")}
    for image_id, label, size in items:
        rel = f"{CLASSES[label - 1]}/{CLASSES[label - 1].split('.')[1]}_{image_id:04d}_{image_id}.jpg"
        _image(root / "images" / rel, size, seed=image_id)
        lines["images"].append(f"{image_id} {rel}")
        lines["image_class_labels"].append(f"{image_id} {label}")
        lines["train_test_split"].append(f"{image_id} {1 if image_id == 5 else 0}")
        lines["bounding_boxes"].append(f"{image_id} " + " ".join(f"{v:.1f}" for v in _gt_xywh(size)))
    for name, content in lines.items():
        (root / f"{name}.txt").write_text("\n".join(content) + "\n")
    (root / "classes.txt").write_text("".join(f"{i} {name}\n" for i, name in enumerate(CLASSES, start=1)))
    return root


def invoke(*args, code=0):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == code, result.output + repr(result.exception)
    return result


# ---- the tiny model on CUB ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cub_run(tiny_model_dir, tmp_path_factory):
    """`--limit 2`, then `--resume` over the 4 test images; records what each run computed."""
    tmp = tmp_path_factory.mktemp("bench-cub")
    root = make_cub(tmp / "CUB_200_2011")
    maps_dir = tmp / "maps"
    base = ["benchmark", "--layout", "cub", "--root", str(root), "--model", str(tiny_model_dir),
            "--maps-dir", str(maps_dir), "--batch-size", "2"]  # no --preset: cub-paper is the layout's default
    computed: list[list[str]] = []
    original = Localizer.compute_maps

    def counting(self, images, labels, early_exit=True):
        computed.append(list(labels))
        return original(self, images, labels, early_exit)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Localizer, "compute_maps", counting)
        first = CliRunner().invoke(cli, base + ["--limit", "2", "--out", str(tmp / "first.json")])
        assert first.exit_code == 0, first.output
        first_labels = [label for batch in computed for label in batch]
        version = json.loads((tmp / "first.json").read_text())["meta"]["maps_version"]
        mtimes = {p: os.stat(p).st_mtime_ns for p in sorted(map(str, maps_dir.rglob("*.npz")))}
        second = CliRunner().invoke(cli, base + ["--resume", "--out", str(tmp / "report.json"),
                                                 "--export-wsol-maps", str(tmp / "wsol-maps")])
        assert second.exit_code == 0, second.output
    return {"tmp": tmp, "root": root, "maps_dir": maps_dir, "base": base, "first": first, "second": second,
            "first_labels": first_labels, "second_computed": sum(map(len, computed)) - len(first_labels),
            "mtimes": mtimes, "version": version, "report": json.loads((tmp / "report.json").read_text())}


@pytest.mark.slow  # shares the module's CUB run (4 images through the tiny model)
def test_report_structure_and_files(cub_run):
    report, tmp = cub_run["report"], cub_run["tmp"]
    assert TOP_LEVEL <= set(report) and report["n_images"] == 4
    assert set(report["maxboxacc_v2_per_iou"]) == {"30", "50", "70"}
    assert all(0.0 <= report[key] <= 100.0 for key in ("gt_known_loc", "maxboxacc", "maxboxacc_v2"))
    assert report["meta"]["dataset"] == "cub" and report["meta"]["meta_word"] == "bird"
    assert report["meta"]["config"]["threshold"] == 0.23 and report["meta"]["config"]["preset"] == "cub-paper"
    assert report["thresholds"]["loc"] == 0.23 and report["thresholds"]["loc_source"] == "preset cub-paper"
    assert set(report["thresholds"]["best_on_this_split"]) == {"gt_known_loc", "top1_loc", "top5_loc"}
    assert report["images"] == {"total": 4, "evaluated": 4, "computed": 2, "failed": 0}
    assert report["top1_loc"] is None and report["top5_loc"] is None and report["classifier"] is False
    assert set(report["errors"]) == {"Cls", "correct", "M-Ins", "Part", "More", "Wrong"}
    assert sum(report["errors"].values()) == pytest.approx(100.0)
    assert set(report["per_class"]) == set(CLASSES) and all(v["n"] == 2 for v in report["per_class"].values())
    assert report["paper"] == {"top1_loc": 87.0, "top5_loc": 96.1, "gt_known_loc": 98.0}
    table = cub_run["second"].stdout
    assert "GT-known Loc" in table and "MaxBoxAccV2 (mean of δ)" in table and f"{report['gt_known_loc']:.2f}" in table
    assert "no classifier given" in table
    # --out report.json puts the Markdown and the grid beside it
    markdown = (tmp / "report.md").read_text()
    assert markdown.startswith("# Benchmark report") and "| GT-known Loc |" in markdown and "(report.png)" in markdown
    with Image.open(tmp / "report.png") as grid:
        assert grid.format == "PNG" and grid.size == grid_size(2, 2, 224)  # 4 images: 2 best, 2 worst


@pytest.mark.slow  # shares the module's CUB run (4 images through the tiny model)
def test_numbers_match_the_evaluation_functions_on_the_cached_maps(cub_run):
    report = cub_run["report"]
    records = read_cub(cub_run["root"], "test")
    cache = MapCache(cub_run["maps_dir"], cub_run["version"])
    assert cache.image_ids() == sorted(r.image_id for r in records)  # the train image was left out
    loc = LocEvaluator(size=512)
    entries = {r.image_id: cache.load(r.image_id) for r in records}
    sizes = {r.image_id: (entries[r.image_id].width, entries[r.image_id].height) for r in records}
    gts = {r.image_id: r.gt_boxes for r in records}
    v1, v2 = MaxBoxAccEvaluator(gts, sizes, "v1"), MaxBoxAccEvaluator(gts, sizes, "v2")
    for record in records:
        entry = entries[record.image_id]
        # image_class_labels.txt ids are 1-based: the images of class 2 sit in CLASSES[1]'s folder
        assert entry.label == record.image_id.split("/")[0] and entry.map.shape == (512, 512)
        assert (entry.width, entry.height) == Image.open(record.path).size
        box = boxes_from_map(entry.map, 0.23)[0]
        loc.accumulate([box.x1, box.y1, box.x2, box.y2], record.gt_boxes, entry.width, entry.height, record.label)
        v1.accumulate(entry.map, record.image_id)
        v2.accumulate(entry.map, record.image_id)
    expected = loc.compute()
    assert report["gt_known_loc"] == expected.gt_known and report["errors"] == expected.errors
    assert report["mean_iou"] == pytest.approx(expected.mean_iou, abs=1e-12)
    assert report["maxboxacc_v2"] == pytest.approx(v2.compute().value, abs=1e-12)
    assert report["maxboxacc"] == pytest.approx(v1.compute().value, abs=1e-12)
    assert report["thresholds"]["maxboxacc_v2"] == {str(k): t for k, t in v2.compute().best_threshold.items()}
    # the exported wsolevaluation folder (<image_id>.npy, extension kept) gives the same MaxBoxAccV2
    import dataclasses

    sized = [dataclasses.replace(r, size=sizes[r.image_id]) for r in records]
    assert (cub_run["tmp"] / "wsol-maps" / f"{records[0].image_id}.npy").is_file()
    exported = evaluate_map_folder(sized, cub_run["tmp"] / "wsol-maps", version="v2")
    assert exported.value == pytest.approx(report["maxboxacc_v2"], abs=1e-12)


@pytest.mark.slow  # shares the module's CUB run (4 images through the tiny model)
def test_limit_is_stratified_and_resume_does_not_recompute(cub_run):
    assert sorted(cub_run["first_labels"]) == CLASSES  # --limit 2: one image of each class, not the first two
    assert cub_run["second_computed"] == 2 and len(cub_run["mtimes"]) == 1  # the first run's 2 maps: one shard
    for path, mtime in cub_run["mtimes"].items():
        assert os.stat(path).st_mtime_ns == mtime  # the --limit 2 maps were not rewritten
    assert len(list((cub_run["maps_dir"] / cub_run["version"] / "shards").glob("shard-*.npz"))) == 2  # + the resume's


@pytest.mark.slow  # shares the module's CUB run (4 images through the tiny model)
def test_threshold_resweep_loads_no_model(cub_run, monkeypatch):
    from genpromp_annotate.engine import loading

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded although every map is cached")

    monkeypatch.setattr(loading, "load_stable_diffusion", no_model)
    out = cub_run["tmp"] / "tau.json"
    invoke(*cub_run["base"], "--resume", "--threshold", "0.5", "--out", out)
    report = json.loads(out.read_text())
    assert report["meta"]["maps_version"] == cub_run["version"]  # τ is not part of it
    assert report["images"]["computed"] == 0 and report["thresholds"]["loc"] == 0.5
    assert report["thresholds"]["loc_source"] == "--threshold"
    for key in ("maxboxacc", "maxboxacc_v2", "maxboxacc_v2_per_iou"):  # MaxBoxAcc sweeps τ itself
        assert report[key] == cub_run["report"][key]


@pytest.mark.slow  # shares the module's CUB run (4 images through the tiny model)
def test_cached_maps_need_resume_or_overwrite(cub_run):
    result = invoke(*cub_run["base"], "--limit", "1", code=1)
    assert "already cached" in result.output and "--resume" in result.output


@pytest.mark.slow  # shares the module's CUB run (4 images through the tiny model)
def test_classifier_without_an_image_is_refused(cub_run, tmp_path):
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps({"nothing.jpg": {"pred_scores": [0.1, 0.9]}}))
    result = invoke(*cub_run["base"], "--resume", "--classifier", preds, code=1)
    assert "no prediction for 4 image(s)" in result.output


# ---- the tiny model on a wsolevaluation tree ----------------------------------------------------------------
def make_wsol_tree(root, dataset="MINI", split="test"):
    """wsolevaluation: <root>/metadata/<dataset>/<split>/*.txt, images under <root>/dataset/<dataset>/.
    3 images of 2 classes, one of them an empty (unreadable) file; boxes are x0,y0,x1,y1."""
    images, meta = root / "dataset" / dataset, root / "metadata" / dataset / split
    meta.mkdir(parents=True)
    sizes = {"val/cat_1.jpg": (96, 64), "val/dog_2.png": (64, 96)}
    for seed, (rel, size) in enumerate(sizes.items(), start=1):
        _image(images / rel, size, seed)
    (images / "val" / "empty.jpg").write_bytes(b"")
    ids = ["val/cat_1.jpg", "val/empty.jpg", "val/dog_2.png"]
    labels = {"val/cat_1.jpg": 0, "val/empty.jpg": 1, "val/dog_2.png": 1}
    (meta / "image_ids.txt").write_text("\n".join(ids) + "\n")
    (meta / "class_labels.txt").write_text("".join(f"{i},{labels[i]}\n" for i in ids))
    all_sizes = {**sizes, "val/empty.jpg": (10, 10)}
    (meta / "image_sizes.txt").write_text("".join(f"{i},{w},{h}\n" for i, (w, h) in all_sizes.items()))
    boxes = {i: (w // 4, h // 4, w // 2, h // 2) for i, (w, h) in sizes.items()}
    boxes["val/empty.jpg"] = (0, 0, 5, 5)
    (meta / "localization.txt").write_text("".join(f"{i},{','.join(map(str, b))}\n" for i, b in boxes.items()))
    (root / "classes.txt").write_text("cat\ndog\n")
    return meta, images


@pytest.mark.slow
def test_wsol_tree_with_a_top5_csv_classifier_and_a_bad_image(tiny_model_dir, tmp_path):
    meta, images = make_wsol_tree(tmp_path / "wsol")
    # classifier: right for the cat (top-1), the dog only second (top-5); labels by name and by id
    (tmp_path / "top5.csv").write_text("image,top1,top2,top3,top4,top5\n"
                                       "val/cat_1.jpg,cat,dog,2,3,4\nval/empty.jpg,1,0,2,3,4\nval/dog_2.png,0,dog,2,3,4\n")
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\nfox\nowl\nbat\n")
    out = tmp_path / "report.json"
    invoke("benchmark", "--layout", "wsol", "--root", tmp_path / "wsol", "--model", tiny_model_dir,
           "--class-names", names, "--classifier", tmp_path / "top5.csv", "--maps-dir", tmp_path / "maps",
           "--latent", "mean", "--export-wsol-maps", tmp_path / "export", "--out", out)
    report = json.loads(out.read_text())
    assert report["meta"]["dataset"] == "wsol:MINI" and report["meta"]["split"] == "test"
    assert report["paper"] is None and report["meta"]["meta_word"] is None  # the meta-token rule
    assert report["thresholds"]["loc_source"] == "preset paper" and report["thresholds"]["loc"] == 0.25
    assert [f["image_id"] for f in report["failed"]] == ["val/empty.jpg"] and "empty" in report["failed"][0]["error"]
    assert report["images"]["evaluated"] == 2 and report["n_images"] == 2
    cache = MapCache(tmp_path / "maps", report["meta"]["maps_version"])
    assert cache.image_ids() == ["val/cat_1.jpg", "val/dog_2.png"]
    assert cache.load("val/dog_2.png").label == "dog"
    records = [r for r in read_wsolevaluation(meta, images) if r.image_id != "val/empty.jpg"]
    loc = LocEvaluator(size=512)
    rankings = {"val/cat_1.jpg": [0, 1, 2, 3, 4], "val/dog_2.png": [0, 1, 2, 3, 4]}
    for record in records:
        entry = cache.load(record.image_id)
        box = boxes_from_map(entry.map, 0.25)[0]
        loc.accumulate([box.x1, box.y1, box.x2, box.y2], record.gt_boxes, entry.width, entry.height, record.label,
                       ranking=rankings[record.image_id])
    expected = loc.compute()
    assert report["top1_loc"] == pytest.approx(expected.top1) and report["top5_loc"] == pytest.approx(expected.top5)
    assert report["errors"]["Cls"] == pytest.approx(50.0)  # the dog's top-1 is "cat"
    # the sizes of image_sizes.txt, wsolevaluation's own evaluation of the exported folder
    assert evaluate_map_folder(records, tmp_path / "export").value == pytest.approx(report["maxboxacc_v2"])


# ---- cached or saved maps, no model -----------------------------------------------------------------------------
def indicator_512(width, height, extra=None):
    """A 512-frame map equal to 1 on make_cub's GT box (xywh W/4, H/4, W/4, H/4 → xyxy [W/4, H/4, W/2, H/2])
    and `extra` on a frame 60 px wider; worked out here, not read back from the layout."""
    x, y, w, h = _gt_xywh((width, height))
    x1, y1, x2, y2 = gt_boxes_to_frame([[x, y, x + w, y + h]], width, height)[0]
    map_ = np.zeros((512, 512), dtype=np.float32)
    if extra is not None:
        map_[max(y1 - 60, 0) : y2 + 61, max(x1 - 60, 0) : x2 + 61] = extra
    map_[y1 : y2 + 1, x1 : x2 + 1] = 1.0  # [y][x]
    return map_


def fill_cub_cache(root, maps_dir, split="test", extra=None):
    records = read_cub(root, split)
    version = maps_version("no-such-model", "none", preset("cub-paper"), meta_words={"*": "bird"})
    with MapCache(maps_dir, version) as cache:
        for record in records:
            width, height = Image.open(record.path).size
            label = record.image_id.split("/")[0]  # the class folder
            cache.save(record.image_id, indicator_512(width, height, extra), label, width, height)
    return version


@pytest.fixture()
def no_model(monkeypatch):
    from genpromp_annotate.engine import loading

    monkeypatch.setattr(loading, "load_stable_diffusion", lambda *a, **k: pytest.fail("no model should load"))


def test_cached_indicator_maps_score_without_a_model(tmp_path, no_model):
    """Maps on each GT box: read as xywh, every box is found (read as xyxy, none would be)."""
    root = make_cub(tmp_path / "cub")
    version = fill_cub_cache(root, tmp_path / "maps")
    out = tmp_path / "report.json"
    invoke("benchmark", "--layout", "cub", "--root", root, "--model", "no-such-model", "--maps-dir", tmp_path / "maps",
           "--resume", "--out", out, "--markdown", tmp_path / "other.md", "--grid", tmp_path / "g.png",
           "--grid-size", "1")
    report = json.loads(out.read_text())
    assert report["meta"]["maps_version"] == version
    assert report["images"] == {"total": 4, "evaluated": 4, "computed": 0, "failed": 0}
    # GT sides in the 512 frame are ≥ 128 px: IoU ≥ 128²/129² ≈ 0.98 (the one-past box convention)
    assert report["gt_known_loc"] == 100.0 and report["errors"]["correct"] == 100.0
    assert report["maxboxacc_v2_per_iou"] == {"30": 100.0, "50": 100.0, "70": 100.0}
    assert (tmp_path / "other.md").is_file() and not (tmp_path / "report.md").exists()
    with Image.open(tmp_path / "g.png") as grid:
        assert grid.size == grid_size(1, 2, 224)


def test_calibrate_on_a_held_out_split(tmp_path, no_model):
    """Maps with a 0.3 halo around the GT: τ = 0.23 keeps the halo (a box too big), τ ≥ 0.30 the GT alone.
    uint8(0.3·255) = 76: the halo survives while int(τ·255) < 76, i.e. up to τ = 0.29."""
    root = make_cub(tmp_path / "cub")
    fill_cub_cache(root, tmp_path / "maps", "all", extra=0.3)
    base = ["benchmark", "--layout", "cub", "--root", root, "--model", "no-such-model", "--maps-dir",
            tmp_path / "maps", "--resume"]
    invoke(*base, "--out", tmp_path / "preset.json")
    preset_run = json.loads((tmp_path / "preset.json").read_text())
    assert preset_run["thresholds"]["loc"] == 0.23 and preset_run["gt_known_loc"] < 100.0
    # the oracle on the test split is reported, never used
    assert preset_run["thresholds"]["best_on_this_split"]["gt_known_loc"]["value"] == 100.0
    invoke(*base, "--calibrate-on", "train", "--out", tmp_path / "cal.json")
    calibrated = json.loads((tmp_path / "cal.json").read_text())
    assert calibrated["thresholds"]["loc"] == pytest.approx(0.30)  # the tied τ closest to the preset's 0.23
    assert calibrated["thresholds"]["loc_source"] == "calibrated on split train (best GT-known Loc)"
    assert calibrated["thresholds"]["calibration"]["n_images"] == 1  # the one train image
    assert calibrated["gt_known_loc"] == 100.0 and calibrated["n_images"] == 4
    assert "pick one" in invoke(*base, "--calibrate-on", "train", "--threshold", "0.3", code=1).output
    assert "held-out" in invoke(*base, "--calibrate-on", "test", code=1).output
    assert "1 of its images are also evaluated" in invoke(*base, "--split", "all", "--calibrate-on", "train",
                                                          code=1).output


def test_classes_and_limit_narrow_the_split(tmp_path, no_model):
    root = make_cub(tmp_path / "cub")
    fill_cub_cache(root, tmp_path / "maps")
    base = ["benchmark", "--layout", "cub", "--root", root, "--model", "no-such-model", "--maps-dir", tmp_path / "maps",
            "--resume"]
    # by image folder name, by 0-based class id; then --limit within the class
    for selector in ("002.laysan_albatross", "1"):
        invoke(*base, "--classes", selector, "--out", tmp_path / "c.json")
        report = json.loads((tmp_path / "c.json").read_text())
        assert report["n_images"] == 2 and list(report["per_class"]) == ["002.Laysan_Albatross"]
    invoke(*base, "--classes", "001.Black_footed_Albatross", "--limit", "1", "--out", tmp_path / "l.json")
    assert json.loads((tmp_path / "l.json").read_text())["n_images"] == 1
    assert "no class 'heron'" in invoke(*base, "--classes", "heron", code=1).output


@pytest.mark.slow
def test_imagenet_lists_with_the_tiny_model(tiny_model_dir, tmp_path):
    """ImageNet lists through the model: images under <root>/val, label = the synset line, xyxy boxes (two on
    the second image), classifier names without the extension."""
    root = tmp_path / "ILSVRC"
    root.mkdir()
    (root / "LOC_synset_mapping.txt").write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n")
    rels = ["n01440764/ILSVRC2012_val_00000001.JPEG", "n01443537/ILSVRC2012_val_00000002.JPEG"]
    for seed, rel in enumerate(rels):
        _image(root / "val" / rel, (100, 80), seed)  # bright [25, 20, 50, 40)
    (root / "val_folder_new.txt").write_text(f"{rels[0]} 0 25 20 49 39\n{rels[1]} 1 0 0 9 9 25 20 49 39\n")
    preds = {"n01440764/ILSVRC2012_val_00000001": {"pred_scores": [0.8, 0.2]},
             "n01443537/ILSVRC2012_val_00000002": {"pred_scores": [0.8, 0.2]}}
    (tmp_path / "preds.json").write_text(json.dumps(preds))
    out = tmp_path / "r.json"
    invoke("benchmark", "--layout", "imagenet", "--root", root, "--model", tiny_model_dir, "--maps-dir",
           tmp_path / "maps", "--classifier", tmp_path / "preds.json", "--out", out)
    report = json.loads(out.read_text())
    assert report["images"]["computed"] == 2 and report["n_images"] == 2 and report["classifier"] is True
    assert report["thresholds"]["loc"] == 0.25 and report["meta"]["config"]["preset"] == "imagenet-paper"
    cache = MapCache(tmp_path / "maps", report["meta"]["maps_version"])
    assert [cache.load(rel).label for rel in rels] == ["tench, Tinca tinca", "goldfish, Carassius auratus"]
    loc = LocEvaluator(size=512)
    for rel, label, gts in ((rels[0], 0, [[25, 20, 49, 39]]), (rels[1], 1, [[0, 0, 9, 9], [25, 20, 49, 39]])):
        entry = cache.load(rel)
        box = boxes_from_map(entry.map, 0.25)[0]
        loc.accumulate([box.x1, box.y1, box.x2, box.y2], np.array(gts, dtype=float), 100, 80, label, [0.8, 0.2])
    expected = loc.compute()
    assert report["gt_known_loc"] == expected.gt_known and report["top1_loc"] == expected.top1
    assert report["errors"] == expected.errors and report["errors"]["Cls"] == 50.0  # the goldfish is ranked second


def test_imagenet_layout_from_cached_maps_with_a_classifier(tmp_path):
    """ImageNet lists: images under <root>/val, prediction names without extension, several GT boxes."""
    root = tmp_path / "ILSVRC"
    (root / "val").mkdir(parents=True)
    (root / "LOC_synset_mapping.txt").write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n")
    rels = ["n01440764/ILSVRC2012_val_00000001.JPEG", "n01443537/ILSVRC2012_val_00000002.JPEG"]
    (root / "val_folder_new.txt").write_text(f"{rels[0]} 0 10 10 59 59\n{rels[1]} 1 0 0 99 99 20 20 40 40\n")
    version = maps_version("m", "none", preset("imagenet-paper"))
    indicator = np.zeros((512, 512), dtype=np.float32)
    indicator[51:307, 51:307] = 1.0  # [y][x]: GT [10, 10, 59, 59] of a 100×100 image in the 512 frame
    with MapCache(tmp_path / "maps", version) as cache:
        for rel, label in zip(rels, ["tench, Tinca tinca", "goldfish, Carassius auratus"]):
            cache.save(rel, indicator, label, 100, 100)
    preds = {"n01440764/ILSVRC2012_val_00000001": {"pred_scores": [0.2, 0.8]},
             "n01443537/ILSVRC2012_val_00000002": {"pred_scores": [0.2, 0.8]}}
    (tmp_path / "preds.json").write_text(json.dumps(preds))
    out = tmp_path / "r.json"
    invoke("benchmark", "--layout", "imagenet", "--root", root, "--model", "m", "--maps-dir", tmp_path / "maps",
           "--resume", "--classifier", tmp_path / "preds.json", "--out", out)
    report = json.loads(out.read_text())
    assert report["meta"]["meta_word"] is None and report["paper"]["top1_loc"] == 65.2
    assert report["thresholds"]["loc_source"] == "preset imagenet-paper"
    # image 1: box right (IoU 1), class wrong (top-1 goldfish) → GT-known and Top-5, not Top-1, error Cls.
    # image 2: class right, but the box [51, 51, 307, 307] has IoU 257²/507² ≈ 0.26 with the whole-image GT
    # [0, 0, 506, 506] and 103²/257² ≈ 0.16 with [102, 102, 204, 204] inside it → no localization.
    assert report["gt_known_loc"] == 50.0 and report["top1_loc"] == 0.0
    assert report["top5_loc"] == 50.0 and report["errors"]["Cls"] == 50.0


def make_wsol_metadata(tmp):
    """A bare metadata folder (image_ids.txt, …) of 3 images at 224×224, ids with folders and extensions."""
    meta, images = tmp / "metadata", tmp / "images"
    meta.mkdir(parents=True)
    ids = ["a/one.jpg", "a/two.png", "b/three.jpg"]
    boxes = {"a/one.jpg": [(20, 20, 29, 29)], "a/two.png": [(100, 60, 149, 119)],
             "b/three.jpg": [(10, 10, 49, 49), (150, 150, 199, 199)]}
    (meta / "image_ids.txt").write_text("\n".join(ids) + "\n")
    (meta / "class_labels.txt").write_text("a/one.jpg,0\na/two.png,0\nb/three.jpg,1\n")
    (meta / "image_sizes.txt").write_text("".join(f"{i},224,224\n" for i in ids))
    (meta / "localization.txt").write_text("".join(f"{i},{','.join(map(str, b))}\n" for i in ids for b in boxes[i]))
    return meta, images, boxes


def test_saved_maps_of_another_method(tmp_path, no_model):
    """`--maps DIR`: DIR/<image_id>.npy with the extension kept; 224×224 indicator maps, no --model."""
    meta, _, boxes = make_wsol_metadata(tmp_path)
    maps = tmp_path / "cams"
    for image_id in ("a/one.jpg", "b/three.jpg"):  # a/two.png has no map: it fails, the others are scored
        map_ = np.zeros((224, 224), dtype=np.float32)
        x1, y1, x2, y2 = boxes[image_id][-1]
        map_[y1 : y2 + 1, x1 : x2 + 1] = 1.0
        (maps / image_id).parent.mkdir(parents=True, exist_ok=True)
        np.save(maps / f"{image_id}.npy", map_)
    assert (maps / "a" / "one.jpg.npy").is_file()
    out = tmp_path / "cam.json"
    invoke("benchmark", "--layout", "wsol", "--root", meta, "--maps", maps, "--out", out)
    report = json.loads(out.read_text())
    assert report["meta"]["maps"] == str(maps) and report["meta"]["model"] is None
    assert [f["image_id"] for f in report["failed"]] == ["a/two.png"] and "a/two.png.npy" in report["failed"][0]["error"]
    assert report["n_images"] == 2
    # MaxBoxAccV2: 10×10 box → IoU 100/121 = 0.83 (every δ); 50×50 on the second GT box of three.jpg → 2500/2601
    assert report["maxboxacc_v2_per_iou"] == {"30": 100.0, "50": 100.0, "70": 100.0}
    assert report["gt_known_loc"] == 100.0  # the multi-box image counts its best GT box


# ---- a store project ---------------------------------------------------------------------------------------------
def _project_with_human_boxes(run, db_url, model, tmp_path):
    """Project `p` (labels cat, dog) with 3 imported images; human boxes (x2/y2 one past) on two of them."""
    from genpromp_annotate.store import queries as q
    from genpromp_annotate.store.database import open_store
    from genpromp_annotate.store.models import Image as ImageRow

    for name, label, seed in (("c1.jpg", "cat", 1), ("c2.jpg", "cat", 2), ("d1.png", "dog", 3)):
        _image(tmp_path / "folder" / label / name, (128, 96), seed)
    run("init", "p", "--model", str(model), "--label", "cat", "--label", "dog")
    run("import", "p", str(tmp_path / "folder"))
    store = open_store(db_url)
    with store.write() as session:
        project = q.get_project(session, "p")
        rows = {os.path.basename(i.uri): i for i in session.query(ImageRow).filter_by(project_id=project.id)}
        for name, label in (("c1.jpg", "cat"), ("d1.png", "dog")):
            q.add_predictions(session, rows[name], "human", [(q.get_category(session, project, label),
                                                              {"x1": 32, "y1": 24, "x2": 64, "y2": 48})], source="human")
        ids = {name: (rows[name].id, q.get_category(session, project, label).id)
               for name, label in (("c1.jpg", "cat"), ("d1.png", "dog"))}
    store.dispose()
    return ids


def test_project_human_boxes_with_saved_maps(run, db_url, tiny_model_dir, tmp_path, no_model):
    ids = _project_with_human_boxes(run, db_url, tiny_model_dir, tmp_path)
    maps = tmp_path / "maps"
    maps.mkdir()
    for image_id, category_id in ids.values():
        map_ = np.zeros((96, 128), dtype=np.float32)  # the image's own frame
        map_[24:48, 32:64] = 1.0  # the human box's pixels (x2/y2 one past the last)
        np.save(maps / f"{image_id}-{category_id}.npy", map_)
    out = tmp_path / "p.json"
    run("benchmark", "--project", "p", "--maps", str(maps), "--out", str(out))
    report = json.loads(out.read_text())
    assert report["meta"]["dataset"] == "project:p" and report["n_images"] == 2  # c2.jpg has no human box
    assert set(report["per_class"]) == {"cat", "dog"} and report["gt_known_loc"] == 100.0
    assert "no image in split 'val' has human-verified boxes" in run("benchmark", "--project", "p", "--split", "val",
                                                                     "--maps", str(maps), code=1)


@pytest.mark.slow
def test_project_localized_with_its_own_model(run, db_url, tiny_model_dir, tmp_path):
    _project_with_human_boxes(run, db_url, tiny_model_dir, tmp_path)
    out = tmp_path / "p.json"
    args = ["benchmark", "--project", "p", "--maps-dir", str(tmp_path / "maps"), "--out", str(out)]
    run(*args)
    report = json.loads(out.read_text())
    assert report["images"]["computed"] == 2 and report["n_images"] == 2
    assert report["meta"]["model"] == str(tiny_model_dir) and report["thresholds"]["loc_source"] == "project settings"
    cache = MapCache(tmp_path / "maps", report["meta"]["maps_version"])
    assert len(cache.image_ids()) == 2
    assert "drop --model" in run(*args, "--model", str(tiny_model_dir), code=1)


def test_source_must_be_a_layout_or_a_project(tmp_path):
    assert "either --layout" in invoke("benchmark", "--model", "m", code=1).output
    assert "needs --root" in invoke("benchmark", "--layout", "cub", "--model", "m", code=1).output
