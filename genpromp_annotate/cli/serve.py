"""`serve` (the Label Studio ML backend), `push` (boxes → Label Studio tasks with predictions), `pull`
(Label Studio annotations → human boxes in the store)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from genpromp_annotate.cli.options import DTYPE_HELP
from genpromp_annotate.errors import ConfigError


def _ls_client(ls_url: str, api_key: str | None):
    if not api_key:
        raise ConfigError("a Label Studio access token is needed: pass --api-key or set LABEL_STUDIO_API_KEY "
                          "(Label Studio → Account & Settings → Access Token)")
    from label_studio_sdk import LabelStudio

    return LabelStudio(base_url=ls_url.rstrip("/"), api_key=api_key)


def _ls_options(func):
    for option in reversed([
        click.option("--ls-url", envvar="LABEL_STUDIO_URL", required=True, metavar="URL",
                     help="Label Studio base URL, e.g. http://localhost:8080 (env LABEL_STUDIO_URL)."),
        click.option("--api-key", envvar="LABEL_STUDIO_API_KEY", default=None, metavar="TOKEN",
                     help="Label Studio access token (env LABEL_STUDIO_API_KEY)."),
        click.option("--ls-project", type=int, required=True, metavar="ID", help="Label Studio project id."),
    ]):
        func = option(func)
    return func


@click.command("serve")
@click.option("--project", "project_name", envvar="GENPROMP_PROJECT", default=None,
              help="Project-store project to serve (env GENPROMP_PROJECT). A Label Studio project may name "
                   "another one in the ML backend's extra params: {\"project\": NAME}.")
@click.option("--model", "model_source", envvar="GENPROMP_MODEL", default=None,
              help="Without a store project: a Stable Diffusion model used directly (env GENPROMP_MODEL).")
@click.option("--tokens", type=click.Path(exists=True, path_type=Path), default=None,
              help="With --model: learned tokens (learned_embeds.safetensors or a folder of them).")
@click.option("--host", default="0.0.0.0", show_default=True, help="Interface to listen on.")
@click.option("--port", type=int, default=9090, show_default=True, help="Port to listen on.")
@click.option("--workers", type=click.IntRange(min=1), envvar="GENPROMP_BACKEND_WORKERS", default=1,
              show_default=True, help="Server processes; each loads the model once (env GENPROMP_BACKEND_WORKERS).")
@click.option("--threads", type=click.IntRange(min=1), envvar="GENPROMP_BACKEND_THREADS", default=4,
              show_default=True, help="Predict and download threads per process (env GENPROMP_BACKEND_THREADS).")
@click.option("--batch-size", type=click.IntRange(min=1), envvar="GENPROMP_BATCH_SIZE", default=8,
              show_default=True, help="Images per UNet call.")
@click.option("--device", envvar="GENPROMP_DEVICE", default=None, help="torch device; default the best available.")
@click.option("--dtype", envvar="GENPROMP_DTYPE", type=click.Choice(["float32", "float16", "bfloat16"]),
              default=None, help=DTYPE_HELP)
@click.option("--calibrate-omegas", envvar="GENPROMP_CALIBRATE_OMEGAS", default=None, metavar="W,W,…",
              help="ω values the re-calibration also tries besides the project's, e.g. 0.4,0.5,0.7; the best "
                   "(ω, τ) is kept (env GENPROMP_CALIBRATE_OMEGAS). Default: τ only.")
@click.pass_obj
def serve_command(obj, project_name: str | None, model_source: str | None, tokens: Path | None, host: str,
                  port: int, workers: int, threads: int, batch_size: int, device: str | None,
                  dtype: str | None, calibrate_omegas: str | None) -> None:
    """Run the Label Studio ML backend (/health, /setup, /predict, /webhook, /metrics).

    In Label Studio: Project → Settings → Model → Connect Model, URL http://HOST:PORT. Boxes of the
    project's categories come back as pre-annotations; annotations flow back through the webhook, and
    "Start Training" re-calibrates the threshold (and, with --calibrate-omegas, ω) on them and trains
    tokens for untrained labels.
    Basic auth: set BASIC_AUTH_USER and BASIC_AUTH_PASS. Media: LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY
    for Label Studio files; GENPROMP_MEDIA_ROOTS for plain local paths (see docs).

    \b
    Example:
      genpromp-annotate serve --project birds --port 9090
      genpromp-annotate serve --model /models/sd15 --workers 2 --threads 4
    """
    if not project_name and not model_source:
        raise ConfigError("serve needs --project NAME (a project-store project) or --model SOURCE")
    from genpromp_annotate.project.settings import calibrate_omegas as parse_omegas

    parse_omegas(calibrate_omegas)  # a bad list fails here, not in every worker
    if project_name:
        from genpromp_annotate.project import ensure_project_exists
        from genpromp_annotate.store.database import open_store

        store = open_store(obj.db_url if obj else None)
        ensure_project_exists(store, project_name)  # fail here, with the `init` hint, not in every worker
        store.dispose()
    env = {"GENPROMP_PROJECT": project_name, "GENPROMP_MODEL": model_source,
           "GENPROMP_TOKENS": str(tokens) if tokens else None, "GENPROMP_BACKEND_THREADS": str(threads),
           "GENPROMP_BATCH_SIZE": str(batch_size), "GENPROMP_DEVICE": device, "GENPROMP_DTYPE": dtype,
           "GENPROMP_DATABASE_URL": obj.db_url if obj else None, "GENPROMP_CALIBRATE_OMEGAS": calibrate_omegas,
           "GENPROMP_BACKEND_VERBOSE": str(max(1, obj.verbose if obj else 1))}
    for name, value in env.items():
        if value is not None:
            os.environ[name] = value  # worker processes read their settings from the environment
    import uvicorn

    click.echo(f"serving {project_name or model_source} on http://{host}:{port} "
               f"({workers} process(es) × {threads} thread(s))", err=True)
    # By name, not by import: the backend is an adapter over the core, which never imports it.
    uvicorn.run("genpromp_annotate_backend.__main__:create_app_from_env", factory=True, host=host, port=port,
                workers=workers, log_level="info", timeout_graceful_shutdown=10)


@click.command("push")
@click.argument("project_name", metavar="PROJECT")
@_ls_options
@click.option("--model-version", default=None, help="Push the boxes of this version [the project's current one].")
@click.option("--annotate/--no-annotate", default=True, show_default=True,
              help="First annotate the images that have no boxes of the current version (resumable).")
@click.option("--local-files-root", envvar="LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT",
              type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Label Studio's local-files root: local images under it become /data/local-files/ URLs "
                   "(env LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT).")
@click.option("--chunk-size", type=click.IntRange(min=1), default=100, show_default=True,
              help="Tasks or predictions per Label Studio API call.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Images per UNet call.")
@click.option("--device", default=None, help="torch device for --annotate.")
@click.pass_obj
def push_command(obj, project_name: str, ls_url: str, api_key: str | None, ls_project: int,
                 model_version: str | None, annotate: bool, local_files_root: Path | None, chunk_size: int,
                 batch_size: int, device: str | None) -> None:
    """Import PROJECT's boxes into a Label Studio project as tasks with predictions.

    For datasets too large for Label Studio's /predict call. Resumable: each task records its store
    image id, so a second push only adds predictions of a new model version to existing tasks.

    \b
    Example:
      genpromp-annotate push birds --ls-url http://localhost:8080 --ls-project 3 \\
          --local-files-root /data/images
    """
    from genpromp_annotate import project as gp
    from genpromp_annotate.labelstudio.bulk import push_predictions
    from genpromp_annotate.store.database import open_store

    store = open_store(obj.db_url if obj else None)
    client = _ls_client(ls_url, api_key)
    if annotate:
        summary = gp.annotate_with_project_model(store, project_name, device=device, batch_size=batch_size)
        click.echo(f"annotated {summary.images} image(s) with {summary.model_version}", err=True)
        model_version = model_version or summary.model_version
    model_version = model_version or gp.version_to_push(store, project_name, device)
    sent = [0]

    def progress(count: int) -> None:
        sent[0] += count
        click.echo(f"  sent {sent[0]} task(s)/prediction(s)", err=True)

    report = push_predictions(store, project_name, client, ls_project, model_version, local_files_root,
                              chunk_size, on_progress=progress)
    click.echo(f"{model_version}: {report.created_tasks} new task(s), {report.added_predictions} new prediction(s), "
               f"{report.up_to_date} up to date, {len(report.skipped)} skipped"
               + (f"; {report.without_box} image(s) without a box sent with an empty prediction"
                  if report.without_box else ""))
    for uri, reason in report.skipped[:10]:
        click.echo(f"  skipped {uri}: {reason}", err=True)


@click.command("pull")
@click.argument("project_name", metavar="PROJECT")
@_ls_options
@click.option("--media-root", "media_roots", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder local task images may be read from (repeatable; env GENPROMP_MEDIA_ROOTS).")
@click.pass_obj
def pull_command(obj, project_name: str, ls_url: str, api_key: str | None, ls_project: int,
                 media_roots: tuple[Path, ...]) -> None:
    """Store the rectangles of a Label Studio project's annotations as PROJECT's human boxes.

    Images are matched by content, so tasks created by `push`, by hand or by storage sync all work.
    Pulling again replaces each annotation's boxes.

    \b
    Example:
      genpromp-annotate pull birds --ls-url http://localhost:8080 --ls-project 3
    """
    from genpromp_annotate.labelstudio.bulk import pull_annotations
    from genpromp_annotate.labelstudio.media import MediaFetcher
    from genpromp_annotate.store.database import open_store

    store = open_store(obj.db_url if obj else None)
    fetcher = MediaFetcher.from_env()
    fetcher = MediaFetcher(label_studio_url=ls_url, api_key=api_key, roots=list(media_roots) or fetcher.roots,
                           allowed_hosts=fetcher.allowed_hosts, cache_dir=fetcher.cache_dir)
    report = pull_annotations(store, project_name, _ls_client(ls_url, api_key), ls_project, fetcher)
    click.echo(f"{report.annotations} annotation(s), {report.boxes} human box(es) stored; "
               f"{len(report.skipped)} problem(s)")
    for task_id, reason in report.skipped[:10]:
        click.echo(f"  task {task_id}: {reason}", err=True)


def register(group: click.Group) -> None:
    group.add_command(serve_command)
    group.add_command(push_command)
    group.add_command(pull_command)
