"""Administrative commands: make-tiny-model (and db upgrade, demo, serve as they land)."""

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


def register(group: click.Group) -> None:
    group.add_command(make_tiny_model_command)
