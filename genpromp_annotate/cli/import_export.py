"""import (images and weak labels into a project) and export (boxes to csv, parquet, COCO, YOLO, VOC, LS)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from genpromp_annotate.cli.project import open_project_store

EXPORT_FORMATS = ("csv", "parquet", "coco", "yolo", "voc", "label-studio")
SHOWN_ERRORS = 20


@click.command("import")
@click.argument("project")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["imagefolder", "csv", "label-studio"]), default="imagefolder",
              show_default=True, help="imagefolder: SOURCE/<label>/<images>; csv: rows `path,label[,split]`; "
                                      "label-studio: a JSON export whose tasks carry a Choices label.")
@click.option("--split", default=None, help="Split name for images whose source gives none (e.g. train).")
@click.option("--image-key", default=None, help="label-studio: the task data field holding the image [image].")
@click.option("--root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="label-studio: the local-files document root, or the media folder holding upload/.")
@click.pass_context
def import_command(ctx: click.Context, project: str, source: Path, fmt: str, split: str | None,
                   image_key: str | None, root: Path | None) -> None:
    """Add the images of SOURCE and their weak labels to PROJECT.

    Idempotent: an image is known by the sha256 of its bytes, so importing again adds only new
    images (and labels). An unreadable image (truncated, empty, too large, ...) or an unknown label
    is recorded with its error and never stops the import; `status` lists them.

    \b
    Example:
      genpromp-annotate import birds data/birds --format imagefolder
      genpromp-annotate import birds labels.csv --format csv --split train
      genpromp-annotate import birds export.json --format label-studio --root /srv/ls-files
    """
    from genpromp_annotate.project import ensure_project_exists, import_records
    from genpromp_annotate.sources import read_source

    store = open_project_store(ctx)
    ensure_project_exists(store, project)
    records = read_source(source, fmt, image_key=image_key, root=root)
    with click.progressbar(length=len(records), label="importing", file=sys.stderr) as bar:
        report = import_records(store, project, records, split=split, on_progress=lambda n: bar.update(n))
    click.echo(f"{len(records)} images read from {source}: {report.added} added, {report.updated} updated, "
               f"{report.duplicates} already there, {len(report.errors)} with errors")
    for name, error in report.errors[:SHOWN_ERRORS]:
        click.echo(f"  error: {error}", err=True)
    if len(report.errors) > SHOWN_ERRORS:
        click.echo(f"  … {len(report.errors) - SHOWN_ERRORS} more (see `genpromp-annotate status {project}`)", err=True)


@click.command("export")
@click.argument("project")
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), required=True, help="Output format.")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True,
              help="Output file (csv, parquet, coco, label-studio) or folder (yolo, voc).")
@click.option("--min-score", type=float, default=None,
              help="Leave out boxes scored below this, in [0, 1]. A box of a model version with a score "
                   "calibration (`calibrate-scores`) is compared by its calibrated score, P(IoU ≥ 0.5 with a "
                   "true object); other boxes by their raw score. Human boxes are always kept.")
@click.option("--model-version", default=None,
              help="Boxes of this model version ('all' for every version) [the latest one].")
@click.option("--source", "box_source", type=click.Choice(["model", "human", "all"]), default="model",
              show_default=True, help="Model boxes, human boxes (e.g. from Label Studio) or both.")
@click.pass_context
def export_command(ctx: click.Context, project: str, fmt: str, out: Path, min_score: float | None,
                   model_version: str | None, box_source: str) -> None:
    """Write the boxes of PROJECT in a detector's training format.

    csv/parquet: one row per box (image_uri, width, height, label, x1, y1, x2, y2, score,
    model_version, calibrated_score; original pixels). coco: one JSON file. yolo: labels/*.txt +
    classes.txt. voc: one XML per image. label-studio: tasks with `predictions`, ready to import (their
    scores calibrated where the version has a calibration, so sorting by score shows the least sure first).

    \b
    Example:
      genpromp-annotate export birds --format coco --out birds.json --min-score 0.3
      genpromp-annotate export birds --format yolo --out yolo/
      genpromp-annotate export birds --format label-studio --out tasks.json
    """
    from genpromp_annotate.exports import export_boxes, filter_boxes
    from genpromp_annotate.project import load_boxes_frame
    from genpromp_annotate.store import queries as q

    store = open_project_store(ctx)
    with store.read() as session:
        categories = [c.name for c in q.list_categories(session, q.get_project(session, project))]
    boxes = load_boxes_frame(store, project, model_version=model_version, source=box_source)
    written = export_boxes(boxes, fmt, out, categories=categories, min_score=min_score)
    n_boxes = int(filter_boxes(boxes, min_score=min_score)["x1"].notna().sum())
    versions = sorted(str(v) for v in boxes["model_version"].dropna().unique())
    paths = written if isinstance(written, list) else [written]
    where = paths[0] if len(paths) == 1 else f"{out} ({len(paths)} files)"
    click.echo(f"{n_boxes} boxes on {boxes['image_uri'].nunique()} images "
               f"({', '.join(versions) or 'no model version'}) written as {fmt} to {where}")


def register(group: click.Group) -> None:
    group.add_command(import_command)
    group.add_command(export_command)
