"""Benchmark the map cache: the sharded layout vs the old one `.npz` per image, same maps, same run.

For each layout: write images/s (save + the atomic, fsynced file writes), full read images/s (every map in
save order), random-access read images/s (a shuffled sample), the `has` scan of `benchmark --resume` (open
the cache, check every id's label) and the files and bytes on disk. The old layout is written by the code
the per-image cache used and read through MapCache's read-only fallback for it.

The shards deflate at level 1 (`map_shards.COMPRESS_LEVEL`), the old files at np.savez_compressed's level
6, so the write figure includes that choice as well as 8 fsyncs instead of 2000.

The maps are smooth random fields (noise at 16² and 64², bicubic to the side, min-max normalised), like
the engine's upsampled attention maps, so deflate sees realistic float16 data. A pool of distinct maps is
made up front and cycled (each map is compressed on its own, so repeats do not help compression); the
files were just written, so reads hit the page cache (cold-disk reads are not measured).

    python bench/map_cache.py                          # 2000 maps of 512×512, shards of 256
    python bench/map_cache.py --images 500 --side 256 --shard-size 64
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import environment, write_json

from genpromp_annotate.atomic_files import write_atomic
from genpromp_annotate.evaluation.map_cache import SHARD_SIZE, MapCache
from genpromp_annotate.evaluation.map_shards import COMPRESS_LEVEL

VERSION = "gp-bench0000000"


def smooth_maps(count: int, side: int, seed: int = 0) -> list[np.ndarray]:
    """`count` distinct smooth (side, side) float32 maps in [0, 1]."""
    rng = np.random.default_rng(seed)
    maps = []
    for _ in range(count):
        field = sum(weight * cv2.resize(rng.standard_normal((cells, cells)).astype(np.float32), (side, side),
                                        interpolation=cv2.INTER_CUBIC)
                    for cells, weight in ((16, 1.0), (64, 0.25)))
        maps.append(((field - field.min()) / (field.max() - field.min())).astype(np.float32))
    return maps


def image_id(i: int) -> str:
    return f"n{i % 50:08d}/ILSVRC2012_val_{i:08d}.JPEG"


def save_per_file(folder: Path, image: str, map_: np.ndarray, label: str, width: int, height: int) -> None:
    """What the per-image cache's save did: `<folder>/<image_id>.npz`, compressed, atomic."""
    map16, size = map_.astype(np.float16), np.array([width, height], dtype=np.int64)
    write_atomic(folder / f"{image}.npz", lambda f: np.savez_compressed(f, map=map16, label=np.array(label), size=size))


def disk_use(folder: Path) -> dict[str, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return {"files": len(files), "bytes": sum(p.stat().st_size for p in files),
            "allocated_bytes": sum(p.stat().st_blocks * 512 for p in files)}


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(root: Path, layout: str, pool: list[np.ndarray], count: int, shard_size: int,
            sample: list[int]) -> dict[str, float]:
    labels = [f"class {i % 50}" for i in range(count)]

    def write() -> None:
        if layout == "per_file":
            for i in range(count):
                save_per_file(root / VERSION, image_id(i), pool[i % len(pool)], labels[i], 500, 375)
        else:
            with MapCache(root, VERSION, shard_size=shard_size) as cache:
                for i in range(count):
                    cache.save(image_id(i), pool[i % len(pool)], labels[i], 500, 375)

    def has_scan() -> None:
        cache = MapCache(root, VERSION)
        assert all(cache.has(image_id(i), labels[i]) for i in range(count))

    write_s = timed(write)
    cache = MapCache(root, VERSION)
    full_s = timed(lambda: [cache.load(image_id(i)) for i in range(count)])
    random_s = timed(lambda: [cache.load(image_id(i)) for i in sample])
    for i in sample[:20]:  # what is read back is what was written
        np.testing.assert_array_equal(cache.load(image_id(i)).map, pool[i % len(pool)].astype(np.float16))
    open_s = timed(lambda: MapCache(root, VERSION))
    scan_s = timed(has_scan)
    return {"write_images_per_s": count / write_s, "full_read_images_per_s": count / full_s,
            "random_read_images_per_s": len(sample) / random_s, "open_seconds": open_s,
            "has_scan_seconds": scan_s, **disk_use(root / VERSION)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--shard-size", type=int, default=SHARD_SIZE)
    parser.add_argument("--distinct", type=int, default=100, help="distinct maps, cycled")
    parser.add_argument("--random-reads", type=int, default=500)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: the temp folder)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    pool = smooth_maps(min(args.distinct, args.images), args.side)
    sample = random.Random(0).sample(range(args.images), min(args.random_reads, args.images))
    results = {}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for layout in ("per_file", "sharded"):
            results[layout] = measure(Path(tmp) / layout, layout, pool, args.images, args.shard_size, sample)
            print(f"{layout}: " + ", ".join(f"{k} {v:.4g}" for k, v in results[layout].items()), flush=True)
        filesystem = tmp
    old, new = results["per_file"], results["sharded"]
    speedup = {key: new[key] / old[key] for key in ("write_images_per_s", "full_read_images_per_s",
                                                      "random_read_images_per_s")}
    speedup["has_scan_seconds"] = old["has_scan_seconds"] / new["has_scan_seconds"]
    ratio = {key: new[key] / old[key] for key in ("files", "bytes", "allocated_bytes")}
    for key, value in speedup.items():
        print(f"{key}: per-file {old[key]:.4g}, sharded {new[key]:.4g} → {value:.2f}x faster")
    print(f"open (part of the has scan): per-file {old['open_seconds']:.4g} s (a folder listing), sharded "
          f"{new['open_seconds']:.4g} s (every shard's index)")
    for key, value in ratio.items():
        print(f"{key}: per-file {old[key]}, sharded {new[key]} → ratio {value:.4f}")
    payload = {
        "question": "map cache: sharded layout vs one .npz per image (write, full / random read, resume has-scan, "
                    "files and bytes on disk)",
        "environment": environment(torch.device("cpu"), torch.float32),
        "load_average_at_end": list(os.getloadavg()),
        "settings": {"images": args.images, "side": args.side, "shard_size": args.shard_size,
                     "distinct_maps": len(pool), "random_reads": len(sample), "dtype": "float16",
                     "compression": {"per_file": "deflate level 6 (np.savez_compressed)",
                                     "sharded": f"deflate level {COMPRESS_LEVEL} (map_shards.COMPRESS_LEVEL)"},
                     "page_cache": "warm (files just written)", "folder": filesystem},
        "per_file": old, "sharded": new,
        "speedup_sharded_vs_per_file": speedup, "ratio_sharded_to_per_file": ratio,
    }
    print(f"wrote {write_json('map-cache', payload, args.out)}")


if __name__ == "__main__":
    main()
