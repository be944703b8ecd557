"""Localization speed: the engine against a reference-style path, measured in the same run.

The reference-style path does what the authors' inference loop does: the text encoder runs for every
batch (7 templates for f_d and for f_r), then each image goes through the full UNet once per timestep
with every cross-attention layer storing its whole (B·heads, N, 77) probability tensor; the maps are
then read from the six layers GenPromp uses. The engine caches the text embeddings per category,
sends both timesteps through the UNet in one batch, captures only the category column of the six
layers, and stops the UNet after the last of them.

Both paths share the VAE encoding and the map arithmetic, so their maps must agree; the script
checks it (max |Δ| is reported).

    python bench/localize.py                              # CPU: tiny and SD-v1.5-sized random models
    python bench/localize.py --sizes sd15 --device cuda --dtype bfloat16 --batch-sizes 8,16,32,64
    python bench/localize.py --sizes sd15 --annotate --batch-sizes 1,8    # + annotate end to end, memory

With `--annotate`, every batch size also runs in a fresh process (so its peak memory is its own): the
engine alone on the images in memory, then `annotate` end to end on the same images written as JPEG
files into a SQLite project (download/decode on the prefetch thread + model + store writes), with the
process's peak RSS and, on CUDA, the peak allocated GPU memory. `--compile` adds the same run with
`torch.compile` (see genpromp_annotate/engine/acceleration.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import count_flops, environment, synchronize, time_call, write_json

from genpromp_annotate.engine.capture import probe_cross_attention_layers, select_layers
from genpromp_annotate.engine.loading import choose_device, choose_dtype, model_from_components
from genpromp_annotate.engine.localizer import Localizer
from genpromp_annotate.engine.maps import maps_from_columns
from genpromp_annotate.engine.prompts import encode_ensemble, mix_embeddings
from genpromp_annotate.engine.tiny_model import (
    NAMED_WIDTHS,
    build_sd_v1_components,
    load_clip_tokenizer,
    write_clip_tokenizer_files,
)

WIDTHS = NAMED_WIDTHS
LABELS = ["goldfish, Carassius auratus", "tench, Tinca tinca", "electric ray, crampfish", "cat"]


class StoreEveryCrossAttention:
    """Reference-style processor: classic baddbmm/softmax/bmm attention that keeps the full probabilities."""

    def __init__(self, name: str, store: dict[str, list[torch.Tensor]]) -> None:
        self.name = name
        self.store = store

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **_kw):
        batch = hidden_states.shape[0]
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        probs = attn.get_attention_scores(query, key, attention_mask)  # (B·H, N, 77)
        self.store.setdefault(self.name, []).append(probs.view(batch, attn.heads, *probs.shape[1:]))
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        return attn.to_out[1](attn.to_out[0](out)) / attn.rescale_output_factor


class ReferenceStylePath:
    """Per image, per timestep, full UNet forward storing all 16 cross-attention maps."""

    def __init__(self, localizer: Localizer) -> None:
        self.loc = localizer
        self.model = localizer.model
        self.all_layers = probe_cross_attention_layers(self.model.unet)
        self.store: dict[str, list[torch.Tensor]] = {}
        processors = dict(self.model.unet.attn_processors)
        for layer in self.all_layers:
            processors[layer.name] = StoreEveryCrossAttention(layer.name, self.store)
        self.processors = processors

    @torch.inference_mode()
    def compute_maps(self, images: list[Image.Image], labels: list[str]) -> torch.Tensor:
        model, config = self.model, self.loc.config
        original = dict(model.unet.attn_processors)
        model.unet.set_attn_processor(dict(self.processors))  # diffusers empties the dict it is given
        try:
            # text encoder for every batch: f_d and f_r (= f_d without a learned token) per label
            prompts = {}
            for label in set(labels):
                cat = self.loc.category(label)
                f_d, pos = encode_ensemble(model.text_encoder, model.tokenizer, cat.meta_token_id)
                f_r, _ = encode_ensemble(model.text_encoder, model.tokenizer, cat.concept_token_id or cat.meta_token_id)
                prompts[label] = (mix_embeddings(f_r, f_d, config.omega), pos)
            maps = []
            selected = select_layers(self.all_layers, self.loc.latent_side, tuple(config.resolutions))
            for image, label in zip(images, labels):
                context, position = prompts[label]
                latents = self.loc._latents(self.loc._pixels([image]))
                noise = torch.randn(latents.shape[1:], generator=torch.Generator().manual_seed(config.seed))
                noise = noise.to(latents.device, latents.dtype)[None]
                self.store.clear()
                for t in config.timesteps:
                    step = torch.tensor([t], device=latents.device)
                    noisy = model.scheduler.add_noise(latents, noise, step) if config.add_noise else latents
                    model.unet(noisy, step, encoder_hidden_states=context[None].to(model.dtype))
                columns = {layer.name: torch.cat(self.store[layer.name])[..., position].float() for layer in selected}
                maps.append(maps_from_columns(columns, selected, len(config.timesteps), self.loc.latent_side,
                                              config.image_size))
            return torch.cat(maps)
        finally:
            model.unet.set_attn_processor(original)


def make_images(count: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    sizes = [(640, 480), (500, 375), (480, 640), (512, 512)]
    return [Image.fromarray(rng.integers(0, 255, (sizes[i % 4][1], sizes[i % 4][0], 3), dtype=np.uint8))
            for i in range(count)]


def build_model(size: str, device: torch.device, dtype: torch.dtype, tokenizer_dir: Path):
    parts = build_sd_v1_components(WIDTHS[size], seed=0)
    return model_from_components(parts, load_clip_tokenizer(tokenizer_dir), device=str(device), dtype=dtype,
                                 source=f"random-{size}")


def run_images(fn, images: list[Image.Image], labels: list[str], batch_size: int) -> torch.Tensor:
    outs = [fn(images[i : i + batch_size], labels[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return torch.cat(outs)


def bench_size(size: str, device: torch.device, dtype: torch.dtype, n_images: int, batch_sizes: list[int],
               ref_images: int, rounds: int, tokenizer_dir: Path) -> dict:
    print(f"\n== {size}: building a random model on {device} ({dtype}) ...", flush=True)
    model = build_model(size, device, dtype, tokenizer_dir)
    engine = Localizer(model)
    reference = ReferenceStylePath(engine)
    images = make_images(max(n_images, ref_images))
    labels = [LABELS[i % len(LABELS)] for i in range(len(images))]
    flop_batch = min(2, len(images))

    # FLOPs per image of one batch; doubles as the warm-up (and fills the engine's prompt cache).
    engine_maps = engine.compute_maps(images[:flop_batch], labels[:flop_batch])
    engine_flops = count_flops(lambda: engine.compute_maps(images[:flop_batch], labels[:flop_batch])) / flop_batch
    ref_flops = count_flops(lambda: reference.compute_maps(images[:flop_batch], labels[:flop_batch])) / flop_batch
    pixels = engine._pixels(images[:1])
    vae_flops = count_flops(lambda: model.vae.encode(pixels))
    ref_maps = reference.compute_maps(images[:flop_batch], labels[:flop_batch])
    max_diff = float((engine_maps.float() - ref_maps.float()).abs().max())

    # Throughput: the reference per image; the engine at each batch size; rounds alternate the paths.
    ref_time, ref_count = 0.0, 0
    engine_times = {b: 0.0 for b in batch_sizes}
    for _ in range(rounds):
        ref_time += time_call(lambda: run_images(reference.compute_maps, images[:ref_images], labels[:ref_images], 1),
                              device)
        ref_count += ref_images
        for b in batch_sizes:
            engine.compute_maps(images[:b], labels[:b])  # warm-up at this batch size (allocator, kernels)
            engine_times[b] += time_call(lambda b=b: run_images(engine.compute_maps, images[:n_images], labels[:n_images], b),
                                         device)
    ref_ips = ref_count / ref_time
    engine_ips = {b: rounds * n_images / t for b, t in engine_times.items()}
    best_b = max(engine_ips, key=engine_ips.get)
    result = {
        "size": size,
        "images_timed": {"engine": rounds * n_images, "reference": ref_count},
        "flops_per_image": {"engine": engine_flops, "reference": ref_flops, "vae_encoder": vae_flops},
        "flops_ratio_engine_over_reference": engine_flops / ref_flops,
        "images_per_s": {"reference": ref_ips, **{f"engine_batch_{b}": v for b, v in engine_ips.items()}},
        "speedup_best_engine_over_reference": engine_ips[best_b] / ref_ips,
        "best_batch_size": best_b,
        "max_abs_map_difference": max_diff,
    }
    if device.type == "cuda":
        result["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    print_table(result)
    return result


def annotate_child(size: str, device: torch.device, dtype: torch.dtype, batch: int, n_images: int,
                   compile_model: bool, tokenizer_dir: Path) -> dict:
    """Engine alone, then `annotate` end to end, at one batch size (run in its own process)."""
    import resource

    from genpromp_annotate.engine.acceleration import SpeedOptions, accelerate
    from genpromp_annotate.presets import LocalizeConfig
    from genpromp_annotate.project import add_labels, annotate_project, build_localizer, import_records
    from genpromp_annotate.sources import read_source
    from genpromp_annotate.store import queries as q
    from genpromp_annotate.store.database import open_store
    from genpromp_annotate.store.settings import project_settings

    model = build_model(size, device, dtype, tokenizer_dir)
    accelerate(model, SpeedOptions(compile=compile_model))
    images = make_images(n_images)
    engine = Localizer(model)
    engine.compute_maps(images[:batch], ["cat"] * batch)  # warm-up (kernels, prompt cache, compilation)
    engine_s = time_call(lambda: run_images(engine.compute_maps, images, ["cat"] * n_images, batch), device)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images" / "cat"
        folder.mkdir(parents=True)
        for i, image in enumerate(images):
            image.save(folder / f"{i:05d}.jpg", quality=92)
        store = open_store(f"sqlite:///{tmp}/store.db")
        with store.write() as session:
            q.create_project(session, "bench", f"random-{size}", project_settings(LocalizeConfig()))
        add_labels(store, "bench", ["cat"], model.tokenizer)
        import_records(store, "bench", read_source(folder.parent, "imagefolder"))
        runner = build_localizer(store, "bench", model=model)
        synchronize(device)
        summary = annotate_project(store, "bench", runner, batch_size=batch)
        synchronize(device)
        store.dispose()
    if summary.images != n_images:
        raise RuntimeError(f"annotate did {summary.images} of {n_images} images: {summary.errors[:3]}")
    result = {"batch_size": batch, "images": n_images, "compile": compile_model,
              "engine_images_per_s": n_images / engine_s, "annotate_images_per_s": summary.images_per_s,
              "annotate_over_engine": summary.images_per_s / (n_images / engine_s),
              "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    if device.type == "cuda":
        result["peak_gpu_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def run_annotate_children(size: str, device: torch.device, dtype: torch.dtype, batch_sizes: list[int],
                          n_images: int | None, compile_options: list[bool]) -> list[dict]:
    """`annotate_child` per batch size (and --compile), each in a fresh process for its own peak memory."""
    import json
    import subprocess

    rows = []
    for compile_model in compile_options:
        for batch in batch_sizes:
            count = n_images or 2 * batch
            spec = f"{size},{device},{str(dtype).removeprefix('torch.')},{batch},{count},{int(compile_model)}"
            cmd = [sys.executable, __file__, "--child", spec]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"child {cmd} failed:\n{done.stderr[-3000:]}")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            gpu = f", GPU {row['peak_gpu_allocated_gib']:.2f} GiB" if "peak_gpu_allocated_gib" in row else ""
            print(f"  batch {batch:>3}{' compiled' if compile_model else ''}: engine {row['engine_images_per_s']:.3f}"
                  f" images/s, annotate end to end {row['annotate_images_per_s']:.3f} "
                  f"({row['annotate_over_engine']:.2f}x of the engine), peak RSS {row['peak_rss_gib']:.2f} GiB{gpu}",
                  flush=True)
    return rows


def print_table(r: dict) -> None:
    f = r["flops_per_image"]
    print(f"{'':28}{'engine':>14}{'reference':>14}{'ratio':>10}")
    print(f"{'GFLOPs / image':28}{f['engine'] / 1e9:14.1f}{f['reference'] / 1e9:14.1f}"
          f"{r['flops_ratio_engine_over_reference']:10.3f}")
    print(f"{'  of which VAE encoder':28}{f['vae_encoder'] / 1e9:14.1f}{f['vae_encoder'] / 1e9:14.1f}")
    best = r["images_per_s"][f"engine_batch_{r['best_batch_size']}"]
    print(f"{'images / s (best batch ' + str(r['best_batch_size']) + ')':28}{best:14.3f}"
          f"{r['images_per_s']['reference']:14.3f}{r['speedup_best_engine_over_reference']:10.2f}x")
    for key, value in r["images_per_s"].items():
        if key.startswith("engine_batch_"):
            print(f"{'  engine, ' + key.removeprefix('engine_') :28}{value:14.3f}")
    print(f"max |engine map - reference map| = {r['max_abs_map_difference']:.2e}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="tiny,sd15", help="comma-separated: tiny, sd15")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: by device)")
    parser.add_argument("--images", type=int, default=None, help="engine images per round (default 4 CPU, 64 GPU)")
    parser.add_argument("--ref-images", type=int, default=None, help="reference images per round (default 2 CPU, 8 GPU)")
    parser.add_argument("--batch-sizes", default=None, help="engine batch sizes (default 2 CPU; 8,16,32,64 GPU)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--annotate", action="store_true",
                        help="also annotate end to end and peak memory per batch size, each in a fresh process")
    parser.add_argument("--annotate-images", type=int, default=None, help="images per annotate run (default 2 × batch)")
    parser.add_argument("--compile", action="store_true", help="with --annotate: also with torch.compile")
    parser.add_argument("--skip-reference", action="store_true", help="with --annotate: only the annotate runs")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.child:
        import json

        size, device_name, dtype_name, batch, count, compiled = args.child.split(",")
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer_dir = write_clip_tokenizer_files(Path(tmp) / "tokenizer")
            row = annotate_child(size, torch.device(device_name), choose_dtype(torch.device(device_name), dtype_name),
                                 int(batch), int(count), bool(int(compiled)), tokenizer_dir)
        print(json.dumps(row))
        return

    device = choose_device(args.device)
    dtype = choose_dtype(device, args.dtype)
    gpu = device.type == "cuda"
    batch_sizes = [int(b) for b in (args.batch_sizes or ("8,16,32,64" if gpu else "2")).split(",")]
    n_images = args.images or (max(batch_sizes) if gpu else 2)
    ref_images = args.ref_images or (8 if gpu else 2)
    torch.manual_seed(0)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer_dir = write_clip_tokenizer_files(Path(tmp) / "tokenizer")
        for size in args.sizes.split(","):
            result = {"size": size}
            if not args.skip_reference:
                result = bench_size(size, device, dtype, max(n_images, max(batch_sizes)), batch_sizes, ref_images,
                                    args.rounds, tokenizer_dir)
            if args.annotate:
                print(f"\n== {size}: engine alone vs annotate end to end, one process per batch size", flush=True)
                result["annotate"] = run_annotate_children(size, device, dtype, batch_sizes, args.annotate_images,
                                                           [False, True] if args.compile else [False])
            results.append(result)
    payload = {"benchmark": "localize", "environment": environment(device, dtype),
               "settings": {"batch_sizes": batch_sizes, "images": n_images, "ref_images": ref_images,
                            "rounds": args.rounds, "image_size": 512, "timesteps": [0, 99], "resolutions": [8, 16],
                            "torch_threads": torch.get_num_threads()},
               "results": results}
    path = write_json("localize", payload, args.out)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
