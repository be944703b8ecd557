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


# The demo's two categories: each is one CLIP token, so its meta token is the word itself.
DEMO_LABELS = ("ball", "box")
DEMO_SIZES = ((320, 240), (256, 256), (400, 300))


def write_demo_images(folder: Path, per_label: int = 3, seed: int = 0) -> list[Path]:
    """Real image files: a ball (disc) or a box (square) on a noisy two-tone background, JPEG and PNG.

    Written as `folder/<label>/<label>_<k>.(jpg|png)`, the imagefolder layout.
    """
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    paths = []
    for label in DEMO_LABELS:
        for k in range(per_label):
            width, height = DEMO_SIZES[k % len(DEMO_SIZES)]
            top, bottom = rng.integers(40, 200, 3), rng.integers(40, 200, 3)
            ramp = np.linspace(0.0, 1.0, height)[:, None, None]
            background = top * (1 - ramp) + bottom * ramp + rng.normal(0, 12, (height, width, 3))
            image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
            draw = ImageDraw.Draw(image)
            side = int(min(width, height) * rng.uniform(0.3, 0.55))
            x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            if label == "ball":
                draw.ellipse((x, y, x + side, y + side), fill=colour, outline=(0, 0, 0), width=2)
            else:
                draw.rectangle((x, y, x + side, y + side), fill=colour, outline=(0, 0, 0), width=2)
            path = folder / label / f"{label}_{k}.{'jpg' if k % 2 == 0 else 'png'}"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path, quality=92) if path.suffix == ".jpg" else image.save(path)
            paths.append(path)
    return paths


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
    """Run the whole flow on generated images with a tiny local model, in well under two minutes on CPU.

    Makes the tiny model (cached under $GENPROMP_HOME/models), writes a few images of two labels,
    creates a project in a fresh SQLite database (or in --db), imports, annotates, and writes the
    boxes as CSV plus one overlay PNG per image. The tiny model is random: the flow is real, the
    boxes are not meaningful; use `init --model` with a Stable Diffusion model for real boxes.

    \b
    Example:
      genpromp-annotate demo
      genpromp-annotate demo --out /tmp/demo --images-per-label 5
    """
    import time

    from genpromp_annotate.engine.loading import load_stable_diffusion
    from genpromp_annotate.engine.tiny_model import make_tiny_model
    from genpromp_annotate.exports import export_boxes
    from genpromp_annotate.presets import LocalizeConfig
    from genpromp_annotate.sources import read_source
    from genpromp_annotate.store import queries as q
    from genpromp_annotate.store.database import genpromp_home, open_store
    from genpromp_annotate.workflow import (
        add_labels,
        annotate_project,
        build_localizer,
        import_records,
        load_boxes_frame,
        project_settings,
    )

    started = time.perf_counter()
    home = genpromp_home()
    out_dir = (out_dir or home / "demo").expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    model_dir = home / "models" / "tiny-sd"
    if not (model_dir / "model_index.json").is_file():
        click.echo(f"making the tiny model in {model_dir} …")
        make_tiny_model(model_dir, seed=0)
    images_dir = out_dir / "images"
    paths = write_demo_images(images_dir, per_label=images_per_label)
    click.echo(f"{len(paths)} images written to {images_dir}")

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
            q.create_project(session, name, str(model_dir), project_settings(LocalizeConfig()))
    with store.read() as session:
        known = {c.name for c in q.list_categories(session, q.get_project(session, name))}
    add_labels(store, name, [label for label in DEMO_LABELS if label not in known], model.tokenizer)
    report = import_records(store, name, read_source(images_dir, "imagefolder"))
    click.echo(f"project {name!r} in {store.display_url}: {report.added} images imported")
    project_localizer = build_localizer(store, name, model=model)
    summary = annotate_project(store, name, project_localizer, batch_size=4)
    click.echo(f"annotated {summary.images} images ({summary.boxes} boxes) at {summary.images_per_s:.2f} images/s, "
               f"model version {project_localizer.model_version}")
    boxes = load_boxes_frame(store, name)
    csv_path = export_boxes(boxes, "csv", out_dir / "boxes.csv")
    overlays = draw_overlays(boxes, out_dir / "overlays")
    store.dispose()
    click.echo(f"boxes:    {csv_path}")
    click.echo(f"overlays: {out_dir / 'overlays'} ({len(overlays)} PNG)")
    click.echo(f"database: {db_url}")
    click.echo(f"done in {time.perf_counter() - started:.1f}s; next: genpromp-annotate --db {db_url} status {name}")


def register(group: click.Group) -> None:
    group.add_command(make_tiny_model_command)
    group.add_command(db_group)
    group.add_command(demo_command)
