"""bf16 on CPU, measured: images/s of the engine at SD-v1.5 size in fp32 and with bf16 weights, on 1
and 2 threads, in one run, with the CPU's capability recorded beside the figures.

    python bench/cpu_dtype.py                  # 2 images per measurement, 512 px, random weights

A CPU with AVX512-BF16 or AMX runs bf16 matmuls and convolutions natively; an AVX2-only CPU emulates
them (many times slower). The engine's default on CPU stays fp32 unless a run here shows bf16 ≥ 1.8×
faster on such a CPU; the JSON says which CPU the figures are for. The maps of the two precisions are
compared by Pearson correlation.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    images = make_images(args.images)
    labels = ["cat"] * args.images
    rows, maps = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = write_clip_tokenizer_files(Path(tmp) / "tok")
        for dtype in (torch.float32, torch.bfloat16):
            model = build_model("sd15", torch.device("cpu"), dtype, tokenizer)
            loc = Localizer(model)
            for threads in (int(t) for t in args.threads.split(",")):
                torch.set_num_threads(threads)
                loc.compute_maps(images[:1], labels[:1])  # warm-up (prompt cache, kernels)
                seconds = time_call(lambda loc=loc, key=str(dtype): maps.__setitem__(key, loc.compute_maps(images, labels)),
                                    torch.device("cpu"))
                rows.append({"dtype": str(dtype).removeprefix("torch."), "threads": threads,
                             "images_per_s": round(args.images / seconds, 4)})
                print(f"  {rows[-1]['dtype']:<9} {threads} thread(s): {rows[-1]['images_per_s']:.4f} images/s", flush=True)
            del model, loc
    a, b = (maps[str(d)].float().flatten(1).numpy() for d in (torch.float32, torch.bfloat16))
    pearson = [float(np.corrcoef(x, y)[0, 1]) for x, y in zip(a, b)]
    speedups = {t: next(r["images_per_s"] for r in rows if r["dtype"] == "bfloat16" and r["threads"] == t)
                / next(r["images_per_s"] for r in rows if r["dtype"] == "float32" and r["threads"] == t)
                for t in sorted({r["threads"] for r in rows})}
    for threads, ratio in speedups.items():
        print(f"  bf16 / fp32 on {threads} thread(s): {ratio:.2f}×")
    print(f"  maps: min Pearson fp32 vs bf16 {min(pearson):.4f}; CPU fast bf16: {cpu_has_fast_bf16()}")
    flags = cpu_flags()
    payload = {"environment": environment(torch.device("cpu"), torch.float32), "images": args.images,
               "image_size": 512, "model": "SD-v1.5 size, random weights",
               "cpu": {"fast_bf16": cpu_has_fast_bf16(),
                       "flags": sorted(f for f in flags if f.startswith(("avx512", "amx", "avx2")))},
               "rows": rows, "bf16_speedup_by_threads": {str(k): round(v, 3) for k, v in speedups.items()},
               "maps_min_pearson": round(min(pearson), 5)}
    print(f"wrote {write_json('cpu-dtype', payload, args.out)}")


if __name__ == "__main__":
    main()
