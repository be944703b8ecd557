"""The toy world: deterministic scenes, GT boxes that hug the drawn shapes, the wsolevaluation layout."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from click.testing import CliRunner

from genpromp_annotate.cli import cli
from genpromp_annotate.toy.world import (
    ALL_CLASSES,
    BASE_CLASSES,
    NOVEL_CLASSES,
    Scene,
    Shape,
    render_scene,
    sample_scene,
    shape_mask,
    split_images,
)


def test_novel_classes_are_held_out_of_the_base_ones():
    assert set(NOVEL_CLASSES) and not set(NOVEL_CLASSES) & set(BASE_CLASSES)
    assert set(ALL_CLASSES) == set(BASE_CLASSES) | set(NOVEL_CLASSES)


def test_a_split_is_a_pure_function_of_its_arguments():
    a = split_images("test", 30, seed=3)
    assert a == split_images("test", 30, seed=3)
    assert a != split_images("test", 30, seed=4)
    assert a != split_images("val", 30, seed=3)
    assert [render_scene(x.scene)[0].tobytes() for x in a[:3]] == [render_scene(x.scene)[0].tobytes() for x in a[:3]]


def test_labels_cycle_over_every_class_and_novel_splits_hold_only_novel_labels():
    items = split_images("train", 60)
    assert {x.label for x in items} == set(ALL_CLASSES)
    assert {x.label for x in split_images("train", 20, novel=True)} == set(NOVEL_CLASSES)
    two = [x for x in items if len(x.scene.shapes) == 2]
    assert 0.3 < len(two) / len(items) < 0.7
    for x in two:  # the second object is a distractor of another class, and the label's object comes first
        assert x.scene.shapes[0].cls == x.label and x.scene.shapes[1].cls != x.label


@pytest.mark.parametrize("seed", range(5))
def test_objects_never_overlap(seed):
    rng = random.Random(seed)
    for _ in range(20):
        scene = sample_scene(rng, rng.sample(ALL_CLASSES, 3))
        masks = [shape_mask(s, 64, 64) > 0 for s in scene.shapes]
        for i in range(len(masks)):
            for j in range(i + 1, len(masks)):
                assert not (masks[i] & masks[j]).any()


def test_gt_box_is_the_bounding_box_of_the_half_covered_pixels():
    # A 10×10 square (half-size 5 / 0.85 so that its corners sit at 20 and 30) on a 64-px image:
    # pixels 20..29 are covered, so the box is [20, 20, 30, 30] (x2/y2 one past the last pixel).
    square = Shape("square", 25.0, 25.0, 5 / 0.85, 0.0, (255, 0, 0))
    image, objects = render_scene(Scene(128, (square,)))
    assert objects == [("square", (20, 20, 30, 30))]
    pixels = np.asarray(image)
    assert (pixels[20:30, 20:30] == (255, 0, 0)).all() and (pixels[19, 20:30] == 128).all()
    # the same scene at 128×64: x stretches by 2, y stays
    _, stretched = render_scene(Scene(128, (square,)), 128, 64)
    assert stretched == [("square", (40, 20, 60, 30))]


def test_toy_world_command_writes_a_wsol_tree_the_benchmark_reads(tmp_path):
    from genpromp_annotate.evaluation.datasets import open_layout

    runner = CliRunner()
    for args in (["--split", "test", "--images", "12"], ["--split", "val", "--images", "6", "--size", "96x64"],
                 ["--split", "test", "--images", "4", "--novel"]):
        result = runner.invoke(cli, ["toy-world", str(tmp_path), *args])
        assert result.exit_code == 0, result.output
    world = json.loads((tmp_path / "world.json").read_text())
    assert world == {"base_classes": list(BASE_CLASSES), "novel_classes": list(NOVEL_CLASSES), "preset": "toy"}
    test = open_layout("wsol", tmp_path, split="test")
    assert len(test.records) == 12 and test.class_names == list(ALL_CLASSES)  # names from class_names.txt
    first = test.records[0]
    assert first.image_id.startswith(f"{test.class_names[first.label]}/") and first.path.is_file()
    val = open_layout("wsol", tmp_path, split="val")
    assert {r.size for r in val.records} == {(96, 64)}
    novel = open_layout("wsol", tmp_path, split="test-novel")
    assert {novel.class_names[r.label] for r in novel.records} == set(NOVEL_CLASSES)
    # every split's GT matches its images' objects of the label's class
    item = split_images("test", 12)[0]
    _, objects = render_scene(item.scene)
    assert first.gt_boxes.tolist() == [list(b) for c, b in objects if c == item.label]


def test_toy_world_refuses_a_bad_size(tmp_path):
    result = CliRunner().invoke(cli, ["toy-world", str(tmp_path), "--size", "64xabc"])
    assert result.exit_code == 2 and "W or WxH" in result.output
