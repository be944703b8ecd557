"""Benchmark layout readers (method §7) on small fixture folders, and the classifier predictions reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from genpromp_annotate.evaluation.layouts import (
    DatasetLayoutError,
    read_class_predictions,
    read_cub,
    read_imagenet_val,
    read_synset_mapping,
    read_wsolevaluation,
)
from tests.evaluation.conftest import write

TEST_DATA = Path(__file__).parent.parent / "data"


@pytest.fixture()
def cub_root(tmp_path) -> Path:
    root = tmp_path / "CUB_200_2011"
    write(root, "images.txt", "1 001.Black_footed_Albatross/a_1.jpg\n2 001.Black_footed_Albatross/a_2.jpg\n"
                              "3 002.Laysan_Albatross/l_1.jpg\n")
    write(root, "image_class_labels.txt", "1 1\n2 1\n3 2\n")
    write(root, "train_test_split.txt", "1 1\n2 0\n3 0\n")
    write(root, "bounding_boxes.txt", "1 60.0 27.0 325.0 304.0\n2 139.0 30.0 153.0 264.0\n3 14.5 112.0 388.0 186.0\n")
    write(root, "classes.txt", "1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n")
    return root


@pytest.fixture()
def imagenet_lists(tmp_path) -> tuple[Path, Path]:
    mapping = write(tmp_path, "LOC_synset_mapping.txt",
                    "n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n")
    val = write(tmp_path, "val_folder_new.txt",
                "n01440764/ILSVRC2012_val_00000293.JPEG 0 111 108 441 193\n"
                "n01443537/ILSVRC2012_val_00000236.JPEG 1 10 20 30 40 50 60 70 80\n")
    return mapping, val


@pytest.fixture()
def wsol_meta(tmp_path) -> Path:
    meta = tmp_path / "metadata" / "CUB" / "test"
    write(meta, "image_ids.txt", "001.Black_footed_Albatross/a_2.jpg\n002.Laysan_Albatross/l_1.jpg\n")
    write(meta, "class_labels.txt", "001.Black_footed_Albatross/a_2.jpg,0\n002.Laysan_Albatross/l_1.jpg,1\n")
    write(meta, "image_sizes.txt", "001.Black_footed_Albatross/a_2.jpg,500,340\n002.Laysan_Albatross/l_1.jpg,500,375\n")
    write(meta, "localization.txt", "001.Black_footed_Albatross/a_2.jpg,139,30,292,294\n"
                                    "002.Laysan_Albatross/l_1.jpg,14,112,402,298\n"
                                    "002.Laysan_Albatross/l_1.jpg,1,2,3,4\n")
    return meta


def test_cub_test_split(cub_root):
    records = read_cub(cub_root)  # test split: ids 2 and 3
    assert [r.image_id for r in records] == ["001.Black_footed_Albatross/a_2.jpg", "002.Laysan_Albatross/l_1.jpg"]
    assert [r.label for r in records] == [0, 1]  # 1-based ids shifted to 0-based
    assert records[1].label_name == "002.Laysan_Albatross"
    # x y w h → [x, y, x + w, y + h]: 14.5 + 388 = 402.5, 112 + 186 = 298
    np.testing.assert_array_equal(records[1].gt_boxes, [[14.5, 112.0, 402.5, 298.0]])
    assert records[0].path == cub_root / "images" / "001.Black_footed_Albatross/a_2.jpg"
    assert records[0].prediction_name == "001.Black_footed_Albatross/a_2.jpg" and records[0].size is None
    assert [r.image_id for r in read_cub(cub_root, split="train")] == ["001.Black_footed_Albatross/a_1.jpg"]
    assert len(read_cub(cub_root, split="all")) == 3


def test_cub_errors_name_file_and_line(cub_root):
    write(cub_root, "bounding_boxes.txt", "1 60 27 325 304\n2 139 30 153\n3 1 1 1 1\n")
    with pytest.raises(DatasetLayoutError, match=r"bounding_boxes.txt:2: expected `id x y w h`"):
        read_cub(cub_root)
    write(cub_root, "bounding_boxes.txt", "1 60 27 325 304\n2 139 30 153 1\n3 1 1 1 1\n")
    (cub_root / "classes.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="classes.txt: file not found"):
        read_cub(cub_root)


def test_synset_mapping_of_the_1000_classes():
    synsets = read_synset_mapping(TEST_DATA / "imagenet_synset_mapping.txt")
    assert len(synsets) == 1000 and len({s.wnid for s in synsets}) == 1000
    assert (synsets[0].wnid, synsets[0].names) == ("n01440764", "tench, Tinca tinca")  # line order = label id
    assert synsets[1].names == "goldfish, Carassius auratus"


def test_imagenet_val(imagenet_lists, tmp_path):
    mapping, val = imagenet_lists
    records = read_imagenet_val(mapping, val, image_root=tmp_path / "val")
    assert [r.label for r in records] == [0, 1]
    assert records[0].label_name == "tench, Tinca tinca"
    assert records[0].prediction_name == "n01440764/ILSVRC2012_val_00000293"  # no extension (method §6)
    assert records[0].path == tmp_path / "val/n01440764/ILSVRC2012_val_00000293.JPEG"
    np.testing.assert_array_equal(records[1].gt_boxes, [[10, 20, 30, 40], [50, 60, 70, 80]])


def test_imagenet_label_must_match_the_wnid_folder(imagenet_lists):
    mapping, val = imagenet_lists
    val.write_text("n01440764/ILSVRC2012_val_00000293.JPEG 1 111 108 441 193\n")
    with pytest.raises(DatasetLayoutError, match=r"val_folder_new.txt:1: .* folder n01440764 but label 1 is n01443537"):
        read_imagenet_val(mapping, val)
    val.write_text("n01440764/x.JPEG 0 1 2 3 4 5\n")
    with pytest.raises(DatasetLayoutError, match=r":1: expected `path label x1 y1 x2 y2"):
        read_imagenet_val(mapping, val)


def test_wsolevaluation_metadata(wsol_meta, tmp_path):
    records = read_wsolevaluation(wsol_meta, image_root=tmp_path / "dataset")
    assert [r.image_id for r in records] == ["001.Black_footed_Albatross/a_2.jpg", "002.Laysan_Albatross/l_1.jpg"]
    assert [r.size for r in records] == [(500, 340), (500, 375)]
    assert records[1].gt_boxes.tolist() == [[14, 112, 402, 298], [1, 2, 3, 4]]  # one line per box
    assert records[1].label == 1 and records[1].path == tmp_path / "dataset/002.Laysan_Albatross/l_1.jpg"


def test_wsolevaluation_missing_box_names_the_image(wsol_meta):
    write(wsol_meta, "localization.txt", "001.Black_footed_Albatross/a_2.jpg,139,30,292,294\n")
    with pytest.raises(DatasetLayoutError, match="localization.txt: no line for image id '002.Laysan_Albatross/l_1.jpg'"):
        read_wsolevaluation(wsol_meta)


def test_class_predictions(tmp_path):
    path = write(tmp_path, "pred.json", json.dumps({"a/b.jpg": {"pred_scores": [0.1, 0.7, 0.2]},
                                                    "a/c.jpg": {"pred_scores": [1, 0, 0]}}))
    scores = read_class_predictions(path)
    assert scores["a/b.jpg"].tolist() == [0.1, 0.7, 0.2] and scores["a/c.jpg"].dtype == np.float64
    with pytest.raises(DatasetLayoutError, match="has 3 scores, expected 200"):
        read_class_predictions(path, num_classes=200)
    write(tmp_path, "bad.json", json.dumps({"x": {"scores": [1]}}))
    with pytest.raises(DatasetLayoutError, match="entry 'x' has no \"pred_scores\""):
        read_class_predictions(tmp_path / "bad.json")
