"""Training-free refinements of the maps, measured: accuracy on the toy world, cost at SD-v1.5 size.

    python bench/refine.py                        # the shipped toy model; SD-v1.5-size costs on 1 image
    python bench/refine.py --skip-cost            # accuracy only (a few minutes on 2 cores)

Accuracy: on the toy world's held-out test split (base classes), GT-known Loc, MaxBoxAccV2 and mean IoU,
with τ chosen on the val split for every row, against the paper's map with the toy's timesteps and
resolutions (no refinement) in the same run. Rows: self-attention propagation (A·m, sharpened
minmax(A·m)·m, 2 steps), more timesteps, horizontal-flip TTA, per-resolution weights, and the toy
preset's choice. Cost: FLOPs per image (torch's counter) and images/s of each refinement on a random
model of SD-v1.5 size at 512 px, against the paper's setting in the same run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import count_flops, environment, time_call, write_json
from localize import build_model, make_images
from toy_world import Split, base_split, score_row

from genpromp_annotate.engine.loading import load_stable_diffusion
from genpromp_annotate.engine.localizer import Localizer
from genpromp_annotate.engine.tiny_model import write_clip_tokenizer_files
from genpromp_annotate.presets import LocalizeConfig, preset

# Refinements as changes to a base config; the toy rows use the toy's latent side 16 for propagation,
# the SD rows its latent side 64 (and 32).
TOY_ROWS: dict[str, dict[str, Any]] = {
    "paper's map (toy timesteps and resolutions)": {},
    "propagation A·m (16×16 self-attention)": {"propagation_side": 16},
    "propagation, sharpened minmax(A·m)·m": {"propagation_side": 16, "propagation_product": True},
    "propagation A·m, 2 steps": {"propagation_side": 16, "propagation_steps": 2},
    "more timesteps {300, 400, 500}": {"timesteps": (300, 400, 500)},
    "more timesteps {200, 300, 400, 500}": {"timesteps": (200, 300, 400, 500)},
    "horizontal-flip TTA": {"flip_tta": True},
    "resolution weights 8: 2, 16: 1": {"resolution_weights": (2.0, 1.0)},
    "resolution weights 8: 1, 16: 2": {"resolution_weights": (1.0, 2.0)},
    "sharpened propagation + flip TTA": {"propagation_side": 16, "propagation_product": True, "flip_tta": True},
}
COST_ROWS: dict[str, dict[str, Any]] = {
    "paper": {},
    "propagation at 64×64 (sharpened)": {"propagation_side": 64, "propagation_product": True},
    "propagation at 32×32 (sharpened)": {"propagation_side": 32, "propagation_product": True},
    "one more timestep {0, 50, 99}": {"timesteps": (0, 50, 99)},
    "horizontal-flip TTA": {"flip_tta": True},
    "resolution weights": {"resolution_weights": (2.0, 1.0)},
}


def accuracy_rows(model_dir: Path | None, val_images: int, test_images: int) -> list[dict[str, Any]]:
    if model_dir is None:
        from genpromp_annotate.toy.weights import write_toy_model

        model_dir = write_toy_model(Path(tempfile.mkdtemp()) / "toy-sd")
    model = load_stable_diffusion(model_dir, device="cpu", dtype="float32")
    toy = preset("toy")
    base = toy.replace(propagation_side=0, propagation_product=False, flip_tta=False, resolution_weights=())
    val, test = Split(base_split("val", val_images, 0)), Split(base_split("test", test_images, 0))
    rows = []
    for name, change in TOY_ROWS.items():
        config = base.replace(**change)
        started = time.perf_counter()
        row = score_row(name, Localizer(model, config), val, test, toy.threshold)
        row.update(settings={k: list(v) if isinstance(v, tuple) else v for k, v in change.items()},
                   seconds=round(time.perf_counter() - started, 2))
        rows.append(row)
    rows.append(score_row("the toy preset", Localizer(model, toy), val, test, toy.threshold))
    return rows


def cost_rows(n_images: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model("sd15", torch.device("cpu"), torch.float32, write_clip_tokenizer_files(Path(tmp) / "tok"))
    images, labels = make_images(n_images), ["cat"] * n_images
    rows = []
    for name, change in COST_ROWS.items():
        loc = Localizer(model, LocalizeConfig().replace(**change))
        flops = count_flops(lambda loc=loc: loc.compute_maps(images[:1], labels[:1]))  # also the warm-up
        seconds = time_call(lambda loc=loc: loc.compute_maps(images, labels), torch.device("cpu"))
        rows.append({"row": name, "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in change.items()},
                     "gflops_per_image": round(flops / 1e9, 1), "images_per_s": round(n_images / seconds, 4)})
        print(f"  {name:<36} {flops / 1e9:9.1f} GFLOPs/image  {n_images / seconds:.4f} images/s", flush=True)
    paper = rows[0]
    for row in rows:
        row["flops_ratio"] = round(row["gflops_per_image"] / paper["gflops_per_image"], 3)
        row["time_ratio"] = round(paper["images_per_s"] / row["images_per_s"], 3)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="toy model folder (default: the shipped one)")
    parser.add_argument("--val-images", type=int, default=200)
    parser.add_argument("--test-images", type=int, default=300)
    parser.add_argument("--cost-images", type=int, default=1, help="images timed at SD-v1.5 size")
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("accuracy on the toy world (τ chosen on val):", flush=True)
    accuracy = accuracy_rows(args.model, args.val_images, args.test_images)
    cost = []
    if not args.skip_cost:
        print("cost at SD-v1.5 size, 512 px, random weights, CPU fp32:", flush=True)
        cost = cost_rows(args.cost_images)
    payload = {"environment": environment(torch.device("cpu"), torch.float32), "toy_model": str(args.model),
               "toy_preset": preset("toy").as_dict(), "accuracy": accuracy, "cost_sd15": cost}
    print(f"wrote {write_json('refine', payload, args.out)}")


if __name__ == "__main__":
    main()
