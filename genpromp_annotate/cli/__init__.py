"""The `genpromp-annotate` command group: global options and the one place errors become messages."""

from __future__ import annotations

import atexit
import importlib
import os
import sys
import threading
from dataclasses import dataclass

import click

from genpromp_annotate.errors import GenprompError
from genpromp_annotate.log import set_verbosity

# Each module defines `register(group)`; one module per command family.
COMMAND_MODULES = ("admin", "toy", "annotate", "project", "import_export", "train", "serve", "benchmark")


@dataclass
class CliContext:
    db_url: str | None
    verbose: int


class GenprompGroup(click.Group):
    """Turns GenprompError into one line and exit code 1; the traceback only with -v."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except GenprompError as exc:
            verbose = ctx.obj.verbose if isinstance(ctx.obj, CliContext) else 0
            if verbose:
                raise
            click.secho(f"Error: {exc}", err=True, fg="red")
            sys.exit(1)


@click.group(cls=GenprompGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--db", "db_url", envvar="GENPROMP_DATABASE_URL", default=None, metavar="URL",
              help="Database URL (sqlite:///path.db or postgresql+psycopg://…). "
                   "Default: SQLite under $GENPROMP_HOME (env GENPROMP_DATABASE_URL).")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug); env GENPROMP_VERBOSITY.")
@click.version_option(package_name="genpromp-annotate")
@click.pass_context
def cli(ctx: click.Context, db_url: str | None, verbose: int) -> None:
    """Turn weakly labelled images (one label per image) into bounding boxes with GenPromp.

    \b
    Quick start:
      genpromp-annotate demo                                  # whole flow on generated images
      genpromp-annotate make-tiny-model /tmp/m
      genpromp-annotate localize --model /tmp/m --label cat photo.jpg
    """
    set_verbosity(verbose)
    ctx.obj = CliContext(db_url=db_url, verbose=verbose)


for _name in COMMAND_MODULES:
    importlib.import_module(f"genpromp_annotate.cli.{_name}").register(cli)


def main() -> None:
    try:
        cli(prog_name="genpromp-annotate")
    except SystemExit as exc:
        exit_without_teardown(exc.code)
    exit_without_teardown(0)


def exit_without_teardown(code: int | str | None) -> None:
    """End the process once a command is done, skipping the interpreter's module teardown: with torch
    imported it takes ~0.35 s and does nothing a finished command needs (bench/process_localize.py).

    atexit handlers (logging's flush, weakref finalizers, temporary folders) still run, and stdout/stderr
    are flushed. While another thread is alive, the usual exit runs instead, so that it is joined.
    """
    if threading.active_count() > 1:
        sys.exit(code)
    if isinstance(code, str):  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be written anyway
            pass
    os._exit(code or 0)
