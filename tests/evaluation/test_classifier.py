"""Classifier predictions: the reference JSON of scores and the CSV of top-5 labels become rankings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genpromp_annotate.evaluation.classifier import read_classifier, read_top5_csv
from genpromp_annotate.evaluation.layouts import DatasetLayoutError

NAMES = ["tench, Tinca tinca", "goldfish, Carassius auratus", "great white shark", "tiger shark", "hammerhead",
         "electric ray", "stingray"]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_json_scores_rank_best_first_ties_keep_the_lower_id(tmp_path):
    scores = {
        # 7 classes: 0.9 (id 3) first, then the three 0.5 in id order (1, 4, 6), then 0.2 (id 0)
        "n01440764/ILSVRC2012_val_00000293": {"pred_scores": [0.2, 0.5, 0.1, 0.9, 0.5, 0.0, 0.5]},
        "n01443537/ILSVRC2012_val_00000236": {"pred_scores": [0, 0, 0, 0, 0, 0, 1]},  # all tied but id 6
    }
    rankings = read_classifier(write(tmp_path / "scores.json", json.dumps(scores)))
    assert rankings["n01440764/ILSVRC2012_val_00000293"].tolist() == [3, 1, 4, 6, 0]
    assert rankings["n01443537/ILSVRC2012_val_00000236"].tolist() == [6, 0, 1, 2, 3]


def test_json_with_fewer_than_five_classes_ranks_them_all(tmp_path):
    path = write(tmp_path / "scores.json", json.dumps({"a.jpg": {"pred_scores": [0.1, 0.7, 0.2]}}))
    ranking = read_classifier(path)["a.jpg"]
    assert ranking.tolist() == [1, 2, 0] and ranking.dtype.kind == "i"


def test_csv_with_class_ids(tmp_path):
    path = write(tmp_path / "top5.csv", "a.jpg,3,1,4,0,2\nb.jpg, 6 ,5,4,3,2\n")  # cells are stripped
    rankings = read_classifier(path)
    assert rankings["a.jpg"].tolist() == [3, 1, 4, 0, 2]
    assert rankings["b.jpg"].tolist() == [6, 5, 4, 3, 2]


def test_csv_with_names_short_names_and_a_header(tmp_path):
    # "tench" is the part of "tench, Tinca tinca" before the comma; names are case-insensitive; ids mix in
    text = ("image,top1,top2,top3,top4,top5\n"
            'a.jpg,tench,"goldfish, Carassius auratus",Great White Shark,3,stingray\n')
    rankings = read_top5_csv(write(tmp_path / "top5.csv", text), NAMES)
    assert list(rankings) == ["a.jpg"]  # the header is not an image
    assert rankings["a.jpg"].tolist() == [0, 1, 2, 3, 6]


def test_header_only_on_the_first_line(tmp_path):
    # "image" on line 2 is an image name, so the line has to be a valid prediction
    path = write(tmp_path / "top5.csv", "a.jpg,0,1,2,3,4\nimage,tench,1,2,3,4\n")
    assert read_top5_csv(path, NAMES)["image"].tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(("text", "message"), [
    ("a.jpg,0,1,2,3,4\nb.jpg,0,1,2,3\n", r"top5.csv:2: expected `image,top1,.*\(6 fields\), got 5"),
    ("a.jpg,0,1,2,3,4,5\n", r"top5.csv:1: expected .* got 7"),
    ("a.jpg,tench,goldfish,barracuda,3,4\n", r"top5.csv:1: 'barracuda' is neither a class id nor a class name"),
    ("a.jpg,0,1,2,3,7\n", r"top5.csv:1: class id 7 is outside 0…6"),  # 7 classes: ids 0…6
    ("a.jpg,0,1,2,-1,4\n", r"top5.csv:1: class id -1 is outside"),
    ("a.jpg,0,1,tench,3,4\n", r"top5.csv:1: the top-5 labels of 'a.jpg' repeat a class"),  # tench is id 0
    ("a.jpg,0,1,2,3,4\n\nb.jpg,0,1,2,3,4\na.jpg,4,3,2,1,0\n", r"top5.csv:4: image 'a.jpg' is listed twice"),
    ("", r"top5.csv: no prediction in this file"),
    ("image,top1,top2,top3,top4,top5\n\n", r"top5.csv: no prediction in this file"),
    ("a.jpg,--3,1,2,3,4\n", r"top5.csv:1: '--3' is neither"),
    ("a.jpg,²,1,2,3,4\n", r"top5.csv:1: '²' is neither"),
])
def test_csv_errors_name_the_file_and_line(tmp_path, text, message):
    path = write(tmp_path / "top5.csv", text)
    with pytest.raises(DatasetLayoutError, match=message):
        read_classifier(path, NAMES)


def test_csv_names_without_class_names_say_so(tmp_path):
    path = write(tmp_path / "top5.csv", "a.jpg,tench,0,1,2,3\n")
    with pytest.raises(DatasetLayoutError, match=r"top5.csv:1: .*no class names are known"):
        read_top5_csv(path)
    # without class names, any non-negative id is accepted (no upper bound is known)
    assert read_top5_csv(write(tmp_path / "ids.csv", "a.jpg,999,0,1,2,3\n"))["a.jpg"][0] == 999


def test_missing_files(tmp_path):
    with pytest.raises(DatasetLayoutError, match="classifier predictions file not found"):
        read_classifier(tmp_path / "none.csv")
    with pytest.raises(DatasetLayoutError, match="classifier predictions file not found"):
        read_classifier(tmp_path / "none.json")


def test_a_header_after_blank_lines_is_still_a_header(tmp_path):
    path = write(tmp_path / "top5.csv", "\n\nimage,top1,top2,top3,top4,top5\na.jpg,4,3,2,1,0\n")
    assert read_classifier(path, NAMES)["a.jpg"].tolist() == [4, 3, 2, 1, 0]


def test_json_with_fewer_scores_than_classes_is_refused(tmp_path):
    path = tmp_path / "preds.json"
    path.write_text(json.dumps({"a.jpg": {"pred_scores": [0.1, 0.9]}}))
    with pytest.raises(DatasetLayoutError, match=r"preds.json: 2 scores per image, but the dataset has 7 classes"):
        read_classifier(path, NAMES)
