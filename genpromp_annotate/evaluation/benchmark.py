"""A whole benchmark run: `run_benchmark(BenchmarkRequest(...))` → the report (and the files it asks for).

The steps, each in its own module: the images (`datasets.py`), the classifier's rankings (`classifier.py`),
the maps (`map_sources.py`: the engine through the map cache, or a folder of saved maps), τ of the
Loc metrics (given, calibrated on another split, or the preset's), the scores (`scoring.py`) and the
report files (`report.py`, `grid.py`). The `benchmark` command only turns its options into a request.

Nothing heavy is imported here at module level: the model side (torch, diffusers) loads only when maps
are computed, the store only for a project.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from genpromp_annotate.errors import ConfigError, TokenFileError
from genpromp_annotate.evaluation.datasets import BenchmarkSet
from genpromp_annotate.presets import LocalizeConfig, preset

if TYPE_CHECKING:
    from genpromp_annotate.evaluation.map_cache import MapCache
    from genpromp_annotate.evaluation.map_sources import MapProducer
    from genpromp_annotate.evaluation.scoring import SplitScores
    from genpromp_annotate.store.database import Store

AUTO_META = "auto"  # --meta-word auto: the meta-token rule
LAYOUT_PRESET = {"cub": "cub-paper", "imagenet": "imagenet-paper"}  # method §4 step 8: τ per dataset

# progress(stage, total) → a context manager giving `update(n)`; stages "localizing" and "evaluating"
Progress = Callable[[str, int], AbstractContextManager[Callable[[int], None]]]
Notify = Callable[[str], None]  # one line of news (counts, exported maps)


@dataclass(frozen=True)
class BenchmarkRequest:
    """What to evaluate and how: the `benchmark` command's options as plain values (None: the default).

    The images are a layout folder (`layout` + `root`) or a store project (`project`, in the store at
    `db_url`). The maps are saved ones (`maps_folder`) or the engine's, cached under `maps_dir`. The engine
    settings are `preset` with the overrides below it; τ of the Loc metrics is `threshold`, else chosen on
    the split `calibrate_on`, else the preset's (or the project's).
    """

    # the images
    layout: str | None = None  # "cub", "imagenet", "wsol" (datasets.LAYOUTS)
    root: Path | None = None
    project: str | None = None
    db_url: str | None = None  # the store of `project` (None: the default store)
    dataset_name: str | None = None
    image_root: Path | None = None
    split: str | None = None
    classes: tuple[str, ...] = ()
    limit: int | None = None
    class_names: Path | None = None
    classifier: Path | None = None
    # the maps
    maps_folder: Path | None = None
    model: str | None = None
    model_config: str | None = None
    unet: Path | None = None
    tokens: Path | None = None
    meta_word: str | None = None  # None: `bird` for CUB, the meta-token rule otherwise; AUTO_META: the rule
    device: str | None = None
    dtype: str | None = None
    compile_model: bool = False  # --compile
    channels_last: bool = False  # --channels-last
    batch_size: int = 8
    maps_dir: Path = Path("benchmark-maps")
    resume: bool = False
    overwrite: bool = False
    export_wsol_maps: Path | None = None
    # engine settings (None: the preset's value)
    preset: str | None = None  # None: cub-paper / imagenet-paper for those layouts, a project's own, else paper
    threshold: float | None = None
    omega: float | None = None
    timesteps: tuple[int, ...] | None = None
    resolutions: tuple[int, ...] | None = None
    seed: int | None = None
    add_noise: bool | None = None
    latent: str | None = None
    multi_box: bool | None = None
    min_box_area: float | None = None
    propagation_side: int | None = None
    propagation_product: bool | None = None
    flip_tta: bool | None = None
    calibrate_on: str | None = None
    # scoring
    workers: int = 0  # 0: one process per CPU core, up to 8
    interval: float = 0.01
    # report files (markdown and grid default to beside `out`)
    out: Path | None = None
    markdown: Path | None = None
    grid: Path | None = None
    grid_size: int = 8

    def config(self, base: LocalizeConfig | None = None) -> LocalizeConfig:
        """`base` with the request's overrides; default base: `preset`, else the layout's preset, else paper."""
        config = base or preset(self.preset or LAYOUT_PRESET.get(self.layout or "", "paper"))
        return config.replace(threshold=self.threshold, omega=self.omega, timesteps=self.timesteps,
                              resolutions=self.resolutions, seed=self.seed, latent=self.latent,
                              add_noise=self.add_noise, multi_box=self.multi_box, min_box_area=self.min_box_area,
                              propagation_side=self.propagation_side, propagation_product=self.propagation_product,
                              flip_tta=self.flip_tta)


@dataclass(frozen=True)
class BenchmarkResult:
    """A finished run: the report dict (`report.py`), what it was computed from, and how long maps took."""

    report: dict[str, Any]
    scores: SplitScores
    computed: int  # maps computed by the engine in this run
    seconds: float  # spent computing them
    failed: list[tuple[str, str]] = field(default_factory=list)  # (image id, error) of the evaluated split
    exported: int | None = None  # maps written under `export_wsol_maps`


@contextmanager
def _no_progress(stage: str, total: int) -> Iterator[Callable[[int], None]]:
    yield lambda n: None


@contextmanager
def tqdm_progress(stage: str, total: int) -> Iterator[Callable[[int], None]]:
    """A `progress` for run_benchmark: one tqdm bar per stage on stderr."""
    import sys

    from tqdm import tqdm

    with tqdm(total=total, unit="image", desc=stage, file=sys.stderr, dynamic_ncols=True) as bar:
        yield bar.update


def _ignore(text: str) -> None:
    pass


class _Run:
    """The state of one run_benchmark call (the request, the lazily opened store, the callbacks)."""

    def __init__(self, request: BenchmarkRequest, progress: Progress, notify: Notify) -> None:
        self.request, self.progress, self.notify = request, progress, notify
        self._store: Store | None = None

    def close(self) -> None:
        if self._store is not None:
            self._store.dispose()

    def store(self) -> Store:
        if self._store is None:
            from genpromp_annotate.store.database import open_store

            self._store = open_store(self.request.db_url)
        return self._store

    # ---- the images ----------------------------------------------------------------------------------------
    def open_set(self, split: str | None) -> BenchmarkSet:
        from genpromp_annotate.evaluation.datasets import open_layout, open_project, select

        r = self.request
        if r.project is not None:
            benchmark = open_project(self.store(), r.project, split)
        else:
            assert r.layout is not None and r.root is not None
            benchmark = open_layout(r.layout, r.root, split, r.image_root, r.dataset_name, r.class_names)
        return select(benchmark, r.classes or None, r.limit)

    def rankings(self, benchmark: BenchmarkSet) -> dict[str, np.ndarray] | None:
        from genpromp_annotate.evaluation.classifier import read_classifier
        from genpromp_annotate.evaluation.layouts import DatasetLayoutError

        classifier_file = self.request.classifier
        if classifier_file is None:
            return None
        rankings = read_classifier(classifier_file, benchmark.class_names)
        missing = [r.prediction_name for r in benchmark.records if r.prediction_name not in rankings]
        if missing:
            raise DatasetLayoutError(f"{classifier_file}: no prediction for {len(missing)} image(s), e.g. "
                                     f"{missing[0]!r} (keys are {benchmark.source} image names as in "
                                     "docs/method.md §6)")
        return rankings

    # ---- the engine ----------------------------------------------------------------------------------------
    def layout_producer(self, labels: list[str]) -> MapProducer:
        from genpromp_annotate.evaluation.map_sources import (
            MapProducer,
            folder_id,
            match_tokens,
            read_token_files,
        )

        r = self.request
        config = r.config()
        if r.model is None:
            raise ConfigError("--model is needed to compute maps (or evaluate saved maps with --maps DIR)")
        tokens = match_tokens(read_token_files(r.tokens), labels) if r.tokens else {}
        if r.tokens is not None and not tokens:
            raise TokenFileError(f"{r.tokens}: no token is named after a class of this dataset (expected "
                                 f"e.g. `<{labels[0].lower()}>`)")
        cub = r.layout == "cub" or config.preset == "cub-paper"  # method §2: `bird` for every CUB class
        word = r.meta_word if r.meta_word is not None else ("bird" if cub else AUTO_META)
        return MapProducer(str(r.model), config, tokens, {} if word == AUTO_META else {"*": word},
                           unet_dir=r.unet, unet_id=folder_id(r.unet) if r.unet is not None else None,
                           model_config=r.model_config, device=r.device, dtype=r.dtype,
                           compile_model=r.compile_model, channels_last=r.channels_last)

    def project_producer(self) -> MapProducer:
        """The project's base model, selected UNet, learned tokens and settings (the request overrides them)."""
        from genpromp_annotate.evaluation.map_sources import ConceptToken, MapProducer, folder_id
        from genpromp_annotate.store import queries as q
        from genpromp_annotate.store.settings import config_for_project

        r = self.request
        assert r.project is not None
        for value, flag in ((r.model, "--model"), (r.tokens, "--tokens"), (r.unet, "--unet")):
            if value is not None:
                raise ConfigError(f"{flag}: --project uses the project's own model, tokens and UNet; drop {flag}")
        with self.store().read() as session:
            project = q.get_project(session, r.project)
            base = None if r.preset is not None else config_for_project(project)
            tokens = {c.name: ConceptToken(c.concept_token, embedding.float())
                      for c in q.list_categories(session, project)
                      if (embedding := q.category_embedding(c)) is not None}
            model, unet_path, unet_digest = project.base_model, project.unet_path, project.unet_digest
        unet_dir = Path(unet_path) if unet_path else None
        meta = {} if r.meta_word in (None, AUTO_META) else {"*": r.meta_word}
        return MapProducer(model, r.config(base), tokens, meta, unet_dir=unet_dir,
                           unet_id=unet_digest or (folder_id(unet_dir) if unet_dir is not None else None),
                           device=r.device, dtype=r.dtype, compile_model=r.compile_model,
                           channels_last=r.channels_last)

    def fill_cache(self, producer: MapProducer, cache: MapCache,
                   sets: list[BenchmarkSet]) -> tuple[list[tuple[str, str]], int, float]:
        """Localize what the cache lacks for every set. Returns (failed images, maps computed, seconds)."""
        r = self.request
        pairs = list({rec.image_id: (rec, label) for s in sets for rec, label in zip(s.records, s.labels)}.values())
        cached = {rec.image_id for rec, label in pairs if cache.has(rec.image_id, label)}
        if cached and not (r.resume or r.overwrite):
            raise ConfigError(f"{cache.folder}: {len(cached)} of the {len(pairs)} maps are already cached for maps "
                              f"version {cache.version}; pass --resume to reuse them or --overwrite to recompute "
                              "them")
        todo = [(rec, label) for rec, label in pairs if r.overwrite or rec.image_id not in cached]
        self.notify(f"{len(pairs)} image(s), {len(todo)} to localize, {len(pairs) - len(todo)} cached; maps "
                    f"version {cache.version} in {cache.folder}")
        if not todo:
            return [], 0, 0.0
        started = time.perf_counter()
        with self.progress("localizing", len(todo)) as update:
            failed = producer.fill_cache(cache, todo, r.batch_size, progress=update)
        return failed, len(todo) - len(failed), time.perf_counter() - started

    # ---- report files --------------------------------------------------------------------------------------
    def write_files(self, report: dict[str, Any], scores: SplitScores, maps: Any, size: int) -> None:
        """JSON (out), Markdown and grid (markdown / grid, by default beside out)."""
        from genpromp_annotate.atomic_files import write_text_atomic
        from genpromp_annotate.evaluation.report import report_markdown, write_report_json

        out_file, markdown_file, grid_file = self.request.out, self.request.markdown, self.request.grid
        if out_file is not None:
            markdown_file = markdown_file or out_file.with_suffix(".md")
            grid_file = grid_file or out_file.with_suffix(".png")
        if not scores.images:
            grid_file = None  # nothing to show
        if grid_file is not None:
            _write_grid(grid_file, scores, maps, size, self.request.grid_size)
        if out_file is not None:
            write_report_json(report, out_file)
        if markdown_file is not None:
            grid_link = None
            if grid_file is not None:
                grid_link = grid_file.name if grid_file.parent == markdown_file.parent else str(grid_file)
            write_text_atomic(markdown_file, report_markdown(report, grid_link))


def _check(request: BenchmarkRequest) -> None:
    layout, project = request.layout, request.project
    if (layout is None) == (project is None):
        raise ConfigError("give either --layout with --root (a benchmark) or --project (a store project)")
    if layout is not None and request.root is None:
        raise ConfigError(f"--layout {layout} needs --root, the dataset folder")
    if request.resume and request.overwrite:
        raise ConfigError("--resume reuses cached maps and --overwrite recomputes them: pick one")
    if request.calibrate_on is not None and request.threshold is not None:
        raise ConfigError("--threshold fixes τ and --calibrate-on chooses it: pick one")


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


def _write_grid(path: Path, scores: SplitScores, maps: Any, size: int, count: int) -> None:
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


def run_benchmark(request: BenchmarkRequest, progress: Progress | None = None,
                  notify: Notify | None = None) -> BenchmarkResult:
    """Evaluate the request's split and write the report files it names (see the module docstring).

    Args:
        progress: `progress(stage, total)` → a context manager giving `update(n_images)`, for the stages
            "localizing" (maps the engine computes) and "evaluating" (images scored); default: silent.
        notify: called with a line of news (how many maps are cached or to compute, maps exported).

    Raises a GenprompError (ConfigError, DatasetLayoutError, …) for a request that cannot be run.
    """
    _check(request)
    run = _Run(request, progress or _no_progress, notify or _ignore)
    try:
        return _evaluate(run)
    finally:
        run.close()


def _evaluate(run: _Run) -> BenchmarkResult:
    from genpromp_annotate.evaluation.map_cache import MapCache
    from genpromp_annotate.evaluation.map_sources import CachedMaps, FolderMaps
    from genpromp_annotate.evaluation.report import build_report
    from genpromp_annotate.evaluation.scoring import score_split

    r = run.request
    project = r.project

    # 1. the images, their labels and (optionally) the classifier's rankings
    benchmark = run.open_set(r.split)
    calibration = run.open_set(r.calibrate_on) if r.calibrate_on is not None else None
    if calibration is not None:
        shared = {rec.image_id for rec in calibration.records} & {rec.image_id for rec in benchmark.records}
        if shared:
            raise ConfigError(f"--calibrate-on {calibration.split}: {len(shared)} of its images are also evaluated "
                              f"(split {benchmark.split or 'all'}); calibrate on a held-out split (--split picks "
                              "the evaluated one)")
    rankings = run.rankings(benchmark)

    # 2. the maps: saved ones, or the engine's through the cache
    failed: list[tuple[str, str]] = []
    computed, seconds, producer, cache = 0, 0.0, None, None
    if r.maps_folder is not None:
        config = r.config()
        maps: Any = FolderMaps(r.maps_folder, config.image_size)
        version = f"maps folder {r.maps_folder}"
    else:
        if project is not None:
            producer = run.project_producer()
        else:
            producer = run.layout_producer(sorted(set(benchmark.labels) | set(calibration.labels if calibration
                                                                                 else [])))
        config = producer.config
        cache = MapCache(r.maps_dir, producer.version)
        failed, computed, seconds = run.fill_cache(producer, cache, [benchmark] + ([calibration] if calibration
                                                                                  is not None else []))
        maps, version = CachedMaps(cache), producer.version
    skip = {image_id for image_id, _ in failed}

    # 3. τ of the Loc metrics
    workers = r.workers or min(8, os.cpu_count() or 1)
    thresholds: dict[str, Any] = {"loc": config.threshold, "calibration": None}
    if calibration is not None:
        tau, thresholds["calibration"] = _calibrate(calibration, maps, config, skip, r.interval, workers)
        thresholds.update(loc=tau, loc_source=f"calibrated on split {calibration.split} (best GT-known Loc)")
    elif r.threshold is not None:
        thresholds["loc_source"] = "--threshold"
    else:
        thresholds["loc_source"] = f"preset {config.preset}" if project is None else "project settings"

    # 4. score the split
    with run.progress("evaluating", len(benchmark.records)) as update:
        scores = score_split(benchmark.records, benchmark.labels, maps, thresholds["loc"], rankings,
                             size=config.image_size, interval=r.interval, skip=skip, progress=update, workers=workers)
    if scores.sweep is not None:
        thresholds["best_on_this_split"] = scores.sweep.as_dict()
    evaluated_ids = {rec.image_id for rec in benchmark.records}  # unreadable calibration images are not reported
    failed = [f for f in failed if f[0] in evaluated_ids] + scores.failed

    # 5. the report
    dataset = benchmark.source if benchmark.dataset_name is None else f"{benchmark.source}:{benchmark.dataset_name}"
    meta = {"dataset": dataset, "root": str(r.root) if r.root else None, "split": benchmark.split,
            "classes": list(r.classes) or None, "limit": r.limit,
            "model": producer.model_source if producer else None,
            "unet": str(producer.unet_dir) if producer and producer.unet_dir else None,
            "tokens": str(r.tokens) if r.tokens else None,
            "tokens_matched": len(producer.tokens) if producer else None,
            "meta_word": producer.meta_words.get("*") if producer else None,
            "maps": str(r.maps_folder) if r.maps_folder else None, "maps_version": version,
            "classifier": str(r.classifier) if r.classifier else None,
            "config": config.as_dict(), "interval": r.interval}
    report = build_report(
        meta, scores.loc, scores.maxboxacc_v1, scores.maxboxacc_v2, thresholds, failed,
        images={"total": len(benchmark.records), "evaluated": scores.loc.count, "computed": computed,
                "failed": len(failed)},
        timing={"localize_seconds": round(seconds, 3), "images_per_s": round(computed / seconds, 3) if seconds else None},
        per_class=scores.per_class(), paper=r.layout if r.maps_folder is None else None,
    )
    exported = None
    if r.export_wsol_maps is not None and cache is not None:
        exported = cache.export_wsol([item.record.image_id for item in scores.images], r.export_wsol_maps)
        run.notify(f"{exported} map(s) written as {r.export_wsol_maps}/<image_id>.npy")
    run.write_files(report, scores, maps, config.image_size)
    return BenchmarkResult(report, scores, computed, seconds, failed, exported)
