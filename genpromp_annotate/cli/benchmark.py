"""`benchmark`: score GenPromp's (or any method's) maps on a WSOL benchmark or on a project's human boxes.

The steps: the images (`evaluation/datasets.py`), the classifier's rankings (`evaluation/classifier.py`),
the maps (`evaluation/map_sources.py`: the engine through the per-image cache, or `--maps DIR`), τ of the
Loc metrics (given, calibrated on another split, or the preset's), the scores (`evaluation/scoring.py`) and
the report files (`evaluation/report.py`, `evaluation/grid.py`).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np
from click.core import ParameterSource

from genpromp_annotate.cli.options import (
    config_from_options,
    engine_options,
    model_options,
    pop_engine_options,
)
from genpromp_annotate.errors import ConfigError, TokenFileError
from genpromp_annotate.evaluation.datasets import LAYOUTS, BenchmarkSet
from genpromp_annotate.presets import LocalizeConfig

if TYPE_CHECKING:  # the model side loads only when maps are computed
    from genpromp_annotate.evaluation.map_sources import MapProducer

AUTO_META = "auto"
LAYOUT_PRESET = {"cub": "cub-paper", "imagenet": "imagenet-paper"}  # method §4 step 8: τ per dataset


def _given(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)


# ---- the images ------------------------------------------------------------------------------------------------
def _open_set(ctx: click.Context, opts: dict[str, Any], split: str | None) -> BenchmarkSet:
    from genpromp_annotate.evaluation.datasets import open_layout, open_project, select

    if opts["project"] is not None:
        from genpromp_annotate.cli.project import open_project_store

        benchmark = open_project(open_project_store(ctx), opts["project"], split)
    else:
        benchmark = open_layout(opts["layout"], opts["root"], split, opts["image_root"], opts["dataset_name"],
                                opts["class_names"])
    return select(benchmark, opts["classes"] or None, opts["limit"])


def _rankings(classifier_file: Path | None, benchmark: BenchmarkSet) -> dict[str, np.ndarray] | None:
    from genpromp_annotate.evaluation.classifier import read_classifier
    from genpromp_annotate.evaluation.layouts import DatasetLayoutError

    if classifier_file is None:
        return None
    rankings = read_classifier(classifier_file, benchmark.class_names)
    missing = [r.prediction_name for r in benchmark.records if r.prediction_name not in rankings]
    if missing:
        raise DatasetLayoutError(f"{classifier_file}: no prediction for {len(missing)} image(s), e.g. {missing[0]!r} "
                                 f"(keys are {benchmark.source} image names as in docs/method.md §6)")
    return rankings


# ---- the engine ------------------------------------------------------------------------------------------------
def _layout_producer(opts: dict[str, Any], config: LocalizeConfig, labels: list[str]) -> MapProducer:
    from genpromp_annotate.evaluation.map_sources import (
        MapProducer,
        folder_id,
        match_tokens,
        read_token_files,
    )

    if opts["model_source"] is None:
        raise ConfigError("--model is needed to compute maps (or evaluate saved maps with --maps DIR)")
    tokens = match_tokens(read_token_files(opts["tokens_path"]), labels) if opts["tokens_path"] else {}
    if opts["tokens_path"] is not None and not tokens:
        raise TokenFileError(f"{opts['tokens_path']}: no token is named after a class of this dataset (expected "
                             f"e.g. `<{labels[0].lower()}>`)")
    cub = opts["layout"] == "cub" or config.preset == "cub-paper"  # method §2: `bird` for every CUB class
    word = opts["meta_word"] if opts["meta_word"] is not None else ("bird" if cub else AUTO_META)
    unet_dir = opts["unet_dir"]
    return MapProducer(str(opts["model_source"]), config, tokens, {} if word == AUTO_META else {"*": word},
                       unet_dir=unet_dir, unet_id=folder_id(unet_dir) if unet_dir is not None else None,
                       model_config=opts["model_config"], device=opts["device"], dtype=opts["dtype"])


def _project_producer(ctx: click.Context, opts: dict[str, Any], engine: dict[str, Any]) -> MapProducer:
    from genpromp_annotate.evaluation.map_sources import MapProducer

    """The project's base model, selected UNet, learned tokens and settings (engine options override them)."""
    from genpromp_annotate.cli.project import open_project_store
    from genpromp_annotate.evaluation.map_sources import ConceptToken, folder_id
    from genpromp_annotate.store import queries as q
    from genpromp_annotate.workflow import config_for_project

    for name, flag in (("model_source", "--model"), ("tokens_path", "--tokens"), ("unet_dir", "--unet")):
        if opts[name] is not None:
            raise ConfigError(f"{flag}: --project uses the project's own model, tokens and UNet; drop {flag}")
    with open_project_store(ctx).read() as session:
        project = q.get_project(session, opts["project"])
        base = None if _given(ctx, "preset_name") else config_for_project(project)
        tokens = {c.name: ConceptToken(c.concept_token, embedding.float())
                  for c in q.list_categories(session, project) if (embedding := q.category_embedding(c)) is not None}
        model, unet_path, unet_digest = project.base_model, project.unet_path, project.unet_digest
    config = config_from_options(**engine, base=base)
    unet_dir = Path(unet_path) if unet_path else None
    meta = {} if opts["meta_word"] in (None, AUTO_META) else {"*": opts["meta_word"]}
    return MapProducer(model, config, tokens, meta, unet_dir=unet_dir,
                       unet_id=unet_digest or (folder_id(unet_dir) if unet_dir is not None else None),
                       device=opts["device"], dtype=opts["dtype"])


def _fill_cache(producer: MapProducer, cache: Any, sets: list[BenchmarkSet], resume: bool, overwrite: bool,
                batch_size: int) -> tuple[list[tuple[str, str]], int, float]:
    """Localize what the cache lacks for every set. Returns (failed images, maps computed, seconds)."""
    from tqdm import tqdm

    pairs = list({r.image_id: (r, label) for s in sets for r, label in zip(s.records, s.labels)}.values())
    cached = {r.image_id for r, label in pairs if cache.has(r.image_id, label)}
    if cached and not (resume or overwrite):
        raise ConfigError(f"{cache.folder}: {len(cached)} of the {len(pairs)} maps are already cached for maps "
                          f"version {cache.version}; pass --resume to reuse them or --overwrite to recompute them")
    todo = [(r, label) for r, label in pairs if overwrite or r.image_id not in cached]
    click.echo(f"{len(pairs)} image(s), {len(todo)} to localize, {len(pairs) - len(todo)} cached; maps version "
               f"{cache.version} in {cache.folder}", err=True)
    if not todo:
        return [], 0, 0.0
    started = time.perf_counter()
    with tqdm(total=len(todo), unit="image", desc="localizing", file=sys.stderr, dynamic_ncols=True) as bar:
        failed = producer.fill_cache(cache, todo, batch_size, progress=bar.update)
    return failed, len(todo) - len(failed), time.perf_counter() - started


# ---- τ -----------------------------------------------------------------------------------------------------------
def _calibrate(benchmark: BenchmarkSet, maps: Any, config: LocalizeConfig, skip: set[str],
               interval: float, workers: int) -> tuple[float, dict[str, Any]]:
    """τ maximising GT-known Loc on a held-out split (ties: the one closest to the preset's τ)."""
    from genpromp_annotate.evaluation.scoring import score_split

    scores = score_split(benchmark.records, benchmark.labels, maps, config.threshold, size=config.image_size,
                         interval=interval, maxboxacc=False, skip=skip, workers=workers)
    if scores.sweep is None:
        raise ConfigError(f"--calibrate-on {benchmark.split}: no map of that split could be read")
    best = scores.sweep.best("gt_known_loc", prefer=config.threshold)
    assert best is not None
    tau, accuracy = best
    return tau, {"split": benchmark.split, "n_images": scores.loc.count, "metric": "gt_known_loc",
                 "value": accuracy, "threshold": tau}


# ---- report files ------------------------------------------------------------------------------------------------
def _write_grid(path: Path, scores: Any, maps: Any, size: int, count: int) -> None:
    from genpromp_annotate.engine.boxes import Box, scale_box
    from genpromp_annotate.evaluation.grid import GridItem, render_grid

    ranked = sorted(scores.images, key=lambda item: (-item.outcome.iou, item.record.image_id))
    best = ranked[: min(count, (len(ranked) + 1) // 2)]  # a small set is split between the two rows
    worst = ranked[len(best):][::-1][:count]

    def grid_item(item: Any) -> GridItem:
        x1, y1, x2, y2 = item.box
        box = scale_box(Box(x1, y1, x2, y2, 0.0), (size, size), (item.width, item.height))
        return GridItem(image_path=item.record.path if item.record.uri is None else None,
                        map=maps.load(item.record).frame, gt_boxes=np.asarray(item.record.gt_boxes),
                        pred_box=np.array([box.x1, box.y1, box.x2, box.y2]), image_size=(item.width, item.height),
                        caption=f"IoU {item.outcome.iou:.2f} · {item.label}")

    render_grid([grid_item(i) for i in best], [grid_item(i) for i in worst], path)


def _write_report_files(report: dict[str, Any], scores: Any, maps: Any, size: int, opts: dict[str, Any]) -> None:
    """JSON (--out), Markdown and grid (--markdown / --grid, by default beside --out)."""
    from genpromp_annotate.atomic_files import write_text_atomic
    from genpromp_annotate.evaluation.report import report_markdown, write_report_json

    out_file, markdown_file, grid_file = opts["out_file"], opts["markdown_file"], opts["grid_file"]
    if out_file is not None:
        markdown_file = markdown_file or out_file.with_suffix(".md")
        grid_file = grid_file or out_file.with_suffix(".png")
    if not scores.images:
        grid_file = None  # nothing to show
    if grid_file is not None:
        _write_grid(grid_file, scores, maps, size, opts["grid_size"])
    if out_file is not None:
        write_report_json(report, out_file)
    if markdown_file is not None:
        grid_link = None
        if grid_file is not None:
            grid_link = grid_file.name if grid_file.parent == markdown_file.parent else str(grid_file)
        write_text_atomic(markdown_file, report_markdown(report, grid_link))


# ---- the command -----------------------------------------------------------------------------------------------
@click.command("benchmark")
@click.option("--layout", type=click.Choice(LAYOUTS), default=None,
              help="cub: a CUB_200_2011 folder; imagenet: a folder with LOC_synset_mapping.txt and val_folder_new.txt "
                   "(images under <root>/val); wsol: a wsolevaluation folder (metadata/<DATASET>/<split>/…, images "
                   "under dataset/<DATASET>) or one metadata split folder.")
@click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="The dataset folder of --layout.")
@click.option("--project", default=None, help="Instead of --layout: a store project's images with human-verified "
                                              "boxes, localized with the project's model, tokens and settings.")
@click.option("--dataset-name", default=None, help="wsol: the dataset under metadata/ (CUB, ILSVRC, …; default: the only one).")
@click.option("--image-root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Where the image paths of the lists start (imagenet, wsol). Default: see --layout.")
@click.option("--split", default=None,
              help="cub: test (default), train or all; wsol: test (default), val, train; project: the images' split "
                   "(default all).")
@click.option("--classes", multiple=True, help="Only these classes (repeat; a class id, a name, or an image folder "
                                               "name such as a wnid).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="At most N images, spread evenly over the classes (the first of every class, then the second, …).")
@click.option("--class-names", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Class names, one per line in class-id order (the wsol layout has none; `wnid names` lines work).")
@click.option("--model", "model_source", default=None,
              help="Stable Diffusion: diffusers folder, .safetensors/.ckpt file, or hub id.")
@click.option("--model-config", default=None, help="For a single-file --model offline: a diffusers folder describing it.")
@click.option("--unet", "unet_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="A finetuned UNet (diffusers folder) replacing the model's (stage 2; the paper's ImageNet setting).")
@click.option("--tokens", "tokens_path", type=click.Path(exists=True, path_type=Path), default=None,
              help="Learned concept tokens: a textual-inversion file or a folder of them; each token is matched to "
                   "the class it is named after (`<class-name>`). Classes without one use f_r = f_d.")
@click.option("--meta-word", default=None,
              help=f"Force this meta word (f_d) for every class; default `bird` for --layout cub or --preset cub-paper "
                   f"(docs/method.md §2), the meta-token rule otherwise; `{AUTO_META}` = the rule.")
@click.option("--maps", "maps_folder", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Evaluate saved maps instead of running a model: DIR/<image_id>.npy per image (the id keeps its "
                   "extension: a/b.jpg → a/b.jpg.npy), any size, covering the whole image — e.g. another method's CAMs.")
@click.option("--classifier", "classifier_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help='Classifier predictions for Top-1/Top-5 Loc: JSON {image_name: {"pred_scores": '
                                 '[C floats]}}, or CSV `image,top1,…,top5` (class ids or names). Without it: GT-known only.')
@click.option("--calibrate-on", "calibrate_split", default=None,
              help="Choose τ of the Loc metrics on this held-out split (best GT-known Loc), e.g. train (cub) or val "
                   "(wsol). Default: --threshold, else the preset's τ. The test split never tunes τ.")
@click.option("--maps-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("benchmark-maps"),
              show_default=True, help="Map cache: <maps-dir>/<maps version>/<image_id>.npz (float16, compressed).")
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
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the report as JSON; the Markdown (.md) and the image grid (.png) go beside it unless "
                   "--markdown / --grid say otherwise.")
@click.option("--markdown", "markdown_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the report as Markdown.")
@click.option("--grid", "grid_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a PNG of the best and worst images: map overlay, GT boxes green, predicted box red.")
@click.option("--grid-size", type=click.IntRange(min=1, max=32), default=8, show_default=True,
              help="Images per row of the grid (best row, worst row).")
@model_options
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
    from genpromp_annotate.evaluation.map_cache import MapCache
    from genpromp_annotate.evaluation.map_sources import CachedMaps, FolderMaps
    from genpromp_annotate.evaluation.report import build_report, report_table
    from genpromp_annotate.evaluation.scoring import score_split

    engine = pop_engine_options(opts)
    layout, project = opts["layout"], opts["project"]
    if (layout is None) == (project is None):
        raise ConfigError("give either --layout with --root (a benchmark) or --project (a store project)")
    if layout is not None and opts["root"] is None:
        raise ConfigError(f"--layout {layout} needs --root, the dataset folder")
    if opts["resume"] and opts["overwrite"]:
        raise ConfigError("--resume reuses cached maps and --overwrite recomputes them: pick one")
    if opts["calibrate_split"] is not None and _given(ctx, "threshold"):
        raise ConfigError("--threshold fixes τ and --calibrate-on chooses it: pick one")
    if layout in LAYOUT_PRESET and not _given(ctx, "preset_name"):
        engine["preset_name"] = LAYOUT_PRESET[layout]

    # 1. the images, their labels and (optionally) the classifier's rankings
    benchmark = _open_set(ctx, opts, opts["split"])
    calibration = _open_set(ctx, opts, opts["calibrate_split"]) if opts["calibrate_split"] is not None else None
    if calibration is not None:
        shared = {r.image_id for r in calibration.records} & {r.image_id for r in benchmark.records}
        if shared:
            raise ConfigError(f"--calibrate-on {calibration.split}: {len(shared)} of its images are also evaluated "
                              f"(split {benchmark.split or 'all'}); calibrate on a held-out split (--split picks "
                              "the evaluated one)")
    rankings = _rankings(opts["classifier_file"], benchmark)

    # 2. the maps: saved ones, or the engine's through the cache
    failed: list[tuple[str, str]] = []
    computed, seconds, producer = 0, 0.0, None
    if opts["maps_folder"] is not None:
        config = config_from_options(**engine)
        maps: Any = FolderMaps(opts["maps_folder"], config.image_size)
        version = f"maps folder {opts['maps_folder']}"
    else:
        if project is not None:
            producer = _project_producer(ctx, opts, engine)
        else:
            labels = sorted(set(benchmark.labels) | set(calibration.labels if calibration else []))
            producer = _layout_producer(opts, config_from_options(**engine), labels)
        config = producer.config
        cache = MapCache(opts["maps_dir"], producer.version)
        sets = [benchmark] + ([calibration] if calibration is not None else [])
        failed, computed, seconds = _fill_cache(producer, cache, sets, opts["resume"], opts["overwrite"],
                                                opts["batch_size"])
        maps, version = CachedMaps(cache), producer.version
    skip = {image_id for image_id, _ in failed}

    # 3. τ of the Loc metrics
    workers = opts["workers"] or min(8, os.cpu_count() or 1)
    thresholds: dict[str, Any] = {"loc": config.threshold, "calibration": None}
    if calibration is not None:
        tau, thresholds["calibration"] = _calibrate(calibration, maps, config, skip, opts["interval"], workers)
        thresholds.update(loc=tau, loc_source=f"calibrated on split {calibration.split} (best GT-known Loc)")
    elif _given(ctx, "threshold"):
        thresholds["loc_source"] = "--threshold"
    else:
        thresholds["loc_source"] = f"preset {config.preset}" if project is None else "project settings"

    # 4. score the split
    from tqdm import tqdm

    with tqdm(total=len(benchmark.records), unit="image", desc="evaluating", file=sys.stderr,
              dynamic_ncols=True) as bar:
        scores = score_split(benchmark.records, benchmark.labels, maps, thresholds["loc"], rankings,
                             size=config.image_size, interval=opts["interval"], skip=skip, progress=bar.update,
                             workers=workers)
    if scores.sweep is not None:
        thresholds["best_on_this_split"] = scores.sweep.as_dict()
    evaluated_ids = {r.image_id for r in benchmark.records}  # unreadable calibration images are not reported
    failed = [f for f in failed if f[0] in evaluated_ids] + scores.failed

    # 5. the report
    dataset = benchmark.source if benchmark.dataset_name is None else f"{benchmark.source}:{benchmark.dataset_name}"
    meta = {"dataset": dataset, "root": str(opts["root"]) if opts["root"] else None, "split": benchmark.split,
            "classes": list(opts["classes"]) or None, "limit": opts["limit"],
            "model": producer.model_source if producer else None,
            "unet": str(producer.unet_dir) if producer and producer.unet_dir else None,
            "tokens": str(opts["tokens_path"]) if opts["tokens_path"] else None,
            "tokens_matched": len(producer.tokens) if producer else None,
            "meta_word": producer.meta_words.get("*") if producer else None,
            "maps": str(opts["maps_folder"]) if opts["maps_folder"] else None, "maps_version": version,
            "classifier": str(opts["classifier_file"]) if opts["classifier_file"] else None,
            "config": config.as_dict(), "interval": opts["interval"]}
    report = build_report(
        meta, scores.loc, scores.maxboxacc_v1, scores.maxboxacc_v2, thresholds, failed,
        images={"total": len(benchmark.records), "evaluated": scores.loc.count, "computed": computed,
                "failed": len(failed)},
        timing={"localize_seconds": round(seconds, 3), "images_per_s": round(computed / seconds, 3) if seconds else None},
        per_class=scores.per_class(), paper=layout if opts["maps_folder"] is None else None,
    )
    if opts["export_wsol_maps"] is not None and producer is not None:
        count = cache.export_wsol([item.record.image_id for item in scores.images], opts["export_wsol_maps"])
        click.echo(f"{count} map(s) written as {opts['export_wsol_maps']}/<image_id>.npy", err=True)
    _write_report_files(report, scores, maps, config.image_size, opts)
    click.echo(report_table(report))
    if seconds > 0:
        click.echo(f"{computed} map(s) computed in {seconds:.1f}s ({computed / seconds:.2f} images/s)", err=True)
    for image_id, error in failed[:20]:
        click.echo(f"  failed: {error}", err=True)


def register(group: click.Group) -> None:
    group.add_command(benchmark_command)
