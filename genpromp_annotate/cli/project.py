"""Project commands: init, labels, status, calibrate-scores (and `open_project_store`, used by every store
command)."""

from __future__ import annotations

from pathlib import Path

import click

from genpromp_annotate.cli.options import config_from_options, engine_options, pop_engine_options
from genpromp_annotate.errors import ConfigError


def open_project_store(ctx: click.Context):  # -> genpromp_annotate.store.database.Store
    """The store named by --db / GENPROMP_DATABASE_URL (default SQLite under $GENPROMP_HOME), schema checked."""
    from genpromp_annotate.store.database import open_store

    db_url = getattr(ctx.find_root().obj, "db_url", None)
    return open_store(db_url)


def read_label_file(path: Path) -> list[str]:
    """One label per line; blank lines and lines starting with # are ignored."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--labels {path}: not UTF-8 text ({exc})") from exc
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


@click.command("init")
@click.argument("project")
@click.option("--model", "model_source", required=True,
              help="Base Stable Diffusion model: diffusers folder, .safetensors/.ckpt file, or hub id.")
@click.option("--labels", "labels_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A text file with one label per line.")
@click.option("--label", "label_names", multiple=True, help="A label (repeat the option for several).")
@click.option("--meta-word", default=None,
              help="Give every label this meta token (f_d, and the start of its learned token) instead of the "
                   "method's rule (the last word of each synonym): `bird` for CUB species, as the paper does; "
                   "`shape` for the toy world's novel class. One word of the model's vocabulary.")
@engine_options
@click.pass_context
def init_command(ctx: click.Context, project: str, model_source: str, labels_file: Path | None,
                 label_names: tuple[str, ...], meta_word: str | None, **kwargs) -> None:
    """Create PROJECT with its base model, inference settings and labels.

    The settings (preset, --threshold, --omega, ...) are stored with the project: every box of the
    project is made with them and they are part of its model version. Each label gets its meta token
    (the vocabulary word that names it) and a concept token name, ready for training.

    \b
    Example:
      genpromp-annotate make-tiny-model /tmp/m
      genpromp-annotate init birds --model /tmp/m --label sparrow --label "goldfish, Carassius auratus"
      genpromp-annotate init cub --model sd15/ --labels classes.txt --preset cub-paper --meta-word bird
    """
    from genpromp_annotate.project import add_labels, load_tokenizer, project_settings
    from genpromp_annotate.store import queries as q

    config = config_from_options(**pop_engine_options(kwargs))
    labels = list(label_names) + (read_label_file(labels_file) if labels_file else [])
    if meta_word and not labels:
        raise ConfigError("--meta-word applies to the labels given with --label / --labels; there are none")
    if len(set(labels)) != len(labels):
        duplicate = next(label for label in labels if labels.count(label) > 1)
        raise ConfigError(f"label {duplicate!r} is given twice")
    local = Path(model_source).expanduser()
    base_model = str(local.resolve()) if local.exists() else model_source
    tokenizer = load_tokenizer(base_model) if labels else None
    store = open_project_store(ctx)
    with store.write() as session:
        q.create_project(session, project, base_model, project_settings(config))
    if labels:
        add_labels(store, project, labels, tokenizer, meta_word)
    click.echo(f"project {project!r} created in {store.display_url}")
    click.echo(f"  model:    {base_model}")
    click.echo(f"  settings: {config.box_settings_key}")
    click.echo(f"  labels:   {len(labels)}" + (f" ({', '.join(labels[:8])}{', …' if len(labels) > 8 else ''})"
                                               if labels else " (add some with `genpromp-annotate labels "
                                               f"{project} add NAME`)"))
    click.echo(f"next: genpromp-annotate import {project} DATA_DIR --format imagefolder")


@click.command("labels")
@click.argument("project")
@click.argument("action", required=False, type=click.Choice(["add"]))
@click.argument("names", nargs=-1)
@click.option("--meta-word", default=None,
              help="Give every label this meta token (f_d, and the start of its learned token) instead of the "
                   "method's rule (the last word of each synonym): `bird` for CUB species, as the paper does; "
                   "`shape` for the toy world's novel class. One word of the model's vocabulary.")
@click.pass_context
def labels_command(ctx: click.Context, project: str, action: str | None, names: tuple[str, ...],
                   meta_word: str | None) -> None:
    """List the labels of PROJECT, or `add` new ones.

    The list shows each label's meta token, concept token, training state and image count.

    \b
    Example:
      genpromp-annotate labels birds
      genpromp-annotate labels birds add heron "electric ray, crampfish, numbfish, torpedo"
      genpromp-annotate labels cub add "Vermilion Flycatcher" --meta-word bird
    """

    from genpromp_annotate.project import add_labels, load_tokenizer
    from genpromp_annotate.store import queries as q

    store = open_project_store(ctx)
    if action == "add":
        if not names:
            raise ConfigError("`labels PROJECT add` needs at least one NAME")
        with store.read() as session:
            base_model = q.get_project(session, project).base_model
        added = add_labels(store, project, list(names), load_tokenizer(base_model), meta_word)
        for category in added:
            click.echo(f"added {category.name!r} (meta token {category.meta_token!r}, concept token "
                       f"{category.concept_token})")
        return
    with store.read() as session:
        proj = q.get_project(session, project)
        categories = q.list_categories(session, proj)
        counts = q.image_counts_by_category(session, categories)
    if not categories:
        click.echo(f"project {project!r} has no label; add some with `genpromp-annotate labels {project} add NAME`")
        return
    width = max(len("label"), *(len(c.name) for c in categories))
    click.echo(f"{'label':<{width}}  {'meta token':<12} {'concept token':<20} {'state':<10} images")
    for c in categories:
        click.echo(f"{c.name:<{width}}  {c.meta_token:<12} {c.concept_token:<20} {c.training_state:<10} "
                   f"{counts.get(c.id, 0)}")


@click.command("status")
@click.argument("project")
@click.pass_context
def status_command(ctx: click.Context, project: str) -> None:
    """Where PROJECT stands: images per state, labels, the current model version and how many images it
    has yet to annotate, training runs, model versions and their boxes.

    \b
    Example:
      genpromp-annotate status birds
      genpromp-annotate --db postgresql+psycopg://me@db/genpromp status birds
    """
    from genpromp_annotate.project import current_model_version
    from genpromp_annotate.store import queries as q

    store = open_project_store(ctx)
    current = current_model_version(store, project)
    with store.read() as session:
        proj = q.get_project(session, project)
        to_annotate = q.count_pending(session, proj, current) if current is not None else None
        counts = q.image_status_counts(session, proj)
        categories = q.list_categories(session, proj)
        runs = list(proj.runs)
        versions = q.version_counts(session, proj)
        errors = session.query(q.Image.uri, q.Image.error).filter(q.Image.project_id == proj.id,
                                                                  q.Image.status == "error").limit(5).all()
    from genpromp_annotate.sources import display_uri

    click.echo(f"project {proj.name}  ({store.display_url})")
    click.echo(f"  model:     {proj.base_model}" + (f"  + finetuned UNet {proj.unet_path}" if proj.unet_path else ""))
    click.echo(f"  settings:  {proj.settings}")
    trained = sum(c.training_state == "trained" for c in categories)
    click.echo(f"  labels:    {len(categories)} ({trained} with a learned concept token)")
    total = sum(counts.values())
    click.echo(f"  images:    {total}  (pending {counts.get('pending', 0)}, done {counts.get('done', 0)}, "
               f"error {counts.get('error', 0)})")
    for uri, error in errors:
        click.echo(f"    error: {error or display_uri(uri)}")
    if counts.get("error", 0) > len(errors):
        click.echo(f"    … {counts['error'] - len(errors)} more")
    if current is None:
        click.echo("  current:   unknown (the selected UNet has no recorded digest; `annotate` works it out)")
    else:
        click.echo(f"  current:   {current}, {to_annotate} image(s) to annotate with it")
    click.echo(f"  runs:      {len(runs)}")
    for run in runs:
        finished = f" → {run.finished_at:%Y-%m-%d %H:%M}" if run.finished_at else ""
        started = f" {run.started_at:%Y-%m-%d %H:%M}" if run.started_at else ""
        click.echo(f"    #{run.id} {run.kind} {run.status} {run.progress:.0%}{started}{finished}"
                   + (f" metrics {run.metrics}" if run.metrics else "") + (f" error: {run.error}" if run.error else ""))
    click.echo(f"  versions:  {len(versions)}")
    for v in versions:
        empty = f", {v.without_box} without a box (nothing passed τ)" if v.without_box else ""
        click.echo(f"    {v.name} ({v.source}): {v.images} images, {v.boxes} boxes{empty}")
        if v.parts is not None:
            click.echo(f"      base {v.parts.base_model} | tokens {v.parts.tokens_digest} | unet {v.parts.unet} | "
                       f"{v.parts.settings_key}")


def _echo_reliability(title: str, rows) -> None:  # rows: list[evaluation.calibration.ReliabilityBin]
    click.echo(title)
    click.echo(f"    {'score':<9} {'boxes':>6} {'mean score':>11} {'hit rate':>9}")
    for row in rows:
        mean = "-" if row.mean_score is None else f"{row.mean_score:.3f}"
        rate = "-" if row.hit_rate is None else f"{row.hit_rate:.3f}"
        click.echo(f"    {row.low:.1f}-{row.high:.1f}   {row.count:>6} {mean:>11} {rate:>9}")


@click.command("calibrate-scores")
@click.argument("project")
@click.option("--model-version", default=None,
              help="The version whose boxes to calibrate [the current one: what `annotate` would make now].")
@click.option("--min-boxes", type=click.IntRange(min=1), default=None,
              help="Refuse to fit on fewer boxes of the version on human-annotated images [20].")
@click.option("--prior", type=click.FloatRange(min=0.0), default=None,
              help="Pseudo-boxes pulling each step of the fit toward the overall hit rate, so that a few boxes "
                   "never give 0 or 1 [2]; 0 = plain isotonic regression.")
@click.pass_context
def calibrate_scores_command(ctx: click.Context, project: str, model_version: str | None, min_boxes: int | None,
                             prior: float | None) -> None:
    """Turn a model version's box scores into probabilities, fitted on the human boxes of PROJECT.

    A raw box score is the mean map value inside the box: higher means surer, but 0.6 is not "right 60 %
    of the time". This command pairs the version's boxes with the human boxes of the same images
    (Label Studio annotations, stored by `pull` or the backend's webhook): a box is a hit when its IoU
    with a human box of its label is at least 0.5. An isotonic regression of hit on score (monotone:
    a higher raw score never gets a lower probability) is stored for that version, and then
    `export --min-score`, the csv/parquet `calibrated_score` column, `push` and the backend's /predict
    use P(IoU ≥ 0.5) instead of the raw score: Label Studio's sort by prediction score puts the least
    certain boxes first. The reliability table (per score bin: boxes, mean score, fraction of hits) is
    printed before and after; ECE is their size-weighted mean gap (0 = calibrated). The backend fits
    the new version itself whenever it re-calibrates τ.

    \b
    Example:
      genpromp-annotate pull birds --ls-url http://localhost:8080 --ls-project 3
      genpromp-annotate calibrate-scores birds
      genpromp-annotate export birds --format coco --out birds.json --min-score 0.8
    """
    from genpromp_annotate.project import DEFAULT_MIN_BOXES, calibrate_scores
    from genpromp_annotate.project.scores import DEFAULT_PRIOR

    store = open_project_store(ctx)
    fit = calibrate_scores(store, project, model_version, DEFAULT_MIN_BOXES if min_boxes is None else min_boxes,
                           DEFAULT_PRIOR if prior is None else prior)
    click.echo(f"project {project}, model version {fit.model_version}: {fit.scores.size} boxes on human-annotated "
               f"images, {int(fit.hits.sum())} hits (IoU >= 0.5 with a human box of their label)")
    _echo_reliability(f"  before (raw score), ECE {fit.ece(False):.3f}:", fit.table(calibrated=False))
    _echo_reliability(f"  after (calibrated), ECE {fit.ece(True):.3f} (on the boxes it was fitted on):",
                      fit.table(calibrated=True))
    click.echo(f"stored: export --min-score, push and /predict now use the calibrated score of {fit.model_version}")


def register(group: click.Group) -> None:
    group.add_command(init_command)
    group.add_command(labels_command)
    group.add_command(status_command)
    group.add_command(calibrate_scores_command)
