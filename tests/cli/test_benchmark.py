"""`benchmark` on tiny CUB- and wsolevaluation-layout folders with the tiny model, through click.

The fast test fills the map cache with GT indicator maps and runs `--resume`, so no model is loaded.
The CUB run (slow) is shared by the module (4 test images of 2 classes, one train image that must be left
out): a first run with `--limit 2`, then `--resume` over all of them. Every number of the report is
recomputed here from the cached maps with the evaluation functions.
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
from genpromp_annotate.evaluation.layouts import read_cub, read_wsolevaluation
from genpromp_annotate.evaluation.loc_metrics import LocEvaluator
from genpromp_annotate.evaluation.map_cache import MapCache
from genpromp_annotate.evaluation.maxboxacc import MaxBoxAccEvaluator, evaluate_map_folder

CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross"]


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
    """5 images: ids 1–4 test (2 per class), id 5 train."""
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


@pytest.fixture(scope="module")
def cub_run(tiny_model_dir, tmp_path_factory):
    """`--limit 2`, then `--resume` over the 4 test images; records what each run computed."""
    tmp = tmp_path_factory.mktemp("bench-cub")
    root = make_cub(tmp / "CUB_200_2011")
    maps_dir = tmp / "maps"
    base = ["benchmark", "--layout", "cub", "--root", str(root), "--model", str(tiny_model_dir),
            "--preset", "cub-paper", "--maps-dir", str(maps_dir), "--batch-size", "2"]
    computed: list[int] = []
    original = Localizer.compute_maps

    def counting(self, images, labels, early_exit=True):
        computed.append(len(images))
        return original(self, images, labels, early_exit)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Localizer, "compute_maps", counting)
        first = CliRunner().invoke(cli, base + ["--limit", "2", "--out", str(tmp / "first.json")])
        assert first.exit_code == 0, first.output
        first_computed = sum(computed)
        cache_folder = json.loads((tmp / "first.json").read_text())["meta"]["maps_dir"]
        mtimes = {p: os.stat(p).st_mtime_ns for p in sorted(map(str, maps_dir.rglob("*.npz")))}
        second = CliRunner().invoke(cli, base + ["--resume", "--out", str(tmp / "report.json"),
                                                 "--markdown", str(tmp / "report.md"),
                                                 "--export-wsol-maps", str(tmp / "wsol-maps")])
        assert second.exit_code == 0, second.output
    return {"tmp": tmp, "root": root, "maps_dir": maps_dir, "base": base, "first": first, "second": second,
            "first_computed": first_computed, "second_computed": sum(computed) - first_computed, "mtimes": mtimes,
            "cache_folder": cache_folder, "report": json.loads((tmp / "report.json").read_text())}


@pytest.mark.slow  # shares the module's CUB run (4 images through the tiny model)
def test_report_structure(cub_run):
    report = cub_run["report"]
    assert set(report) == {"meta", "images", "failed", "loc", "maxboxacc", "timing", "paper"}
    assert report["meta"]["layout"] == "cub" and report["meta"]["meta_word"] == "bird"
    assert report["meta"]["config"]["threshold"] == 0.23  # --preset cub-paper
    assert report["images"] == {"total": 4, "listed": 4, "evaluated": 4, "computed": 2, "cached": 2, "failed": 0}
    assert report["failed"] == []
    loc = report["loc"]
    assert loc["count"] == 4 and loc["top1_loc"] is None and loc["top5_loc"] is None  # no --classifier
    assert set(loc["errors"]) == {"Cls", "correct", "M-Ins", "Part", "More", "Wrong"}
    assert sum(loc["errors"].values()) == pytest.approx(100.0)
    assert set(report["maxboxacc"]["v2"]["per_delta"]) == {"30", "50", "70"}
    assert set(report["maxboxacc"]["v1"]["per_delta"]) == {"50"}
    assert report["paper"] == {"top1_loc": 87.0, "top5_loc": 96.1, "gt_known_loc": 98.0}
    table = cub_run["second"].stdout
    assert "GT-known Loc" in table and "MaxBoxAccV2 (mean)" in table and f"{loc['gt_known_loc']:.2f}" in table
    markdown = (cub_run["tmp"] / "report.md").read_text()
    assert markdown.startswith("# Benchmark report") and "| GT-known Loc |" in markdown


@pytest.mark.slow  # shares the module's CUB run (4 images through the tiny model)
def test_numbers_match_the_evaluation_functions_on_the_cached_maps(cub_run):
    report = cub_run["report"]
    records = read_cub(cub_run["root"], "test")
    cache = MapCache(cub_run["maps_dir"], report["meta"]["maps_version"])
    assert str(cache.folder) == cub_run["cache_folder"]
    assert cache.image_ids() == sorted(r.image_id for r in records)  # the train image was left out
    loc = LocEvaluator(size=512)
    entries = {r.image_id: cache.load(r.image_id) for r in records}
    sizes = {r.image_id: (entries[r.image_id].width, entries[r.image_id].height) for r in records}
    gts = {r.image_id: r.gt_boxes for r in records}
    v1, v2 = MaxBoxAccEvaluator(gts, sizes, "v1"), MaxBoxAccEvaluator(gts, sizes, "v2")
    for record in records:
        entry = entries[record.image_id]
        assert entry.label == CLASSES[record.label] and entry.map.shape == (512, 512)
        assert (entry.width, entry.height) == Image.open(record.path).size
        box = boxes_from_map(entry.map, 0.23)[0]
        loc.accumulate([box.x1, box.y1, box.x2, box.y2], record.gt_boxes, entry.width, entry.height, record.label)
        v1.accumulate(entry.map, record.image_id)
        v2.accumulate(entry.map, record.image_id)
    assert report["loc"] == json.loads(json.dumps(loc.compute().as_dict()))
    assert report["maxboxacc"]["v2"]["value"] == pytest.approx(v2.compute().value, abs=1e-12)
    assert report["maxboxacc"]["v1"]["value"] == pytest.approx(v1.compute().value, abs=1e-12)
    # the exported wsolevaluation folder (<image_id>.npy, extension kept) gives the same MaxBoxAccV2
    import dataclasses

    sized = [dataclasses.replace(r, size=sizes[r.image_id]) for r in records]
    assert (cub_run["tmp"] / "wsol-maps" / f"{records[0].image_id}.npy").is_file()
    exported = evaluate_map_folder(sized, cub_run["tmp"] / "wsol-maps", version="v2")
    assert exported.value == pytest.approx(report["maxboxacc"]["v2"]["value"], abs=1e-12)


@pytest.mark.slow  # shares the module's CUB run (4 images through the tiny model)
def test_resume_does_not_recompute_cached_maps(cub_run):
    assert cub_run["first_computed"] == 2 and cub_run["second_computed"] == 2
    assert len(cub_run["mtimes"]) == 2
    for path, mtime in cub_run["mtimes"].items():
        assert os.stat(path).st_mtime_ns == mtime  # the --limit 2 maps were not rewritten


@pytest.mark.slow  # shares the module's CUB run (4 images through the tiny model)
def test_threshold_resweep_loads_no_model(cub_run, monkeypatch):
    from genpromp_annotate.engine import loading

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded although every map is cached")

    monkeypatch.setattr(loading, "load_stable_diffusion", no_model)
    out = cub_run["tmp"] / "tau.json"
    result = CliRunner().invoke(cli, cub_run["base"] + ["--resume", "--threshold", "0.5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["meta"]["maps_version"] == cub_run["report"]["meta"]["maps_version"]  # τ is not in it
    assert report["images"]["computed"] == 0 and report["images"]["cached"] == 4
    assert report["maxboxacc"] == cub_run["report"]["maxboxacc"]  # MaxBoxAcc sweeps τ itself


@pytest.mark.slow  # shares the module's CUB run (4 images through the tiny model)
def test_cached_maps_need_resume_or_overwrite(cub_run):
    result = CliRunner().invoke(cli, cub_run["base"] + ["--limit", "1"])
    assert result.exit_code == 1
    assert "already cached" in result.output and "--resume" in result.output


@pytest.mark.slow  # shares the module's CUB run (4 images through the tiny model)
def test_classifier_without_an_image_is_refused(cub_run, tmp_path):
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps({"nothing.jpg": {"pred_scores": [0.1, 0.9]}}))
    result = CliRunner().invoke(cli, cub_run["base"] + ["--resume", "--classifier", str(preds)])
    assert result.exit_code == 1 and "no prediction for 4 image(s)" in result.output


def make_wsol(tmp):
    """3 images of 2 classes under images/, one of them an empty (unreadable) file."""
    images, meta = tmp / "images", tmp / "metadata"
    meta.mkdir(parents=True)
    sizes = {"val/cat_1.jpg": (96, 64), "val/dog_2.png": (64, 96)}
    for seed, (rel, size) in enumerate(sizes.items(), start=1):
        _image(images / rel, size, seed)
    (images / "val" / "empty.jpg").write_bytes(b"")
    ids = ["val/cat_1.jpg", "val/empty.jpg", "val/dog_2.png"]
    labels = {"val/cat_1.jpg": 0, "val/empty.jpg": 1, "val/dog_2.png": 1}
    (meta / "image_ids.txt").write_text("\n".join(ids) + "\n")
    (meta / "class_labels.txt").write_text("".join(f"{i},{labels[i]}\n" for i in ids))
    (meta / "image_sizes.txt").write_text("".join(f"{i},{w},{h}\n" for i, (w, h) in {**sizes, "val/empty.jpg": (10, 10)}.items()))
    boxes = {i: (*_gt_xywh(s)[:2], _gt_xywh(s)[0] * 2, _gt_xywh(s)[1] * 2) for i, s in sizes.items()}
    boxes["val/empty.jpg"] = (0, 0, 5, 5)
    (meta / "localization.txt").write_text("".join(f"{i},{','.join(map(str, b))}\n" for i, b in boxes.items()))
    (tmp / "classes.txt").write_text("cat\ndog\n")
    # classifier: right for the cat (top-1), the dog only in the top-5 (second)
    preds = {"val/cat_1.jpg": [0.9, 0.1, 0, 0, 0, 0], "val/empty.jpg": [0.5, 0.5, 0, 0, 0, 0],
             "val/dog_2.png": [0.6, 0.4, 0, 0, 0, 0]}
    (tmp / "preds.json").write_text(json.dumps({k: {"pred_scores": v} for k, v in preds.items()}))
    return meta, images


@pytest.mark.slow
def test_wsol_layout_with_classifier_and_a_bad_image(tiny_model_dir, tmp_path):
    meta, images = make_wsol(tmp_path)
    out = tmp_path / "report.json"
    result = CliRunner().invoke(cli, [
        "benchmark", "--layout", "wsol", "--root", str(meta), "--image-root", str(images), "--model",
        str(tiny_model_dir), "--class-names", str(tmp_path / "classes.txt"), "--classifier",
        str(tmp_path / "preds.json"), "--maps-dir", str(tmp_path / "maps"), "--latent", "mean",
        "--export-wsol-maps", str(tmp_path / "export"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["paper"] is None and report["meta"]["meta_word"] is None  # the meta-token rule
    assert [f["image_id"] for f in report["failed"]] == ["val/empty.jpg"] and "empty" in report["failed"][0]["error"]
    assert report["images"]["evaluated"] == 2 and report["loc"]["count"] == 2
    cache = MapCache(tmp_path / "maps", report["meta"]["maps_version"])
    assert cache.image_ids() == ["val/cat_1.jpg", "val/dog_2.png"]
    assert cache.load("val/dog_2.png").label == "dog"
    records = [r for r in read_wsolevaluation(meta, images) if r.image_id != "val/empty.jpg"]
    loc = LocEvaluator(size=512)
    scores = {k: v["pred_scores"] for k, v in json.loads((tmp_path / "preds.json").read_text()).items()}
    for record in records:
        entry = cache.load(record.image_id)
        box = boxes_from_map(entry.map, 0.25)[0]
        loc.accumulate([box.x1, box.y1, box.x2, box.y2], record.gt_boxes, entry.width, entry.height, record.label,
                       scores[record.image_id])
    expected = loc.compute()
    assert report["loc"]["top1_loc"] == pytest.approx(expected.top1) and report["loc"]["top5_loc"] == pytest.approx(expected.top5)
    assert report["loc"]["errors"]["Cls"] == pytest.approx(50.0)  # the dog's top-1 is "cat"
    # the sizes of image_sizes.txt, wsolevaluation's own evaluation of the exported folder
    assert evaluate_map_folder(records, tmp_path / "export").value == pytest.approx(report["maxboxacc"]["v2"]["value"])


def test_cached_indicator_maps_score_without_a_model(tmp_path, monkeypatch):
    """Maps equal to the indicator of each GT box (512 frame): every box is found, GT-known Loc is 100%."""
    from genpromp_annotate.engine import loading
    from genpromp_annotate.evaluation.loc_metrics import gt_boxes_to_frame
    from genpromp_annotate.evaluation.map_cache import maps_version
    from genpromp_annotate.presets import preset

    monkeypatch.setattr(loading, "load_stable_diffusion", lambda *a, **k: pytest.fail("no model should load"))
    root = make_cub(tmp_path / "cub")
    records = read_cub(root, "test")
    version = maps_version("no-such-model", "none", preset("cub-paper"), meta_words={"*": "bird"})
    cache = MapCache(tmp_path / "maps", version)
    for record in records:
        width, height = Image.open(record.path).size
        x1, y1, x2, y2 = gt_boxes_to_frame(record.gt_boxes, width, height)[0]
        indicator = np.zeros((512, 512), dtype=np.float32)
        indicator[y1 : y2 + 1, x1 : x2 + 1] = 1.0  # [y][x]
        cache.save(record.image_id, indicator, CLASSES[record.label], width, height)
    out = tmp_path / "report.json"
    result = CliRunner().invoke(cli, ["benchmark", "--layout", "cub", "--root", str(root), "--model", "no-such-model",
                                      "--preset", "cub-paper", "--maps-dir", str(tmp_path / "maps"), "--resume",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["meta"]["maps_version"] == version
    assert report["images"] == {"total": 4, "listed": 4, "evaluated": 4, "computed": 0, "cached": 4, "failed": 0}
    # GT sides in the 512 frame are ≥ 128 px: IoU ≥ 128²/129² ≈ 0.98 (the one-past box convention)
    assert report["loc"]["gt_known_loc"] == 100.0 and report["loc"]["errors"]["correct"] == 100.0
    sizes = {r.image_id: Image.open(r.path).size for r in records}
    v2 = MaxBoxAccEvaluator({r.image_id: r.gt_boxes for r in records}, sizes, "v2")
    for record in records:
        v2.accumulate(cache.load(record.image_id).map, record.image_id)
    assert report["maxboxacc"]["v2"]["value"] == pytest.approx(v2.compute().value, abs=1e-12)
    assert report["maxboxacc"]["v2"]["per_delta"]["50"] == 100.0


def test_imagenet_layout_from_cached_maps_with_a_classifier(tmp_path):
    """ImageNet lists: images under <root>/val, prediction names without extension, the meta-token rule."""
    from genpromp_annotate.evaluation.map_cache import maps_version
    from genpromp_annotate.presets import preset

    root = tmp_path / "ILSVRC"
    (root / "val").mkdir(parents=True)
    (root / "LOC_synset_mapping.txt").write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n")
    rels = ["n01440764/ILSVRC2012_val_00000001.JPEG", "n01443537/ILSVRC2012_val_00000002.JPEG"]
    (root / "val_folder_new.txt").write_text(f"{rels[0]} 0 10 10 59 59\n{rels[1]} 1 0 0 99 99 20 20 40 40\n")
    version = maps_version("m", "none", preset("imagenet-paper"))
    cache = MapCache(tmp_path / "maps", version)
    indicator = np.zeros((512, 512), dtype=np.float32)
    indicator[51:307, 51:307] = 1.0  # [y][x]: GT [10, 10, 59, 59] of a 100×100 image in the 512 frame
    for rel, label in zip(rels, ["tench, Tinca tinca", "goldfish, Carassius auratus"]):
        cache.save(rel, indicator, label, 100, 100)
    preds = {"n01440764/ILSVRC2012_val_00000001": {"pred_scores": [0.2, 0.8]},
             "n01443537/ILSVRC2012_val_00000002": {"pred_scores": [0.2, 0.8]}}
    (tmp_path / "preds.json").write_text(json.dumps(preds))
    out = tmp_path / "r.json"
    result = CliRunner().invoke(cli, ["benchmark", "--layout", "imagenet", "--root", str(root), "--model", "m",
                                      "--preset", "imagenet-paper", "--maps-dir", str(tmp_path / "maps"), "--resume",
                                      "--classifier", str(tmp_path / "preds.json"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["meta"]["meta_word"] is None and report["paper"]["top1_loc"] == 65.2
    # image 1: box right (IoU 1), class wrong (top-1 goldfish) → GT-known and Top-5, not Top-1, error Cls.
    # image 2: class right, but the box [51, 51, 307, 307] has IoU 257²/507² ≈ 0.26 with the whole-image GT
    # [0, 0, 506, 506] and 103²/257² ≈ 0.16 with [102, 102, 204, 204] inside it → no localization.
    assert report["loc"]["gt_known_loc"] == 50.0 and report["loc"]["top1_loc"] == 0.0
    assert report["loc"]["top5_loc"] == 50.0 and report["loc"]["errors"]["Cls"] == 50.0


def test_tokens_are_matched_to_the_classes_they_are_named_after():
    import torch

    from genpromp_annotate.cli.benchmark import _match_tokens, _tokens_digest

    tokens = {"<001.black_footed_albatross>": torch.ones(4), "<goldfish>": torch.zeros(4), "<other>": torch.ones(4)}
    matched = _match_tokens(tokens, ["001.Black_footed_Albatross", "goldfish, Carassius auratus", "tench"])
    assert {label: t.token for label, t in matched.items()} == {
        "001.Black_footed_Albatross": "<001.black_footed_albatross>", "goldfish, Carassius auratus": "<goldfish>"}
    assert _tokens_digest({}) == "none" and _tokens_digest(matched) != _tokens_digest({"tench": matched["goldfish, Carassius auratus"]})
