"""`localize` (one-off, no database) and `annotate` (a whole project in the store, resumable)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np

from genpromp_annotate.cli.options import (
    config_from_options,
    engine_options,
    model_options,
    pop_engine_options,
    speed_from_options,
    speed_options,
)
from genpromp_annotate.errors import GenprompError, TokenFileError

if TYPE_CHECKING:  # torch loads only in the commands that run a model
    import torch


def _pick_token(tokens: dict[str, torch.Tensor], label: str, path: Path) -> tuple[str, torch.Tensor]:
    if len(tokens) == 1:
        return next(iter(tokens.items()))
    for token, vector in tokens.items():
        if token.strip("<>").lower() == label.lower():
            return token, vector
    raise TokenFileError(f"{path} holds {len(tokens)} tokens ({', '.join(tokens)}); none is named after {label!r}")


@click.command("localize")
@click.option("--model", "model_source", required=True,
              help="Stable Diffusion: diffusers folder, .safetensors/.ckpt file, or hub id. A diffusers folder opens "
              "with the native inference modules (same maps, no diffusers import); env GENPROMP_RUNTIME=diffusers "
              "opens it with diffusers.")
@click.option("--model-config", default=None, help="For a single-file --model offline: a diffusers folder describing it.")
@click.option("--label", required=True, help="The category of every image, e.g. 'goldfish' or 'goldfish, Carassius auratus'.")
@click.option("--tokens", "tokens_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A learned concept token (diffusers textual-inversion file) for the label; without it f_r = f_d.")
@click.option("--save-cams", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write each image's normalised map as DIR/<image stem>.npy.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the results as JSON to this file.")
@model_options
@speed_options
@engine_options
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
def localize_command(model_source: str, model_config: str | None, label: str, tokens_file: Path | None,
                     save_cams: Path | None, out_file: Path | None, device: str | None, dtype: str | None,
                     batch_size: int, images: tuple[Path, ...], compile_model: bool, channels_last: bool,
                     **kwargs) -> None:
    """Boxes for IMAGE files of one LABEL, without a project or database.

    Prints one JSON entry per image — {"image", "label", "width", "height", "boxes": [{"x1", "y1",
    "x2", "y2", "score"}]} with boxes in original pixels. An unreadable image gets an "error" entry
    and the others go on.

    \b
    Example:
      genpromp-annotate make-tiny-model /tmp/m
      genpromp-annotate localize --model /tmp/m --label cat --save-cams /tmp/c --out boxes.json a.jpg b.png
    """
    from genpromp_annotate.engine.acceleration import accelerate
    from genpromp_annotate.engine.images import load_image
    from genpromp_annotate.engine.loading import load_stable_diffusion
    from genpromp_annotate.engine.localizer import Localizer
    from genpromp_annotate.engine.tokens import read_learned_embeds

    config = config_from_options(**pop_engine_options(kwargs))
    model = load_stable_diffusion(model_source, device=device, dtype=dtype, single_file_config=model_config)
    accelerate(model, speed_from_options(compile_model, channels_last))
    localizer = Localizer(model, config)
    if tokens_file is not None:
        token, vector = _pick_token(read_learned_embeds(tokens_file), label, tokens_file)
        localizer.set_concept_token(label, vector, token)

    entries: list[dict] = []
    if save_cams:
        save_cams.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    done = 0
    with click.progressbar(length=len(images), label="localizing", file=sys.stderr) as bar:
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            loaded, names = [], []
            for path in chunk:
                try:
                    loaded.append(load_image(path))
                    names.append(str(path))
                except GenprompError as exc:
                    entries.append({"image": str(path), "label": label, "error": str(exc), "boxes": []})
            if loaded:
                for result in localizer.localize(loaded, [label] * len(loaded), names=names, batch_size=batch_size,
                                                 keep_maps=save_cams is not None):
                    entries.append(result.as_dict())
                    if save_cams is not None and result.map_512 is not None:
                        np.save(save_cams / f"{Path(result.image or 'map').stem}.npy", result.map_512.astype(np.float32))
            done += len(chunk)
            bar.update(len(chunk))
    order = {str(p): i for i, p in enumerate(images)}
    entries.sort(key=lambda e: order.get(e["image"], 0))
    text = json.dumps(entries, indent=2)
    click.echo(text)
    if out_file:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(text + "\n")
    elapsed = time.perf_counter() - started
    click.echo(f"{done} images in {elapsed:.1f}s ({done / max(elapsed, 1e-9):.2f} images/s)", err=True)
    if any("error" in e for e in entries):
        click.echo(f"{sum('error' in e for e in entries)} image(s) could not be read; see their 'error' entries",
                   err=True)


@click.command("annotate")
@click.argument("project")
@model_options
@speed_options
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Stop after this many images.")
@click.option("--force", is_flag=True, default=False,
              help="Annotate every image again (and retry images in error), even those already done.")
@click.pass_context
def annotate_command(ctx: click.Context, project: str, device: str | None, dtype: str | None, batch_size: int,
                     limit: int | None, force: bool, compile_model: bool, channels_last: bool) -> None:
    """Boxes for every image of PROJECT that has none from the current model version.

    The model version names the base model, the learned concept tokens, the finetuned UNet and the
    box settings: change any of them and `annotate` redoes the boxes. Boxes are committed per batch:
    stop it (Ctrl-C finishes the current batch; a second Ctrl-C aborts) or kill it, and the next run
    goes on where it stopped. Several processes (or machines, on PostgreSQL) can annotate one project
    at once: each claims its own batches.

    \b
    Example:
      genpromp-annotate annotate birds --batch-size 8
      genpromp-annotate annotate birds --device cuda:1 --limit 1000
      genpromp-annotate annotate birds --force
    """
    import signal

    from tqdm import tqdm

    from genpromp_annotate.cli.project import open_project_store
    from genpromp_annotate.project import annotate_project, build_localizer, pending_count

    store = open_project_store(ctx)
    project_localizer = build_localizer(store, project, device=device, dtype=dtype,
                                        speed=speed_from_options(compile_model, channels_last))
    version = project_localizer.model_version
    model = project_localizer.localizer.model
    total = pending_count(store, project, version) if not force else None
    if total is not None and limit is not None:
        total = min(total, limit)
    click.echo(f"model version {version} on {model.device} ({str(model.dtype).removeprefix('torch.')}); "
               f"{'all images (--force)' if force else f'{total} image(s) to annotate'}", err=True)

    stop = {"requested": False}

    def on_signal(_signum, _frame) -> None:
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True
        click.echo("\nstopping after the current batch (Ctrl-C again to abort)", err=True)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    bar = tqdm(total=total, unit="image", desc="annotating", file=sys.stderr,
               dynamic_ncols=True)
    try:
        summary = annotate_project(store, project, project_localizer, batch_size=batch_size, limit=limit,
                                   force=force, on_batch=lambda report: bar.update(report.images),
                                   should_stop=lambda: stop["requested"])
    finally:
        bar.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo(f"{summary.images} images annotated ({summary.boxes} boxes, {len(summary.errors)} errors) in "
               f"{summary.seconds:.1f}s ({summary.images_per_s:.2f} images/s), model version {version}")
    for name, error in summary.errors[:20]:
        click.echo(f"  error: {error}", err=True)
    if summary.stopped:
        click.echo(f"stopped early; run `genpromp-annotate annotate {project}` again to go on", err=True)
        ctx.exit(130)


def register(group: click.Group) -> None:
    group.add_command(localize_command)
    group.add_command(annotate_command)
