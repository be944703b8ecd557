"""Whole-process localization: `genpromp-annotate localize` on 6 tiny-model images against a
reference-style process on the same images, each a fresh process (imports, model loading, maps, boxes).

    python bench/process_localize.py                 # 6 images, 3 rounds (median), round-robin

The authors' code cannot run here, so the baseline is a reference-style process of ours that does what
their inference script does: import torch, diffusers and transformers up front, load the whole pipeline
with `StableDiffusionPipeline.from_pretrained`, run the text encoder for every image, and send each image
through the full UNet once per timestep with every cross-attention probability tensor stored (the
`ReferenceStylePath` of bench/localize.py). `localize` runs with the CPU's default dtype, with
`--dtype float32`, and with `GENPROMP_RUNTIME=diffusers` (diffusers and transformers modules instead of
the native ones), so the dtype's and the runtime's shares of the gain show.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import environment, write_json
from startup import cli_prefix


def reference_process(model_dir: str, images: list[str]) -> None:
    """The baseline's process body: eager imports, whole-pipeline load, reference-style maps, boxes."""
    import diffusers  # noqa: F401 - the authors' script imports everything up front
    import transformers  # noqa: F401
    from diffusers import StableDiffusionPipeline
    from localize import ReferenceStylePath
    from PIL import Image

    from genpromp_annotate.engine.boxes import boxes_from_map, scale_box
    from genpromp_annotate.engine.loading import StableDiffusion
    from genpromp_annotate.engine.localizer import Localizer

    pipe = StableDiffusionPipeline.from_pretrained(model_dir, safety_checker=None, requires_safety_checker=False)
    model = StableDiffusion(pipe.tokenizer, pipe.text_encoder, pipe.vae, pipe.unet, pipe.scheduler,
                            torch.device("cpu"), torch.float32, source=model_dir)
    loc = Localizer(model)
    reference = ReferenceStylePath(loc)
    out = []
    for path in images:
        image = Image.open(path).convert("RGB")
        map_s = reference.compute_maps([image], ["cat"])[0].float().numpy()  # (S, S) in [0, 1]
        boxes = boxes_from_map(map_s, loc.config.threshold)
        size = loc.config.image_size
        out.append({"image": path, "boxes": [scale_box(b, (size, size), image.size).as_dict() for b in boxes]})
    print(json.dumps(out))


# Where a `localize`-like process spends its time, timed inside one fresh process, phase by phase.
PHASES_SCRIPT = """
import json, sys, time
marks = [("start", time.perf_counter())]
import torch
marks.append(("import torch", time.perf_counter()))
from PIL import Image
from genpromp_annotate.engine.loading import load_stable_diffusion
from genpromp_annotate.engine.localizer import Localizer
marks.append(("import the engine", time.perf_counter()))
model = load_stable_diffusion(sys.argv[1], device="cpu")
marks.append(("load the model (%s, %s)" % (model.runtime, str(model.dtype).split(".")[-1]), time.perf_counter()))
loc = Localizer(model)
marks.append(("probe the attention layers", time.perf_counter()))
loc.prompt_for("cat")
marks.append(("text encoder, 7 templates", time.perf_counter()))
images = [Image.open(path).convert("RGB") for path in sys.argv[2:]]
marks.append(("decode the images", time.perf_counter()))
loc.localize(images, ["cat"] * len(images), batch_size=len(images))
marks.append(("maps and boxes", time.perf_counter()))
print(json.dumps({name: round(t - marks[i][1], 3) for i, (name, t) in enumerate(marks[1:])}))
"""


def wall_seconds(command: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, **(env or {})})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reference-child", nargs="+", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.reference_child:
        reference_process(args.reference_child[0], args.reference_child[1:])
        return
    from localize import make_images

    from genpromp_annotate.engine.tiny_model import make_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(make_tiny_model(Path(tmp) / "tiny", seed=0))
        paths = []
        for i, image in enumerate(make_images(args.images)):
            paths.append(str(Path(tmp) / f"{i}.jpg"))
            image.save(paths[-1], quality=92)
        cli = [*cli_prefix(), "localize", "--model", model_dir, "--label", "cat", "--batch-size", str(args.images)]
        commands: dict[str, tuple[list[str], dict[str, str]]] = {
            "genpromp-annotate localize (CPU default dtype)": ([*cli, *paths], {}),
            "genpromp-annotate localize --dtype float32": ([*cli, "--dtype", "float32", *paths], {}),
            "genpromp-annotate localize, GENPROMP_RUNTIME=diffusers": ([*cli, *paths], {"GENPROMP_RUNTIME": "diffusers"}),
            "reference-style process": ([sys.executable, __file__, "--reference-child", model_dir, *paths], {}),
        }
        for command, env in commands.values():  # warm-up round: files in the page cache for every command
            wall_seconds(command, env)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, (command, env) in commands.items():
                times[name].append(wall_seconds(command, env))
        phases = {}
        for runtime in ("auto", "diffusers"):
            done = subprocess.run([sys.executable, "-c", PHASES_SCRIPT, model_dir, *paths], check=True,
                                  capture_output=True, text=True, env={**os.environ, "GENPROMP_RUNTIME": runtime})
            phases[f"GENPROMP_RUNTIME={runtime}"] = json.loads(done.stdout.strip().splitlines()[-1])
    baseline = statistics.median(times["reference-style process"])
    results = {}
    for name, values in times.items():
        median = statistics.median(values)
        results[name] = {"median_s": round(median, 3), "runs_s": [round(v, 3) for v in values],
                         "speedup_vs_reference": round(baseline / median, 2)}
        print(f"  {name:<50} {median:7.2f} s   {baseline / median:5.2f}× the reference-style process")
    for runtime, seconds in phases.items():
        print(f"  phases, {runtime}: " + ", ".join(f"{name} {value:.2f} s" for name, value in seconds.items()))
    payload = {"benchmark": "process-localize", "environment": environment(torch.device("cpu"), torch.float32),
               "images": args.images, "rounds": args.rounds, "model": "tiny (make-tiny-model, seed 0), 512 px",
               "results": results, "phases_s": phases}
    print(f"wrote {write_json('process-localize', payload, args.out)}")


if __name__ == "__main__":
    main()
