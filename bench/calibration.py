"""Are box scores probabilities? The shipped toy model's raw score vs hit (IoU ≥ 0.5 with a true object of
the prompt's class), before and after a score calibration fitted on val and measured on test.

    python bench/calibration.py                      # 200 val + 200 test images of the base classes

Half of each split's images (every other one) are localized with the wrong class word
(`toy.world.wrong_word`, the next base class): such a box is a hit only if it lands on an object of
that class (two-object scenes), so the splits hold the misses a calibration must learn about. Boxes
are the toy preset's (largest contour at its τ); the calibration is `fit_calibration` on the val
boxes (isotonic regression with its default prior), applied unchanged to the test boxes. Reported on
test: reliability tables and ECE of the raw and of the calibrated score, the Brier score, and what
`export --min-score` keeps at a few thresholds (boxes and their hit rate) on each score.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import environment, write_json
from toy_world import base_split, load_toy_model

from genpromp_annotate.engine.localizer import Localizer
from genpromp_annotate.evaluation.calibration import (
    HIT_IOU,
    box_hits,
    expected_calibration_error,
    fit_calibration,
    reliability_table,
)
from genpromp_annotate.presets import preset
from genpromp_annotate.toy.world import WorldImage, render_scene, wrong_word

MIN_SCORES = (0.3, 0.5, 0.7, 0.8, 0.9)


def scored_boxes(loc: Localizer, items: list[WorldImage], batch: int = 64) -> dict[str, Any]:
    """Raw score and hit of every box; odd-indexed images are prompted with the wrong class word."""
    scenes = [render_scene(item.scene) for item in items]
    words = [wrong_word(item.label) if i % 2 else item.label for i, item in enumerate(items)]
    scores: list[float] = []
    hits: list[bool] = []
    wrong: list[bool] = []
    no_box = 0
    for start in range(0, len(items), batch):
        chunk = scenes[start:start + batch]
        results = loc.localize([image for image, _ in chunk], words[start:start + batch], batch_size=batch)
        for offset, ((_, objects), result) in enumerate(zip(chunk, results)):
            word = words[start + offset]
            truth = np.array([box for cls, box in objects if cls == word], dtype=np.float64).reshape(-1, 4)
            no_box += not result.boxes
            found = box_hits(np.array([[b.x1, b.y1, b.x2, b.y2] for b in result.boxes]).reshape(-1, 4), truth)
            scores += [b.score for b in result.boxes]
            hits += [bool(h) for h in found]
            wrong += [word != items[start + offset].label] * len(result.boxes)
    return {"scores": np.array(scores), "hits": np.array(hits), "wrong_word": np.array(wrong), "no_box": no_box}


def summary(scores: np.ndarray, hits: np.ndarray) -> dict[str, Any]:
    return {"ece": round(expected_calibration_error(scores, hits), 4),
            "brier": round(float(np.mean((scores - hits) ** 2)), 4),
            "mean_score": round(float(scores.mean()), 4), "hit_rate": round(float(hits.mean()), 4),
            "reliability": [row.as_dict() for row in reliability_table(scores, hits)]}


def wrong_word_share(scores: np.ndarray, wrong: np.ndarray, bins: int = 10) -> list[float | None]:
    """Per raw-score bin, the fraction of its boxes prompted with the wrong word (why a bin misses)."""
    index = np.minimum((scores * bins).astype(int), bins - 1)
    return [round(float(wrong[index == b].mean()), 4) if (index == b).any() else None for b in range(bins)]


def kept_at(scores: np.ndarray, hits: np.ndarray) -> list[dict[str, Any]]:
    """What `export --min-score T` keeps: boxes and the fraction of them that are right."""
    rows = []
    for threshold in MIN_SCORES:
        keep = scores >= threshold
        rows.append({"min_score": threshold, "boxes": int(keep.sum()),
                     "hit_rate": round(float(hits[keep].mean()), 4) if keep.any() else None})
    return rows


def print_table(title: str, block: dict[str, Any]) -> None:
    print(f"  {title}: ECE {block['ece']:.3f}, Brier {block['brier']:.3f}, mean score {block['mean_score']:.3f}, "
          f"hit rate {block['hit_rate']:.3f}")
    for row in block["reliability"]:
        if row["count"]:
            print(f"    {row['low']:.1f}-{row['high']:.1f}  {row['count']:>4} boxes  mean score {row['mean_score']:.3f}"
                  f"  hit rate {row['hit_rate']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="toy model folder (default: the shipped one)")
    parser.add_argument("--val-images", type=int, default=200)
    parser.add_argument("--images", type=int, default=200, help="test images of the base classes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default bench/results/calibration-cpu-<time>.json)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, args.model = load_toy_model(args.model)
    config = preset("toy")
    loc = Localizer(model, config)

    started = time.perf_counter()
    val = scored_boxes(loc, base_split("val", args.val_images, args.seed))
    test = scored_boxes(loc, base_split("test", args.images, args.seed))
    calibration = fit_calibration(val["scores"], val["hits"])
    calibrated = calibration.apply(test["scores"])
    splits = {}
    for name, split in (("val", val), ("test", test)):
        own = ~split["wrong_word"]
        splits[name] = {"images": args.val_images if name == "val" else args.images, "boxes": int(split["scores"].size),
                        "images_without_box": split["no_box"], "hits": int(split["hits"].sum()),
                        "hit_rate_own_word": round(float(split["hits"][own].mean()), 4),
                        "hit_rate_wrong_word": round(float(split["hits"][~own].mean()), 4)}
    payload = {
        "benchmark": "score calibration on the toy world",
        "environment": environment(torch.device("cpu"), torch.float32),
        "model": "shipped toy model" if "toy-sd" in str(args.model) else str(args.model),
        "config": config.box_settings_key, "hit": f"IoU >= {HIT_IOU} with an object of the prompt's class",
        "seed": args.seed, "splits": splits,
        "calibration_fitted_on_val": calibration.as_dict(),
        "val_raw": summary(val["scores"], val["hits"]),
        "val_calibrated_in_sample": summary(calibration.apply(val["scores"]), val["hits"]),
        "test_raw": summary(test["scores"], test["hits"]),
        "test_calibrated": summary(calibrated, test["hits"]),
        "test_raw_wrong_word_share_by_bin": wrong_word_share(test["scores"], test["wrong_word"]),
        "test_min_score_raw": kept_at(test["scores"], test["hits"]),
        "test_min_score_calibrated": kept_at(calibrated, test["hits"]),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(f"toy model {args.model}; {config.box_settings_key}")
    for name, split in splits.items():
        print(f"  {name}: {split['boxes']} boxes, {split['hits']} hits (own word {split['hit_rate_own_word']:.3f}, "
              f"wrong word {split['hit_rate_wrong_word']:.3f}), {split['images_without_box']} images without a box")
    print_table("test, raw score", payload["test_raw"])
    print_table("test, calibrated on val", payload["test_calibrated"])
    print(f"  wrong-word share per raw-score bin: {payload['test_raw_wrong_word_share_by_bin']}")
    for raw, cal in zip(payload["test_min_score_raw"], payload["test_min_score_calibrated"]):
        print(f"  --min-score {raw['min_score']}: raw keeps {raw['boxes']} (hit rate {raw['hit_rate']}), "
              f"calibrated keeps {cal['boxes']} (hit rate {cal['hit_rate']})")
    print(f"wrote {write_json('calibration', payload, args.out)}")


if __name__ == "__main__":
    main()
