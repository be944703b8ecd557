"""`benchmark`: GenPromp on a WSOL benchmark (CUB, ImageNet val, wsolevaluation metadata), GT-known label.

Maps go to a per-image cache (`evaluation/map_cache.py`) as they are computed; the metrics are then
computed from the cached maps, so `--resume` continues after a kill and a re-sweep of τ loads no model.
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np

from genpromp_annotate.cli.options import (
    config_from_options,
    engine_options,
    model_options,
    pop_engine_options,
)
from genpromp_annotate.errors import ConfigError, GenprompError, TokenFileError

if TYPE_CHECKING:
    import torch

LAYOUTS = ("cub", "imagenet", "wsol")
AUTO_META = "auto"


@dataclass(frozen=True)
class _Token:
    token: str
    vector: torch.Tensor  # (D,)
    digest: str


# ---- dataset ---------------------------------------------------------------------------------------------------
def _read_records(layout: str, root: Path, image_root: Path | None, split: str) -> list:
    from genpromp_annotate.evaluation.layouts import read_cub, read_imagenet_val, read_wsolevaluation

    if layout == "cub":
        if image_root is not None:
            raise ConfigError("--image-root: CUB images are always under <root>/images; drop the option")
        return read_cub(root, split)
    if split != "test":
        raise ConfigError(f"--split {split}: only the CUB layout has splits; the {layout} lists are one split")
    if layout == "imagenet":
        images = image_root or (root / "val" if (root / "val").is_dir() else root)
        return read_imagenet_val(root / "LOC_synset_mapping.txt", root / "val_folder_new.txt", images)
    return read_wsolevaluation(root, image_root)


def _read_class_names(path: Path) -> list[str]:
    """One class name per line (line order = label id); a `wnid names` line keeps the names."""
    names = []
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        line = line.strip()
        if not line:
            continue
        first, _, rest = line.partition(" ")
        names.append(rest.strip() if rest and first[:1] == "n" and first[1:].isdigit() else line)
    return names


def _label_names(records: list, class_names: Path | None) -> list[str]:
    """The label string the engine gets for each record (CUB: classes.txt, ImageNet: the synset names)."""
    if class_names is not None:
        names = _read_class_names(class_names)
        bad = [r for r in records if not 0 <= r.label < len(names)]
        if bad:
            raise ConfigError(f"--class-names {class_names}: {len(names)} names, but image {bad[0].image_id!r} has "
                              f"label {bad[0].label}")
        return [names[r.label] for r in records]
    return [r.label_name if r.label_name else f"class {r.label}" for r in records]


# ---- tokens ----------------------------------------------------------------------------------------------------
def _read_tokens(path: Path) -> dict[str, torch.Tensor]:
    """Every learned token of a textual-inversion file, or of every such file under a folder."""
    from genpromp_annotate.engine.tokens import read_learned_embeds

    if path.is_file():
        return dict(read_learned_embeds(path))
    files = sorted(p for ext in ("*.safetensors", "*.bin", "*.pt") for p in path.rglob(ext))
    if not files:
        raise TokenFileError(f"{path}: no learned-token file (*.safetensors, *.bin, *.pt) in this folder")
    tokens: dict[str, torch.Tensor] = {}
    for file in files:
        for token, vector in read_learned_embeds(file).items():
            if token in tokens:
                raise TokenFileError(f"{file}: token {token!r} is also in another file under {path}")
            tokens[token] = vector
    return tokens


def _match_tokens(tokens: dict[str, torch.Tensor], labels: list[str]) -> dict[str, _Token]:
    """label → its learned token: the token named `concept_token_name(label)` or after the label itself."""
    from genpromp_annotate.engine.tokens import concept_token_name

    by_key = {t.strip("<>").lower(): t for t in tokens}
    matched: dict[str, _Token] = {}
    for label in labels:
        for key in (concept_token_name(label).strip("<>"), label.lower(), label.lower().replace(" ", "-")):
            if key in by_key:
                token = by_key[key]
                vector = tokens[token]
                digest = hashlib.sha256(vector.detach().float().cpu().numpy().tobytes()).hexdigest()[:12]
                matched[label] = _Token(token, vector, digest)
                break
    return matched


def _tokens_digest(matched: dict[str, _Token]) -> str:
    """As Localizer.tokens_digest: the sorted (label, embedding digest) pairs."""
    items = sorted((label, t.digest) for label, t in matched.items())
    return hashlib.sha256(repr(items).encode()).hexdigest()[:12] if items else "none"


def _unet_id(path: Path) -> str:
    """A cheap identity of a finetuned UNet folder: its path and its files' sizes and mtimes."""
    stats = sorted((p.relative_to(path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                   for p in path.rglob("*") if p.is_file())
    return hashlib.sha256(repr((str(path.resolve()), stats)).encode()).hexdigest()[:12]


# ---- the command -----------------------------------------------------------------------------------------------
@click.command("benchmark")
@click.option("--layout", type=click.Choice(LAYOUTS), required=True,
              help="cub: CUB_200_2011 folder; imagenet: folder with LOC_synset_mapping.txt and val_folder_new.txt "
                   "(images under <root>/val or --image-root); wsol: a wsolevaluation metadata folder.")
@click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="The dataset (or metadata) folder of the layout.")
@click.option("--image-root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Where the image paths of the lists start (imagenet, wsol). Default: see --layout.")
@click.option("--model", "model_source", required=True,
              help="Stable Diffusion: diffusers folder, .safetensors/.ckpt file, or hub id.")
@click.option("--model-config", default=None, help="For a single-file --model offline: a diffusers folder describing it.")
@click.option("--unet", "unet_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="A finetuned UNet (diffusers folder) replacing the model's (stage 2; the paper's ImageNet setting).")
@click.option("--tokens", "tokens_path", type=click.Path(exists=True, path_type=Path), default=None,
              help="Learned concept tokens: a textual-inversion file or a folder of them; each token is matched to "
                   "the class it is named after (`<class-name>`). Classes without one use f_r = f_d.")
@click.option("--classifier", "classifier_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help='Classifier predictions {image_name: {"pred_scores": [C floats]}} for Top-1/Top-5 Loc.')
@click.option("--class-names", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Class names, one per line in label-id order (the wsol layout has none; `wnid names` lines work).")
@click.option("--meta-word", default=None,
              help="Force this meta word (f_d) for every class; default `bird` for cub (docs/method.md §2), the meta-token "
                   f"rule otherwise; `{AUTO_META}` = the rule.")
@click.option("--split", type=click.Choice(["test", "train", "all"]), default="test", show_default=True,
              help="CUB split.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N images of the list.")
@click.option("--maps-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("benchmark-maps"),
              show_default=True, help="Map cache: <maps-dir>/<maps version>/<image_id>.npz (float16, compressed).")
@click.option("--resume", is_flag=True, default=False,
              help="Reuse the maps already cached for this maps version (after a kill, or to re-sweep τ: then no "
                   "model is loaded).")
@click.option("--overwrite", is_flag=True, default=False, help="Recompute maps that are already cached.")
@click.option("--export-wsol-maps", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write every evaluated map as DIR/<image_id>.npy (float32), as wsolevaluation reads them.")
@click.option("--interval", type=float, default=0.01, show_default=True, help="MaxBoxAcc τ grid step (or 0.001).")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the report as JSON.")
@click.option("--markdown", "markdown_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the report as Markdown.")
@model_options
@engine_options
def benchmark_command(layout: str, root: Path, image_root: Path | None, model_source: str, model_config: str | None,
                      unet_dir: Path | None, tokens_path: Path | None, classifier_file: Path | None,
                      class_names: Path | None, meta_word: str | None, split: str, limit: int | None,
                      maps_dir: Path, resume: bool, overwrite: bool, export_wsol_maps: Path | None, interval: float,
                      out_file: Path | None, markdown_file: Path | None, device: str | None, dtype: str | None,
                      batch_size: int, **kwargs) -> None:
    """Localize every image of a WSOL benchmark with its ground-truth label and score the boxes and maps.

    Reports GT-known Loc, Top-1/Top-5 Loc (with --classifier), the top-1 error breakdown (Cls, correct,
    M-Ins, Part, More, Wrong), MaxBoxAcc (v1, δ=50) and MaxBoxAccV2 (δ 30/50/70 and their mean) as a
    table, and as JSON (--out) and Markdown (--markdown). Maps are cached per maps version (model,
    tokens, UNet and the settings that change maps, not τ) under --maps-dir; images that cannot be
    read are listed in the report and skipped.

    \b
    Example:
      genpromp-annotate benchmark --layout cub --root CUB_200_2011 --model sd-v1-4 --preset cub-paper \\
          --tokens tokens/ --classifier cub_efficientnet_b7.json --out cub.json --markdown cub.md
      genpromp-annotate benchmark --layout imagenet --root ILSVRC --model sd-v1-4 --unet unet-ft \\
          --tokens tokens/ --classifier imagenet_efficientnet_b7.json --out imagenet.json
      genpromp-annotate benchmark --layout cub --root CUB_200_2011 --model sd-v1-4 --tokens tokens/ \\
          --resume --threshold 0.3 --out cub-tau30.json      # re-sweep τ from the cache, no model
    """
    from tqdm import tqdm

    from genpromp_annotate.atomic_files import write_text_atomic
    from genpromp_annotate.engine.boxes import boxes_from_map
    from genpromp_annotate.evaluation.layouts import DatasetLayoutError, read_class_predictions
    from genpromp_annotate.evaluation.loc_metrics import LocEvaluator
    from genpromp_annotate.evaluation.map_cache import MapCache, maps_version
    from genpromp_annotate.evaluation.maxboxacc import MaxBoxAccEvaluator
    from genpromp_annotate.evaluation.report import (
        build_report,
        report_markdown,
        report_table,
        write_report_json,
    )

    config = config_from_options(**pop_engine_options(kwargs))
    if resume and overwrite:
        raise ConfigError("--resume reuses cached maps and --overwrite recomputes them: pick one")
    stderr = sys.stderr

    # 1. the dataset, its labels and (optionally) the classifier's scores
    all_records = _read_records(layout, root, image_root, split)
    all_labels = _label_names(all_records, class_names)
    records, labels = all_records[:limit], all_labels[:limit]
    if not records:
        raise DatasetLayoutError(f"{root}: the {layout} layout lists no image (split {split!r})")
    scores: dict[str, np.ndarray] | None = None
    if classifier_file is not None:
        scores = read_class_predictions(classifier_file)
        missing = [r.prediction_name for r in records if r.prediction_name not in scores]
        if missing:
            raise DatasetLayoutError(f"{classifier_file}: no prediction for {len(missing)} image(s), e.g. "
                                     f"{missing[0]!r} (keys are {layout} image names as in docs/method.md §6)")

    # 2. what produces the maps → the maps version → the cache
    word = meta_word if meta_word is not None else ("bird" if layout == "cub" else AUTO_META)
    meta_words = {} if word == AUTO_META else {"*": word}
    matched = _match_tokens(_read_tokens(tokens_path), sorted(set(all_labels))) if tokens_path else {}
    if tokens_path is not None and not matched:
        raise TokenFileError(f"{tokens_path}: no token is named after a class of this dataset (expected e.g. "
                             f"`<{all_labels[0].lower()}>`)")
    unet_id = _unet_id(unet_dir) if unet_dir is not None else None
    version = maps_version(str(model_source), _tokens_digest(matched), config, unet_id, meta_words)
    cache = MapCache(maps_dir, version)
    cached = {r.image_id for r, label in zip(records, labels) if cache.has(r.image_id, label)}
    if cached and not (resume or overwrite):
        raise ConfigError(f"{cache.folder}: {len(cached)} of the {len(records)} maps are already cached for maps "
                          "version " + version + "; pass --resume to reuse them or --overwrite to recompute them")
    todo = [(r, label) for r, label in zip(records, labels) if overwrite or r.image_id not in cached]
    click.echo(f"{layout}: {len(records)} image(s), {len(todo)} to localize, {len(records) - len(todo)} cached; "
               f"maps version {version} in {cache.folder}", err=True)

    # 3. localize what is not cached, batch by batch; each map is stored as soon as it exists
    failed: list[tuple[str, str]] = []
    seconds = 0.0
    if todo:
        from genpromp_annotate.engine.images import load_image
        from genpromp_annotate.engine.loading import load_stable_diffusion
        from genpromp_annotate.engine.localizer import Localizer

        model = load_stable_diffusion(model_source, device=device, dtype=dtype, single_file_config=model_config)
        if unet_dir is not None:
            from diffusers import UNet2DConditionModel

            unet = UNet2DConditionModel.from_pretrained(str(unet_dir))
            model.unet = unet.requires_grad_(False).eval().to(model.device, model.dtype)
        localizer = Localizer(model, config)
        for label in sorted(set(labels)):
            if label in matched:
                localizer.set_concept_token(label, matched[label].vector, matched[label].token)
            if meta_words:
                localizer.set_meta_word(label, meta_words["*"])
        cache.write_manifest({"model": str(model_source), "unet": str(unet_dir) if unet_dir else None,
                              "tokens": str(tokens_path) if tokens_path else None, "meta_words": meta_words,
                              "config": config.as_dict()})
        click.echo(f"model on {model.device} ({str(model.dtype).removeprefix('torch.')}), settings "
                   f"{config.box_settings_key}; {len(matched)} class(es) with a learned token", err=True)
        started = time.perf_counter()
        bar = tqdm(total=len(todo), unit="image", desc="localizing", file=stderr, dynamic_ncols=True)
        try:
            for start in range(0, len(todo), batch_size):
                images, batch = [], []
                for record, label in todo[start : start + batch_size]:
                    try:
                        images.append(load_image(record.path, name=record.image_id))
                        batch.append((record, label))
                    except GenprompError as exc:
                        failed.append((record.image_id, str(exc)))
                if images:
                    maps = localizer.compute_maps(images, [label for _, label in batch]).float().cpu().numpy()
                    for (record, label), image, map_s in zip(batch, images, maps):
                        cache.save(record.image_id, map_s, label, *image.size)
                bar.update(len(todo[start : start + batch_size]))
        finally:
            bar.close()
        seconds = time.perf_counter() - started

    # 4. score every cached map: boxes with τ (one box, the paper's rule), MaxBoxAcc v1 and V2
    failed_ids = {image_id for image_id, _ in failed}
    loc = LocEvaluator(size=config.image_size)
    gt_boxes: dict[str, np.ndarray] = {}
    sizes: dict[str, tuple[int, int]] = {}
    v1 = MaxBoxAccEvaluator(gt_boxes, sizes, version="v1", interval=interval)
    v2 = MaxBoxAccEvaluator(gt_boxes, sizes, version="v2", interval=interval)
    evaluated = []
    for record, label in tqdm(list(zip(records, labels)), unit="image", desc="evaluating", file=stderr,
                              dynamic_ncols=True):
        if record.image_id in failed_ids:
            continue
        entry = cache.load(record.image_id)
        if entry.label != label:
            raise ConfigError(f"{cache.path_for(record.image_id)}: cached for label {entry.label!r}, the dataset says "
                              f"{label!r}; rerun with --overwrite")
        box = boxes_from_map(entry.map, config.threshold)[0]
        loc.accumulate([box.x1, box.y1, box.x2, box.y2], record.gt_boxes, entry.width, entry.height, record.label,
                       scores[record.prediction_name] if scores is not None else None)
        gt_boxes[record.image_id] = record.gt_boxes
        sizes[record.image_id] = record.size or (entry.width, entry.height)
        v1.accumulate(entry.map, record.image_id)
        v2.accumulate(entry.map, record.image_id)
        evaluated.append(record.image_id)

    summary = loc.compute()
    computed = len(todo) - len(failed)
    meta = {"layout": layout, "root": str(root), "split": split if layout == "cub" else None,
            "model": str(model_source), "unet": str(unet_dir) if unet_dir else None,
            "tokens": str(tokens_path) if tokens_path else None, "tokens_matched": len(matched),
            "classifier": str(classifier_file) if classifier_file else None,
            "meta_word": meta_words.get("*"), "maps_version": version, "maps_dir": str(cache.folder),
            "config": config.as_dict(), "interval": interval}
    report = build_report(
        meta, summary, v1.compute() if evaluated else None, v2.compute() if evaluated else None, failed,
        images={"total": len(all_records), "listed": len(records), "evaluated": len(evaluated),
                "computed": computed, "cached": len(records) - len(todo), "failed": len(failed)},
        timing={"localize_seconds": round(seconds, 3),
                "images_per_s": round(computed / seconds, 3) if seconds > 0 else None},
    )
    if export_wsol_maps is not None:
        count = cache.export_wsol(evaluated, export_wsol_maps)
        click.echo(f"{count} map(s) written as {export_wsol_maps}/<image_id>.npy", err=True)
    if out_file is not None:
        write_report_json(report, out_file)
    if markdown_file is not None:
        write_text_atomic(markdown_file, report_markdown(report))
    click.echo(report_table(report))
    if seconds > 0:
        click.echo(f"{computed} map(s) computed in {seconds:.1f}s ({computed / seconds:.2f} images/s)", err=True)
    for image_id, error in failed[:20]:
        click.echo(f"  failed: {error}", err=True)


def register(group: click.Group) -> None:
    group.add_command(benchmark_command)
