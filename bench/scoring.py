"""Benchmark scoring speed: images/s of `score_split` on cached maps, in one process vs a process pool,
and the Loc τ sweep (the map quantised once, contours once per distinct cut, no box score) vs
`boxes_from_map` at every τ. Same run.

The maps are smooth random blobs (one to three per image, 512×512, stored in the benchmark's float16
map cache), like the engine's maps; GT boxes sit on the strongest blob.

    python bench/scoring.py                       # 400 images, workers = every core
    python bench/scoring.py --images 2000 --workers 8
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import environment, write_json

from genpromp_annotate.engine.boxes import boxes_from_map
from genpromp_annotate.evaluation.iou import iou_inclusive
from genpromp_annotate.evaluation.layouts import EvalRecord
from genpromp_annotate.evaluation.loc_metrics import gt_boxes_to_frame
from genpromp_annotate.evaluation.loc_sweep import sweep_ious
from genpromp_annotate.evaluation.map_cache import MapCache
from genpromp_annotate.evaluation.map_sources import CachedMaps
from genpromp_annotate.evaluation.scoring import score_split

SIZE = 512


def make_maps(folder: Path, count: int) -> tuple[list[EvalRecord], list[str], CachedMaps]:
    rng = np.random.default_rng(0)
    cache = MapCache(folder, "gp-bench0000000")
    records, labels = [], []
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    for i in range(count):
        map_ = np.zeros((SIZE, SIZE), dtype=np.float32)
        blobs = [(rng.uniform(80, 430), rng.uniform(80, 430), rng.uniform(20, 90), rng.uniform(0.3, 1.0))
                 for _ in range(int(rng.integers(1, 4)))]
        blobs[0] = (*blobs[0][:3], 1.2)  # the strongest
        for cx, cy, sigma, weight in blobs:
            map_ += weight * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
        map_ = (map_ - map_.min()) / (map_.max() - map_.min())
        cx, cy, sigma, _ = blobs[0]
        width, height = int(rng.integers(200, 800)), int(rng.integers(200, 800))
        box = np.array([[max(cx - 1.5 * sigma, 0) * width / SIZE, max(cy - 1.5 * sigma, 0) * height / SIZE,
                         min(cx + 1.5 * sigma, SIZE - 1) * width / SIZE, min(cy + 1.5 * sigma, SIZE - 1) * height / SIZE]])
        image_id = f"c{i % 10}/img{i:05d}.jpg"
        cache.save(image_id, map_, f"class {i % 10}", width, height)
        records.append(EvalRecord(image_id, folder / image_id, i % 10, None, box, None, image_id))
        labels.append(f"class {i % 10}")
    cache.flush()
    return records, labels, CachedMaps(cache)


def naive_sweep(maps: CachedMaps, records: list[EvalRecord], thresholds: np.ndarray) -> None:
    """`boxes_from_map` at every τ (what a direct loop over the paper's box rule does)."""
    for record in records:
        loaded = maps.load(record)
        gts = gt_boxes_to_frame(record.gt_boxes, loaded.width, loaded.height, SIZE)
        boxes = np.array([[b.x1, b.y1, b.x2, b.y2] for b in (boxes_from_map(loaded.frame, float(t))[0]
                                                              for t in thresholds)])
        iou_inclusive(boxes, gts).max(axis=1)


def fast_sweep(maps: CachedMaps, records: list[EvalRecord], thresholds: np.ndarray) -> None:
    for record in records:
        loaded = maps.load(record)
        sweep_ious(loaded.frame, record.gt_boxes, loaded.width, loaded.height, thresholds, SIZE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    thresholds = np.arange(0, 1, 0.01)
    with tempfile.TemporaryDirectory() as tmp:
        records, labels, maps = make_maps(Path(tmp), args.images)
        timings = {}
        for name, workers in (("one_process", 1), (f"pool_{args.workers}_workers", args.workers)):
            start = time.perf_counter()
            scores = score_split(records, labels, maps, 0.25, workers=workers)
            timings[name] = time.perf_counter() - start
            print(f"score_split {name}: {args.images / timings[name]:.1f} images/s "
                  f"(GT-known {scores.loc.gt_known:.1f}, MaxBoxAccV2 {scores.maxboxacc_v2.value:.1f})", flush=True)
        subset = records[: min(100, len(records))]
        for name, fn in (("loc_sweep_every_tau", naive_sweep), ("loc_sweep_per_distinct_cut", fast_sweep)):
            start = time.perf_counter()
            fn(maps, subset, thresholds)
            timings[name] = time.perf_counter() - start
            print(f"{name}: {len(subset) / timings[name]:.1f} images/s", flush=True)
    pool = f"pool_{args.workers}_workers"
    payload = {
        "question": "benchmark scoring images/s: process pool vs one process; Loc τ sweep per distinct cut vs every τ",
        "environment": environment(torch.device("cpu"), torch.float32),
        "load_average_at_end": list(os.getloadavg()),
        "settings": {"images": args.images, "workers": args.workers, "map_size": SIZE, "tau_grid": 100},
        "images_per_s": {name: (args.images if name in ("one_process", pool) else min(100, args.images)) / seconds
                         for name, seconds in timings.items()},
        "pool_speedup": timings["one_process"] / timings[pool],
        "sweep_speedup": timings["loc_sweep_every_tau"] / timings["loc_sweep_per_distinct_cut"],
    }
    print(f"pool speedup {payload['pool_speedup']:.2f}x, sweep speedup {payload['sweep_speedup']:.2f}x")
    print(f"wrote {write_json('scoring', payload, args.out)}")


if __name__ == "__main__":
    main()
