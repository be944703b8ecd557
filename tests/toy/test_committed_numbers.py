"""The toy preset produces the numbers committed for it (README, docs/method.md, presets.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from genpromp_annotate.engine.localizer import Localizer
from genpromp_annotate.presets import preset
from genpromp_annotate.toy.evaluate import box_ious_over_taus, render_with_gt
from genpromp_annotate.toy.world import BASE_CLASSES, split_images, wrong_word

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"
CAPPED = RESULTS / "toy-capped-cpu-20261202T061016.json"


def _base_test_split(n: int):
    items = [item for item in split_images("test", 2 * n, seed=0) if item.label in BASE_CLASSES][:n]
    rendered = [render_with_gt(item) for item in items]
    return [image for image, _ in rendered], [gt for _, gt in rendered], [item.label for item in items]


@pytest.mark.slow
def test_the_toy_preset_gives_its_committed_test_numbers(toy_model):
    committed = json.loads(CAPPED.read_text())
    row = next(r for r in committed["rows"] if r["row"].startswith("val choice"))
    config = preset("toy")
    assert row["settings"] == json.loads(json.dumps(config.as_dict()))  # the committed row is the shipped preset
    images, gts, labels = _base_test_split(committed["test_images"])
    loc = Localizer(toy_model, config)
    measured = {}
    for key, words in (("gt_known", labels), ("wrong_word", [wrong_word(label) for label in labels])):
        maps = np.concatenate([loc.compute_maps(images[i:i + 64], words[i:i + 64]).float().numpy()
                               for i in range(0, len(images), 64)])
        ious = box_ious_over_taus(maps, gts, (config.threshold,))[:, 0]
        measured[key] = 100 * float((ious >= 0.5).mean())
    one_image = 100 / len(images) + 1e-9  # BLAS rounding may tip one box on another CPU
    assert abs(measured["gt_known"] - row["gt_known"]) <= one_image, measured
    assert abs(measured["wrong_word"] - row["wrong_word"]) <= one_image, measured
    assert measured["gt_known"] >= 90 and measured["wrong_word"] <= 20  # the toy's two targets
