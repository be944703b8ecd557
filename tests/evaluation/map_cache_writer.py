"""A map-cache writer for the SIGKILL test (test_map_cache.py): saves `count` known maps, resuming.

    python map_cache_writer.py ROOT VERSION COUNT SHARD_SIZE [STALL_AT]

It skips the ids already cached for their label (a resumed run), saves the rest, prints `flushed <n>` after
each shard it writes and `done <saved>` at the end. With STALL_AT = k, its k-th shard write puts half the
file in the temporary file, prints `stalled` and sleeps: the test SIGKILLs it there, mid-write, with the
k-th shard's maps still in memory.
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path
from typing import BinaryIO

import numpy as np

from genpromp_annotate.evaluation import map_cache

SIDE = 24


def image_id(i: int) -> str:
    return f"c{i % 3}/img{i:04d}.png"


def label(i: int) -> str:
    return f"class {i % 3}"


def expected_map(i: int) -> np.ndarray:
    """Map `i`, smooth and in [0, 1], the same in the writer and the test."""
    yy, xx = np.mgrid[0:SIDE, 0:SIDE] / SIDE
    return (0.5 + 0.5 * np.sin(3 * xx + i) * np.cos(2 * yy - 0.1 * i)).astype(np.float32)


def main(root: Path, version: str, count: int, shard_size: int, stall_at: int | None) -> None:
    real_write = map_cache.write_atomic
    shards = 0

    def write(path: Path, fill):  # stands in for map_cache's write_atomic (shards and manifest)
        nonlocal shards
        if path.parent.name != map_cache.SHARDS:
            return real_write(path, fill)
        shards += 1
        if shards == stall_at:
            def half(file: BinaryIO) -> None:
                whole = io.BytesIO()
                fill(whole)
                file.write(whole.getvalue()[: len(whole.getvalue()) // 2])
                file.flush()
                print("stalled", flush=True)
                time.sleep(600)

            return real_write(path, half)
        done = real_write(path, fill)
        print(f"flushed {shards}", flush=True)
        return done

    map_cache.write_atomic = write  # type: ignore[assignment]
    saved = 0
    with map_cache.MapCache(root, version, shard_size=shard_size) as cache:
        for i in range(count):
            if not cache.has(image_id(i), label(i)):
                cache.save(image_id(i), expected_map(i), label(i), 100 + i, 50 + i)
                saved += 1
    print(f"done {saved}", flush=True)


if __name__ == "__main__":
    stall = int(sys.argv[5]) if len(sys.argv) > 5 else None
    main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), stall)
