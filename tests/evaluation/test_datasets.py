"""BenchmarkSet sources (CUB, ImageNet lists, wsolevaluation trees), class names, and --classes / --limit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genpromp_annotate.errors import ConfigError
from genpromp_annotate.evaluation.datasets import open_layout, read_class_names, select, stratified_indices
from genpromp_annotate.evaluation.layouts import DatasetLayoutError
from tests.evaluation.conftest import write


@pytest.fixture()
def cub_root(tmp_path) -> Path:
    root = tmp_path / "CUB_200_2011"
    write(root, "images.txt", "1 001.Black_footed_Albatross/a_1.jpg\n2 001.Black_footed_Albatross/a_2.jpg\n"
                              "3 002.Laysan_Albatross/l_1.jpg\n4 002.Laysan_Albatross/l_2.jpg\n")
    write(root, "image_class_labels.txt", "1 1\n2 1\n3 2\n4 2\n")  # 1-based
    write(root, "train_test_split.txt", "1 1\n2 0\n3 0\n4 1\n")  # 1 = train
    write(root, "bounding_boxes.txt", "1 60.0 27.0 325.0 304.0\n2 139.0 30.0 153.0 264.0\n"
                                      "3 14.5 112.0 388.0 186.0\n4 0.0 0.0 10.0 20.0\n")
    write(root, "classes.txt", "1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n")
    return root


@pytest.fixture()
def imagenet_root(tmp_path) -> Path:
    root = tmp_path / "imagenet"
    write(root, "LOC_synset_mapping.txt", "n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n")
    write(root, "val_folder_new.txt", "n01440764/ILSVRC2012_val_00000293.JPEG 0 111 108 441 193\n"
                                      "n01443537/ILSVRC2012_val_00000236.JPEG 1 10 20 30 40 50 60 70 80\n")
    (root / "val").mkdir()
    return root


def wsol_split(root: Path, dataset: str, split: str) -> None:
    meta = root / "metadata" / dataset / split
    write(meta, "image_ids.txt", "a/1.jpg\nb/2.jpg\n")
    write(meta, "class_labels.txt", "a/1.jpg,0\nb/2.jpg,1\n")
    write(meta, "image_sizes.txt", "a/1.jpg,500,340\nb/2.jpg,200,100\n")
    write(meta, "localization.txt", "a/1.jpg,1,2,30,40\nb/2.jpg,5,6,7,8\nb/2.jpg,10,10,20,20\n")
    (root / "dataset" / dataset).mkdir(parents=True, exist_ok=True)


def test_read_class_names(tmp_path):
    assert read_class_names(write(tmp_path, "plain.txt", "cat\n\n  sea lion \n")) == ["cat", "sea lion"]
    assert read_class_names(write(tmp_path, "wnid.txt", "n01440764 tench, Tinca tinca\nn01443537 goldfish\n")) \
        == ["tench, Tinca tinca", "goldfish"]
    assert read_class_names(write(tmp_path, "ids.txt", "1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n")) \
        == ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
    # a first word that is neither a wnid nor a number stays part of the name
    assert read_class_names(write(tmp_path, "words.txt", "great white shark\nnorth 1\n")) \
        == ["great white shark", "north 1"]


def test_cub_labels_names_boxes_and_splits(cub_root):
    test = open_layout("cub", cub_root)  # default split: test (ids 2, 3)
    assert (test.source, test.split) == ("cub", "test")
    assert [r.label for r in test.records] == [0, 1]  # 1-based labels shifted
    assert test.labels == ["001.Black_footed_Albatross", "002.Laysan_Albatross"]  # the classes.txt names
    assert test.class_names == test.labels
    # x y w h → x1 y1 x2 y2: 14.5 + 388 = 402.5, 112 + 186 = 298
    np.testing.assert_array_equal(test.records[1].gt_boxes, [[14.5, 112.0, 402.5, 298.0]])
    assert test.records[0].path == cub_root / "images" / "001.Black_footed_Albatross/a_2.jpg"
    assert [r.image_id for r in open_layout("cub", cub_root, "train").records] == [
        "001.Black_footed_Albatross/a_1.jpg", "002.Laysan_Albatross/l_2.jpg"]
    assert len(open_layout("cub", cub_root, "all").records) == 4
    with pytest.raises(ConfigError, match="--split val: CUB-200-2011 has the splits train, test and all"):
        open_layout("cub", cub_root, "val")
    with pytest.raises(ConfigError, match="layout must be one of cub, imagenet, wsol"):
        open_layout("voc", cub_root)


def test_imagenet_val(imagenet_root):
    bench = open_layout("imagenet", imagenet_root)
    assert bench.class_names == ["tench, Tinca tinca", "goldfish, Carassius auratus"]
    assert bench.labels == bench.class_names and [r.label for r in bench.records] == [0, 1]
    np.testing.assert_array_equal(bench.records[1].gt_boxes, [[10, 20, 30, 40], [50, 60, 70, 80]])
    assert bench.records[0].path == imagenet_root / "val" / "n01440764/ILSVRC2012_val_00000293.JPEG"
    assert bench.records[0].prediction_name == "n01440764/ILSVRC2012_val_00000293"
    with pytest.raises(ConfigError, match="--split test: the ImageNet lists hold one split"):
        open_layout("imagenet", imagenet_root, "test")


def test_wsol_tree_and_bare_metadata_folder(tmp_path):
    root = tmp_path / "wsol"
    wsol_split(root, "CUB", "test")
    wsol_split(root, "CUB", "val")
    bench = open_layout("wsol", root)  # the only dataset is picked, split test by default
    assert (bench.dataset_name, bench.split) == ("CUB", "test")
    assert [r.path for r in bench.records] == [root / "dataset" / "CUB" / "a/1.jpg", root / "dataset/CUB/b/2.jpg"]
    assert bench.labels == ["class 0", "class 1"] and bench.records[1].size == (200, 100)
    assert len(bench.records[1].gt_boxes) == 2
    bare = open_layout("wsol", root / "metadata" / "CUB" / "val")
    assert bare.dataset_name is None and bare.records[0].path == root / "metadata/CUB/val/a/1.jpg"
    with pytest.raises(DatasetLayoutError, match=r"no image_ids.txt \(datasets: CUB; splits of CUB: test, val\)"):
        open_layout("wsol", root, "train")


def test_wsol_two_datasets_need_a_name(tmp_path):
    root = tmp_path / "wsol"
    wsol_split(root, "CUB", "test")
    wsol_split(root, "ILSVRC", "test")
    with pytest.raises(ConfigError, match=r"pick a dataset with --dataset-name \(CUB, ILSVRC\)"):
        open_layout("wsol", root)
    bench = open_layout("wsol", root, dataset_name="ILSVRC")
    assert bench.records[0].path == root / "dataset" / "ILSVRC" / "a/1.jpg"


def test_class_names_file_overrides_and_is_checked(tmp_path):
    root = tmp_path / "wsol"
    wsol_split(root, "CUB", "test")
    names = write(tmp_path, "names.txt", "albatross\nlaysan albatross\n")
    assert open_layout("wsol", root, class_names_file=names).labels == ["albatross", "laysan albatross"]
    with pytest.raises(ConfigError, match="1 names, but image 'b/2.jpg' has label 1"):
        open_layout("wsol", root, class_names_file=write(tmp_path, "one.txt", "albatross\n"))


def test_stratified_indices_round_robin_in_original_order():
    labels = [0, 0, 0, 1, 2, 2]
    # round 1 takes positions 0 (class 0), 3 (class 1), 4 (class 2); round 2 takes 1 (class 0), 5 (class 2)
    assert stratified_indices(labels, 3) == [0, 3, 4]
    assert stratified_indices(labels, 4) == [0, 1, 3, 4]
    assert stratified_indices(labels, 100) == [0, 1, 2, 3, 4, 5]
    assert stratified_indices(labels, 0) == []


def test_select_classes_by_id_name_short_name_and_folder(imagenet_root, cub_root):
    imagenet = open_layout("imagenet", imagenet_root)
    for wanted in (["1"], ["Goldfish, Carassius auratus"], ["goldfish"], ["n01443537"]):
        assert [r.label for r in select(imagenet, wanted).records] == [1]
    assert select(imagenet, ["tench", "1"]).labels == imagenet.labels
    with pytest.raises(ConfigError, match="no class 'barracuda' in this dataset"):
        select(imagenet, ["barracuda"])
    cub = open_layout("cub", cub_root, "all")
    # class 0 has images 1, 2 and class 1 images 3, 4: one of each, the first of its class
    picked = select(cub, ["001.black_footed_albatross", "002.Laysan_Albatross"], limit=2)
    assert [r.image_id for r in picked.records] == ["001.Black_footed_Albatross/a_1.jpg",
                                                    "002.Laysan_Albatross/l_1.jpg"]
    # --limit applies after --classes: both images of class 1 remain
    assert [r.image_id for r in select(cub, ["1"], limit=5).records] == ["002.Laysan_Albatross/l_1.jpg",
                                                                         "002.Laysan_Albatross/l_2.jpg"]
    with pytest.raises(ConfigError, match="no image left"):
        select(cub, limit=0)
