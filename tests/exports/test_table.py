"""The box table: checks that name the problem, filters that keep images, grouping, file-name stems."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from genpromp_annotate.errors import ConfigError
from genpromp_annotate.exports.table import (
    ExportError,
    category_names,
    check_box_table,
    filter_boxes,
    group_by_image,
    image_stem,
    unique_stems,
    write_csv,
)


def test_missing_column_is_named(box_table):
    with pytest.raises(ExportError, match=r"missing column\(s\) \['score'\]"):
        check_box_table(box_table.drop(columns="score"))


def test_inverted_box_is_named(box_table):
    box_table.loc[0, "x2"] = 5.0
    with pytest.raises(ExportError, match="imgs/a.jpg.*x2 < x1"):
        check_box_table(box_table)


def test_filter_by_score_keeps_images_without_surviving_boxes(box_table):
    kept = filter_boxes(box_table, min_score=0.6)
    assert list(pd.unique(kept["image_uri"])) == list(pd.unique(box_table["image_uri"]))
    with_box = kept.dropna(subset=["x1"])
    assert with_box["score"].tolist() == [0.9]
    b = kept[kept["image_uri"] == "http://example.org/media/b.png"]
    assert len(b) == 1 and math.isnan(b["x1"].iloc[0])  # one empty row stands for the image


def test_filter_by_model_version(box_table):
    kept = filter_boxes(box_table, model_version="v2").dropna(subset=["x1"])
    assert kept["model_version"].tolist() == ["v2"]
    both = filter_boxes(box_table, model_version=["v1", "v2"]).dropna(subset=["x1"])
    assert len(both) == 3


def test_filter_rejects_a_score_outside_0_1(box_table):
    with pytest.raises(ConfigError, match="min-score"):
        filter_boxes(box_table, min_score=2)


def test_categories_given_order_and_unknown_label(box_table):
    assert category_names(box_table) == ["cat", "dog"]
    assert category_names(box_table, ["dog", "bird", "cat"]) == ["dog", "bird", "cat"]
    with pytest.raises(ExportError, match=r"\['dog'\] are not in the category list"):
        category_names(box_table, ["cat"])


def test_group_by_image(box_table):
    images = group_by_image(box_table)
    assert [i.uri for i in images] == ["imgs/a.jpg", "http://example.org/media/b.png",
                                       "/data/local-files/?d=other/a.jpg"]
    assert [len(i.boxes) for i in images] == [1, 2, 0]
    assert images[2].label == "cat" and (images[2].width, images[2].height) == (32, 32)


@pytest.mark.parametrize("uri, stem", [
    ("imgs/a.jpg", "a"),
    ("C:\\data\\x y.JPEG", "x_y"),
    ("https://h.org/img/p%20q.png?token=1", "p_q"),
    ("/data/local-files/?d=folder/sub/c.jpg", "c"),
    ("s3://bucket/archive.tar.gz", "archive.tar"),
    (".hidden", "hidden"),
])
def test_image_stem(uri, stem):
    assert image_stem(uri) == stem


def test_unique_stems_on_collisions_ignoring_case():
    assert unique_stems(["a/x.jpg", "b/x.png", "c/X.jpg", "x_2.jpg"]) == ["x", "x_2", "X_3", "x_2_2"]


def test_csv_keeps_images_without_box(box_table, tmp_path):
    back = pd.read_csv(write_csv(box_table, tmp_path / "b.csv"))
    assert len(back) == 4 and back["x1"].isna().sum() == 1


def test_unscored_boxes_are_kept_and_export_as_certain(box_table):
    box_table.loc[0, "score"] = math.nan  # a box a person drew
    kept = filter_boxes(box_table, min_score=0.99).dropna(subset=["x1"])
    assert kept["image_uri"].tolist() == ["imgs/a.jpg"]
    assert group_by_image(kept)[0].boxes[0].score == 1.0
