"""Stage-1 training speed and memory: the concept-token trainer against a reference-style loop, same run.

The reference-style loop does what the authors' textual-inversion loop does: one category at a time
(a fresh start per category), fp32, the text encoder's whole `(V, D)` token table handed to AdamW (a
dense `(V, D)` gradient and two `(V, D)` Adam moments every step), a batch of that category's images
per step. The trainer packs the batches of several categories into one UNet call, optimises only one
`(D,)` vector per category (spliced into the token lookup), and keeps every vocabulary row untouched.

Each measurement runs in its own child process on a freshly built, seeded random model, so peak memory
is the child's own: on CPU the peak resident set size sampled every 5 ms during the measured steps
(minus the size before them), on CUDA `torch.cuda.max_memory_allocated`.

    python bench/train.py                                    # CPU: tiny at 512 px, SD-v1.5-sized at 128 px
    python bench/train.py --sizes sd15 --device cuda --dtype bfloat16 --resolution-sd15 512 --steps 10
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import environment, synchronize, write_json

from genpromp_annotate.engine.loading import choose_device, choose_dtype, model_from_components
from genpromp_annotate.engine.tiny_model import (
    NAMED_WIDTHS,
    build_sd_v1_components,
    load_clip_tokenizer,
    write_clip_tokenizer_files,
)
from genpromp_annotate.engine.tokens import meta_token_for
from genpromp_annotate.training.concept_tokens import ConceptTrainer, ConceptTrainingConfig
from genpromp_annotate.training.data import CategoryImages, category_chunks
from genpromp_annotate.training.denoising import load_pixels, noisy_latents, per_sample_mse, prompt_batch

WIDTHS = NAMED_WIDTHS
LABELS = ["goldfish", "tench", "cat", "heron", "ray", "sparrow", "lion", "tiger"]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


class PeakMemory:
    """Peak memory of the block: CUDA allocator peak, or sampled RSS above the level at entry."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> Self:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            self.base = rss_bytes()
            self.peak = self.base
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.005)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, rss_bytes())

    @property
    def above_start_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def make_categories(folder: Path, tokenizer, n_categories: int, images_per_category: int) -> list[CategoryImages]:
    rng = np.random.default_rng(0)
    categories = []
    for label in LABELS[:n_categories]:
        paths = []
        for i in range(images_per_category):
            path = folder / f"{label}-{i}.png"
            Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(path)
            paths.append(path)
        categories.append(CategoryImages(label, f"<{label}>", meta_token_for(label, tokenizer).token_id, tuple(paths)))
    return categories


def build_model(size: str, device: str, dtype: str | None, folder: Path):
    tokenizer = load_clip_tokenizer(write_clip_tokenizer_files(folder / "tokenizer"))
    parts = build_sd_v1_components(WIDTHS[size], seed=0)
    return model_from_components(parts, tokenizer, device=device, dtype=dtype, source=f"random-{size}")


def run_trainer(model, categories, config: ConceptTrainingConfig, steps: int, warmup: int) -> dict[str, Any]:
    """Packed multi-category steps; `steps` measured after `warmup`."""
    trainer = ConceptTrainer(model, categories, config)
    for _ in range(warmup):
        trainer.step()
    images = 0
    with PeakMemory(model.device) as memory:
        synchronize(model.device)
        start = time.perf_counter()
        for _ in range(steps):
            report = trainer.step()
            images += report.images
        synchronize(model.device)
        seconds = time.perf_counter() - start
    return {"images": images, "seconds": seconds, "images_per_s": images / seconds,
            "peak_memory_mb_above_start": memory.above_start_mb,
            "trainable_parameters": len(categories) * trainer._table.weight.shape[1]}


def run_reference_style(model, categories, config: ConceptTrainingConfig, steps: int, warmup: int) -> dict[str, Any]:
    """One category at a time, fp32, the whole token table in AdamW (no restore: the reference's loop)."""
    model.to(dtype=torch.float32)
    text_encoder, tokenizer = model.text_encoder, model.tokenizer
    tokenizer.add_tokens([c.token for c in categories])
    text_encoder.resize_token_embeddings(len(tokenizer))
    table = text_encoder.get_input_embeddings()
    with torch.no_grad():
        for c in categories:
            table.weight[tokenizer.convert_tokens_to_ids(c.token)] = table.weight[c.meta_token_id]
    table.weight.requires_grad_(True)
    # The schedule: category after category, each with its own optimizer, its batches in order.
    plan = []
    for c in categories:
        for chunk in category_chunks(c, config.epochs, config.batch_size, config.seed, config.augment):
            plan.append((c, chunk))
    plan = [plan[i % len(plan)] for i in range(warmup + steps)]
    optimizers: dict[str, torch.optim.AdamW] = {}

    def step(category: CategoryImages, chunk) -> int:
        if category.token not in optimizers:  # the reference restarts per category
            optimizers.clear()
            optimizers[category.token] = torch.optim.AdamW([table.weight], lr=config.effective_lr,
                                                           betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
        optimizer = optimizers[category.token]
        pixels = load_pixels(chunk, config.resolution)
        noisy, timesteps, target = noisy_latents(model, pixels, [s.seed for s in chunk])
        token_id = tokenizer.convert_tokens_to_ids(category.token)
        ids = prompt_batch(tokenizer, [token_id] * len(chunk), [s.template for s in chunk], model.device)
        hidden = text_encoder(input_ids=ids).last_hidden_state
        loss = per_sample_mse(model.unet(noisy, timesteps, encoder_hidden_states=hidden).sample, target).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return len(chunk)

    for category, chunk in plan[:warmup]:
        step(category, chunk)
    images = 0
    with PeakMemory(model.device) as memory:
        synchronize(model.device)
        start = time.perf_counter()
        for category, chunk in plan[warmup:]:
            images += step(category, chunk)
        synchronize(model.device)
        seconds = time.perf_counter() - start
    return {"images": images, "seconds": seconds, "images_per_s": images / seconds,
            "peak_memory_mb_above_start": memory.above_start_mb, "trainable_parameters": table.weight.numel()}


def child(path_name: str, size: str, args: dict[str, Any], queue) -> None:
    torch.manual_seed(0)
    if args["threads"]:
        torch.set_num_threads(args["threads"])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = build_model(size, args["device"], args["dtype"], folder)
        categories = make_categories(folder, model.tokenizer, args["categories"], args["images"])
        config = ConceptTrainingConfig(resolution=args["resolution"], batch_size=args["batch_size"],
                                       categories_per_step=args["categories"], epochs=args["epochs"])
        if path_name == "trainer_packed":
            # A whole pack (every category's batch) per step; as many measured images as the reference.
            packs = max(1, math.ceil(args["steps"] / args["categories"]))
            result = run_trainer(model, categories, config, packs, warmup=1)
        elif path_name == "trainer_one_category_per_step":
            # Same UNet batch as the reference: isolates the splice vs the whole-table optimizer.
            result = run_trainer(model, categories, config.replace(categories_per_step=1), args["steps"], warmup=1)
        else:
            result = run_reference_style(model, categories, config, args["steps"], warmup=1)
        result["dtype"] = "float32" if path_name == "reference_style" else str(model.dtype).removeprefix("torch.")
        queue.put(result)


def measure(path_name: str, size: str, args: dict[str, Any]) -> dict[str, Any]:
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=child, args=(path_name, size, args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="tiny,sd15")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--resolution-tiny", type=int, default=512)
    parser.add_argument("--resolution-sd15", type=int, default=128,
                        help="128 keeps a CPU run within minutes on 2 cores; 512 is the paper's")
    parser.add_argument("--categories", type=int, default=4)
    parser.add_argument("--images", type=int, default=1, help="images per category")
    parser.add_argument("--batch-size", type=int, default=1, help="images of one category per step")
    parser.add_argument("--steps", type=int, default=4, help="measured reference steps (trainer: same images)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = choose_device(args.device)
    dtype = choose_dtype(device, args.dtype, training=True)  # fp32 on CPU unless asked: what train-project does
    results = []
    for size in args.sizes.split(","):
        # enough epochs that one category per step still has a batch for every measured step
        common = {"device": str(device), "dtype": str(dtype).removeprefix("torch."), "categories": args.categories,
                  "images": args.images, "batch_size": args.batch_size, "steps": args.steps,
                  "epochs": max(2, args.steps + 2), "threads": args.threads,
                  "resolution": getattr(args, f"resolution_{size}")}
        row: dict[str, Any] = {"model": size, "resolution": common["resolution"], "settings": common}
        for path_name in ("reference_style", "trainer_one_category_per_step", "trainer_packed"):
            row[path_name] = measure(path_name, size, common)
            print(f"{size} {path_name}: {row[path_name]}", flush=True)
        reference = row["reference_style"]
        for path_name in ("trainer_one_category_per_step", "trainer_packed"):
            row[f"{path_name}_speedup"] = row[path_name]["images_per_s"] / reference["images_per_s"]
            row[f"{path_name}_memory_saved_mb"] = (reference["peak_memory_mb_above_start"]
                                                   - row[path_name]["peak_memory_mb_above_start"])
        results.append(row)
    payload = {"question": "stage-1 images/s and peak memory: packed concept-token trainer vs reference-style loop",
               "environment": environment(device, dtype), "load_average_at_end": list(os.getloadavg()),
               "results": results}
    path = write_json("train", payload, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
