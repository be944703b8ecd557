"""Administrative commands: make-tiny-model, db upgrade, demo."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("make-tiny-model")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", default=0, show_default=True, help="Seed of the random weights (same seed, same model).")
def make_tiny_model_command(out_dir: Path, seed: int) -> None:
    """Write a tiny, randomly initialised SD-v1-shaped model (diffusers format) to OUT_DIR.

    It has Stable Diffusion v1's block layout and the real CLIP tokenizer (built offline from the
    vocabulary in the open-clip-torch wheel) but tiny widths: for tests and smoke runs, not for boxes.

    \b
    Example:
      genpromp-annotate make-tiny-model /tmp/tiny-sd --seed 0
    """
    from genpromp_annotate.engine.tiny_model import make_tiny_model

    path = make_tiny_model(out_dir, seed=seed)
    click.echo(f"tiny model written to {path}")


@click.group("db")
def db_group() -> None:
    """The project database (SQLite under $GENPROMP_HOME, or --db): create or upgrade its schema."""


@db_group.command("upgrade")
@click.pass_context
def db_upgrade_command(ctx: click.Context) -> None:
    """Create or upgrade the database schema (--db / GENPROMP_DATABASE_URL, default SQLite) to this version.

    Other commands refuse to work on an older schema and name this command. Back the database up
    first; the migrations run in one transaction where the database allows it.

    \b
    Example:
      genpromp-annotate db upgrade
      genpromp-annotate --db postgresql+psycopg://me@db:5432/genpromp db upgrade
    """
    from genpromp_annotate.store.database import open_store
    from genpromp_annotate.store.schema import upgrade_schema

    store = open_store(ctx.find_root().obj.db_url, check_schema=False)
    try:
        before, after = upgrade_schema(store.engine)
    finally:
        store.dispose()
    if before == after:
        click.echo(f"{store.display_url} is already at schema revision {after}")
    else:
        click.echo(f"{store.display_url} upgraded from revision {before or '(empty)'} to {after}")


DEMO_SIZES = ((256, 256), (320, 240), (240, 320))  # non-square sizes too: boxes come back in each image's frame


def write_demo_images(folder: Path, per_label: int = 3, seed: int = 0) -> dict[Path, tuple[str, list]]:
    """Toy-world test images (every class the toy model was taught), scaled up to a few sizes.

    Written as `folder/<label>/<label>_<k>.png`, the imagefolder layout. Returns path → (label, GT boxes).
    """
    from genpromp_annotate.toy.world import BASE_CLASSES, render_scene, split_images

    items = [item for item in split_images("test", per_label * 12, seed=seed) if item.label in BASE_CLASSES]
    written: dict[Path, tuple[str, list]] = {}
    counts: dict[str, int] = {}
    for item in items:
        k = counts.get(item.label, 0)
        if k >= per_label:
            continue
        counts[item.label] = k + 1
        width, height = DEMO_SIZES[k % len(DEMO_SIZES)]
        image, objects = render_scene(item.scene, width, height)
        path = folder / item.label / f"{item.label}_{k}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        written[path] = (item.label, [box for cls, box in objects if cls == item.label])
    return written


def draw_overlays(boxes, out_dir: Path) -> list[Path]:  # boxes: the load_boxes DataFrame
    """One PNG per image with its boxes and labels drawn on it."""
    from PIL import ImageDraw

    from genpromp_annotate.engine.images import load_image
    from genpromp_annotate.sources import open_uri, path_for_uri

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for uri, rows in boxes.groupby("image_uri", sort=False):
        image = load_image(open_uri(uri))
        draw = ImageDraw.Draw(image)
        for row in rows.itertuples():
            if row.x1 != row.x1:  # NaN: no box
                continue
            draw.rectangle((row.x1, row.y1, row.x2 - 1, row.y2 - 1), outline=(255, 32, 32), width=3)
            draw.text((row.x1 + 4, row.y1 + 2), f"{row.label} {row.score:.2f}", fill=(255, 255, 255))
        local = path_for_uri(uri)
        name = f"{local.parent.name}_{local.stem}.png" if local else f"image_{len(written)}.png"
        image.save(out_dir / name)
        written.append(out_dir / name)
    return written


@click.command("demo")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where images, database, CSV and overlays go [$GENPROMP_HOME/demo].")
@click.option("--images-per-label", type=click.IntRange(1, 50), default=3, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="torch device.")
@click.pass_context
def demo_command(ctx: click.Context, out_dir: Path | None, images_per_label: int, device: str) -> None:
    """Run the whole flow on toy-world images with the shipped toy model, in well under a minute on CPU.

    Writes the toy model (a small Stable Diffusion trained on coloured shapes, cached under
    $GENPROMP_HOME/models), a few images of its five shape classes at several sizes, creates a project
    in a fresh SQLite database (or in --db), imports, annotates, writes the boxes as CSV plus one overlay
    PNG per image, and scores the boxes against the images' known GT (GT-known Loc, IoU ≥ 0.5). The toy
    model knows only the toy world; use `init --model` with a Stable Diffusion model for real photos.

    \b
    Example:
      genpromp-annotate demo
      genpromp-annotate demo --out /tmp/demo --images-per-label 5
    """
    import time

    import numpy as np

    from genpromp_annotate.engine.loading import load_stable_diffusion
    from genpromp_annotate.evaluation.iou import iou_inclusive
    from genpromp_annotate.exports import export_boxes
    from genpromp_annotate.presets import preset
    from genpromp_annotate.project import (
        add_labels,
        annotate_project,
        build_localizer,
        import_records,
        load_boxes_frame,
        project_settings,
    )
    from genpromp_annotate.sources import path_for_uri, read_source
    from genpromp_annotate.store import queries as q
    from genpromp_annotate.store.database import genpromp_home, open_store
    from genpromp_annotate.toy.weights import ensure_toy_model
    from genpromp_annotate.toy.world import BASE_CLASSES

    started = time.perf_counter()
    home = genpromp_home()
    out_dir = (out_dir or home / "demo").expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    model_dir = ensure_toy_model(home / "models" / "toy-sd")
    images_dir = out_dir / "images"
    truth = write_demo_images(images_dir, per_label=images_per_label)
    click.echo(f"{len(truth)} toy-world images written to {images_dir}")

    db_url = ctx.find_root().obj.db_url
    if db_url is None:
        database = out_dir / "demo.db"
        for leftover in (database, database.with_name("demo.db-wal"), database.with_name("demo.db-shm")):
            leftover.unlink(missing_ok=True)
        db_url = f"sqlite:///{database}"
    store = open_store(db_url)
    name = "demo"
    model = load_stable_diffusion(model_dir, device=device, dtype="float32")
    with store.write() as session:
        if q.find_project(session, name) is None:
            q.create_project(session, name, str(model_dir), project_settings(preset("toy")))
    with store.read() as session:
        known = {c.name for c in q.list_categories(session, q.get_project(session, name))}
    add_labels(store, name, [label for label in BASE_CLASSES if label not in known], model.tokenizer)
    report = import_records(store, name, read_source(images_dir, "imagefolder"))
    click.echo(f"project {name!r} in {store.display_url}: {report.added} images imported")
    project_localizer = build_localizer(store, name, model=model)
    summary = annotate_project(store, name, project_localizer, batch_size=8)
    click.echo(f"annotated {summary.images} images ({summary.boxes} boxes) at {summary.images_per_s:.2f} images/s, "
               f"model version {project_localizer.model_version}")
    boxes = load_boxes_frame(store, name)
    csv_path = export_boxes(boxes, "csv", out_dir / "boxes.csv")
    overlays = draw_overlays(boxes, out_dir / "overlays")
    store.dispose()
    hits = 0
    for row in boxes.itertuples():
        local = path_for_uri(row.image_uri)
        gt = truth.get(local) if local else None
        if gt and row.x1 == row.x1:  # NaN: no box
            hits += float(iou_inclusive(np.array([[row.x1, row.y1, row.x2, row.y2]]), np.array(gt[1])).max()) >= 0.5
    click.echo(f"boxes:    {csv_path}")
    click.echo(f"overlays: {out_dir / 'overlays'} ({len(overlays)} PNG)")
    click.echo(f"database: {db_url}")
    click.echo(f"GT-known: {100 * hits / max(1, len(truth)):.1f} % of {len(truth)} images boxed on their object (IoU ≥ 0.5)")
    click.echo(f"done in {time.perf_counter() - started:.1f}s; next: genpromp-annotate --db {db_url} status {name}")


def register(group: click.Group) -> None:
    group.add_command(make_tiny_model_command)
    group.add_command(db_group)
    group.add_command(demo_command)
