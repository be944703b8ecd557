"""`benchmark`: score GenPromp's (or any method's) maps on a WSOL benchmark or on a project's human boxes.

The command turns its options into a `BenchmarkRequest` and prints what `run_benchmark` returns; the run
itself (images, classifier, maps, τ, scores, report files) is `genpromp_annotate/evaluation/benchmark.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from genpromp_annotate.cli.options import (
    _int_tuple,
    engine_options,
    model_options,
    pop_engine_options,
    speed_options,
)
from genpromp_annotate.evaluation.benchmark import AUTO_META, BenchmarkRequest
from genpromp_annotate.evaluation.datasets import LAYOUTS

DIR = click.Path(exists=True, file_okay=False, path_type=Path)
FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
OUT_FILE = click.Path(dir_okay=False, path_type=Path)


def _request(ctx: click.Context, opts: dict[str, Any]) -> BenchmarkRequest:
    """The options as a request: the option names are its fields; the preset and τ only where given."""
    engine = pop_engine_options(opts)
    given = {name for name in ("preset_name", "threshold")
             if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)}
    return BenchmarkRequest(
        **{**opts, "classes": tuple(opts["classes"])}, db_url=getattr(ctx.find_root().obj, "db_url", None),
        preset=engine["preset_name"] if "preset_name" in given else None,
        threshold=engine["threshold"] if "threshold" in given else None, omega=engine["omega"],
        timesteps=_int_tuple(engine["timesteps"], "timesteps"),
        resolutions=_int_tuple(engine["resolutions"], "resolutions"), seed=engine["seed"],
        add_noise=False if engine["no_noise"] else None, latent=engine["latent"],
        multi_box=True if engine["multi_box"] else None, min_box_area=engine["min_box_area"],
        propagation_side=engine["propagation_side"], propagation_product=True if engine["propagation_product"] else None,
        flip_tta=True if engine["flip_tta"] else None)


@click.command("benchmark")
@click.option("--layout", type=click.Choice(LAYOUTS), default=None,
              help="cub: a CUB_200_2011 folder; imagenet: a folder with LOC_synset_mapping.txt and val_folder_new.txt "
                   "(images under <root>/val); wsol: a wsolevaluation folder (metadata/<DATASET>/<split>/…, images "
                   "under dataset/<DATASET>) or one metadata split folder.")
@click.option("--root", type=DIR, help="The dataset folder of --layout.")
@click.option("--project", default=None, help="Instead of --layout: a store project's images with human-verified "
                                              "boxes, localized with the project's model, tokens and settings.")
@click.option("--dataset-name", default=None, help="wsol: the dataset under metadata/ (CUB, ILSVRC, …; default: the only one).")
@click.option("--image-root", type=DIR,
              help="Where the image paths of the lists start (imagenet, wsol). Default: see --layout.")
@click.option("--split", help="cub: test (default), train or all; wsol: test (default), val, train; project: "
                              "the images' split (default all).")
@click.option("--classes", multiple=True, help="Only these classes (repeat; a class id, a name, or an image folder "
                                               "name such as a wnid).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="At most N images, spread evenly over the classes (the first of every class, then the second, …).")
@click.option("--class-names", type=FILE,
              help="Class names, one per line in class-id order (the wsol layout has none; `wnid names` lines work).")
@click.option("--model", help="Stable Diffusion: diffusers folder, .safetensors/.ckpt file, or hub id. A diffusers folder opens "
              "with the native inference modules (same maps, no diffusers import); env GENPROMP_RUNTIME=diffusers "
              "opens it with diffusers.")
@click.option("--model-config", default=None, help="For a single-file --model offline: a diffusers folder describing it.")
@click.option("--unet", type=DIR,
              help="A finetuned UNet (diffusers folder) replacing the model's (stage 2; the paper's ImageNet setting).")
@click.option("--tokens", type=click.Path(exists=True, path_type=Path), default=None,
              help="Learned concept tokens: a textual-inversion file or a folder of them; each token is matched to "
                   "the class it is named after (`<class-name>`). Classes without one use f_r = f_d.")
@click.option("--meta-word", default=None,
              help=f"Force this meta word (f_d) for every class; default `bird` for --layout cub or --preset cub-paper "
                   f"(docs/method.md §2), the meta-token rule otherwise; `{AUTO_META}` = the rule.")
@click.option("--maps", "maps_folder", type=DIR,
              help="Evaluate saved maps instead of running a model: DIR/<image_id>.npy per image (the id keeps its "
                   "extension: a/b.jpg → a/b.jpg.npy), any size, covering the whole image — e.g. another method's CAMs.")
@click.option("--classifier", type=FILE,
              help='Classifier predictions for Top-1/Top-5 Loc: JSON {image_name: {"pred_scores": [C floats]}}, or '
                   'CSV `image,top1,…,top5` (class ids or names). Without it: GT-known only.')
@click.option("--calibrate-on", help="Choose τ of the Loc metrics on this held-out split (best GT-known Loc), "
                                     "e.g. train (cub) or val (wsol). Default: --threshold, else the preset's τ. "
                                     "The test split never tunes τ.")
@click.option("--maps-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("benchmark-maps"),
              show_default=True, help="Map cache: <maps-dir>/<maps version>/shards/*.npz (float16, compressed, 256 maps per shard).")
@click.option("--resume", is_flag=True, default=False,
              help="Reuse the maps already cached for this maps version (after a kill, or to re-sweep τ: then no "
                   "model is loaded).")
@click.option("--overwrite", is_flag=True, default=False, help="Recompute maps that are already cached.")
@click.option("--export-wsol-maps", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write every evaluated map as DIR/<image_id>.npy (float32), as wsolevaluation reads them.")
@click.option("--workers", type=click.IntRange(min=0), default=0,
              help="Processes scoring maps in parallel (MaxBoxAcc and the τ sweeps); 0 = one per CPU core, up to 8.")
@click.option("--interval", type=float, default=0.01, show_default=True,
              help="τ grid step of MaxBoxAcc and of the τ sweeps (or 0.001).")
@click.option("--out", type=OUT_FILE,
              help="Write the report as JSON; the Markdown (.md) and the image grid (.png) go beside it unless "
                   "--markdown / --grid say otherwise.")
@click.option("--markdown", type=OUT_FILE, help="Write the report as Markdown.")
@click.option("--grid", type=OUT_FILE,
              help="Write a PNG of the best and worst images: map overlay, GT boxes green, predicted box red.")
@click.option("--grid-size", type=click.IntRange(min=1, max=32), default=8, show_default=True,
              help="Images per row of the grid (best row, worst row).")
@model_options
@speed_options
@engine_options
@click.pass_context
def benchmark_command(ctx: click.Context, **opts: Any) -> None:
    """Score boxes and maps on a WSOL benchmark, each image localized with its ground-truth label.

    Reports GT-known Loc, Top-1/Top-5 Loc (with --classifier), the top-1 error breakdown (Cls, correct,
    M-Ins, Part, More, Wrong), MaxBoxAcc (δ=50) and MaxBoxAccV2 (δ 30/50/70 and their mean), the τ
    each metric is best at, and GT-known Loc per class: as a table, JSON (--out), Markdown and a PNG
    grid. τ of the Loc metrics is --threshold, or chosen on --calibrate-on SPLIT, or the preset's
    (cub-paper 0.23 for --layout cub, imagenet-paper 0.25 for imagenet); MaxBoxAcc sweeps τ by its
    definition. Maps are cached per maps version (model, tokens, UNet, map settings; not τ) under
    --maps-dir. Unreadable images are listed in the report and skipped.

    \b
    Examples — the paper's runs (weights and trained tokens present locally):
      genpromp-annotate benchmark --preset cub-paper --layout cub --root CUB_200_2011 --model sd-v1-4 \\
          --tokens cub-tokens/ --classifier cub_efficientnet_b7.json --out cub.json
      genpromp-annotate benchmark --preset imagenet-paper --layout imagenet --root ILSVRC --model sd-v1-4 \\
          --unet imagenet-unet/ --tokens imagenet-tokens/ --classifier imagenet_efficientnet_b7.json --out in.json
    \b
    Examples — other uses:
      genpromp-annotate benchmark --layout cub --root CUB_200_2011 --model sd-v1-4 --tokens cub-tokens/ \\
          --resume --threshold 0.3 --out cub-tau30.json    # re-score from the cache, no model loaded
      genpromp-annotate benchmark --layout wsol --root wsolevaluation --dataset-name CUB --split test \\
          --maps cams/ --out cam.json                       # another method's maps
      genpromp-annotate benchmark --project birds --limit 500 --out birds.json   # a project's human boxes
    """
    from genpromp_annotate.evaluation.benchmark import run_benchmark, tqdm_progress
    from genpromp_annotate.evaluation.report import report_table

    result = run_benchmark(_request(ctx, opts), progress=tqdm_progress, notify=lambda line: click.echo(line, err=True))
    click.echo(report_table(result.report))
    if result.seconds > 0:
        click.echo(f"{result.computed} map(s) computed in {result.seconds:.1f}s "
                   f"({result.computed / result.seconds:.2f} images/s)", err=True)
    for _, error in result.failed[:20]:
        click.echo(f"  failed: {error}", err=True)


def register(group: click.Group) -> None:
    group.add_command(benchmark_command)
