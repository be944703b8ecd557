"""bf16 on CPU, measured: images/s of the engine at SD-v1.5 size in fp32, with bf16 weights, with fp32
weights under bf16 autocast, and each of fp32 / bf16 weights in channels-last memory, on 1 and 2
threads, in one run, with the CPU's capability recorded beside the figures.

    python bench/cpu_dtype.py                  # 2 images per measurement, 512 px, random weights
    python bench/cpu_dtype.py --variants fp32,bf16 --threads 2

A CPU with AVX512-BF16 or AMX runs bf16 matmuls and convolutions natively; an AVX2-only CPU emulates
them (many times slower). The engine's CPU default is bf16 only where the CPU has those instructions
(engine/loading.default_cpu_dtype), because a run here showed bf16 weights ≥ 1.8× faster on such a
CPU; the JSON says which CPU the figures are for. Each variant's maps are compared with fp32's by
Pearson correlation.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import environment, time_call, write_json
from localize import build_model, make_images

from genpromp_annotate.engine.cpu import cpu_flags, cpu_has_fast_bf16
from genpromp_annotate.engine.localizer import Localizer
from genpromp_annotate.engine.tiny_model import write_clip_tokenizer_files

VARIANTS = {  # name → (weights dtype, autocast to bf16, channels-last)
    "fp32": (torch.float32, False, False),
    "bf16": (torch.bfloat16, False, False),
    "fp32+autocast": (torch.float32, True, False),
    "fp32+channels-last": (torch.float32, False, True),
    "bf16+channels-last": (torch.bfloat16, False, True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--size", default="sd15", help="tiny | sd15")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from genpromp_annotate.engine.acceleration import to_channels_last

    images = make_images(args.images)
    labels = ["cat"] * args.images
    names = ["fp32", *[v for v in args.variants.split(",") if v != "fp32"]]
    rows, maps = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = write_clip_tokenizer_files(Path(tmp) / "tok")
        for name in names:
            dtype, autocast, channels_last = VARIANTS[name]
            model = build_model(args.size, torch.device("cpu"), dtype, tokenizer)
            if channels_last:
                to_channels_last(model)
            loc = Localizer(model)

            def run(loc=loc, autocast=autocast):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                    return loc.compute_maps(images, labels)

            for threads in (int(t) for t in args.threads.split(",")):
                torch.set_num_threads(threads)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                    loc.compute_maps(images[:1], labels[:1])  # warm-up (prompt cache, kernels)
                seconds = time_call(lambda run=run, name=name: maps.__setitem__(name, run()), torch.device("cpu"))
                rows.append({"variant": name, "threads": threads, "images_per_s": round(args.images / seconds, 4)})
                print(f"  {name:<20} {threads} thread(s): {rows[-1]['images_per_s']:.4f} images/s", flush=True)
            del model, loc
    pearson = {}
    for name in names[1:]:
        a, b = (maps[n].float().flatten(1).numpy() for n in ("fp32", name))
        pearson[name] = round(min(float(np.corrcoef(x, y)[0, 1]) for x, y in zip(a, b)), 5)
    speedups = {}
    for name in names[1:]:
        for threads in sorted({r["threads"] for r in rows}):
            ips = {r["variant"]: r["images_per_s"] for r in rows if r["threads"] == threads}
            speedups[f"{name}@{threads}"] = round(ips[name] / ips["fp32"], 3)
            print(f"  {name} / fp32 on {threads} thread(s): {ips[name] / ips['fp32']:.2f}×  "
                  f"(maps' min Pearson vs fp32 {pearson[name]:.4f})")
    print(f"  CPU fast bf16: {cpu_has_fast_bf16()}")
    flags = cpu_flags()
    payload = {"environment": environment(torch.device("cpu"), torch.float32), "images": args.images,
               "image_size": 512, "model": f"{args.size} size, random weights",
               "cpu": {"fast_bf16": cpu_has_fast_bf16(),
                       "flags": sorted(f for f in flags if f.startswith(("avx512", "amx", "avx2")))},
               "rows": rows, "speedup_over_fp32": speedups, "maps_min_pearson_vs_fp32": pearson}
    print(f"wrote {write_json('cpu-dtype', payload, args.out)}")


if __name__ == "__main__":
    main()
