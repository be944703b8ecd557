"""The toy world and the toy model: a synthetic benchmark and a small Stable Diffusion that localizes in it."""

from __future__ import annotations

from pathlib import Path

import click


def _parse_size(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int]:
    width, _, height = value.lower().partition("x")
    try:
        size = (int(width), int(height or width))
    except ValueError:
        raise click.BadParameter(f"expected W or WxH in pixels, got {value!r}") from None
    if min(size) < 16 or max(size) > 4096:
        raise click.BadParameter(f"sides must lie in [16, 4096], got {value!r}")
    return size


@click.command("toy-world")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True)
@click.option("--images", "n_images", type=click.IntRange(1, 1_000_000), default=300, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same images, byte for byte.")
@click.option("--novel", is_flag=True, help="Only images of the novel class(es), in the split folder <split>-novel.")
@click.option("--multi-instance", is_flag=True,
              help="2–3 objects of the label's class per image (GT: all of them), half the time plus one of "
                   "another class; smaller objects (radius 7–11 of 64). Split folder <split>-multi.")
@click.option("--size", default="64", show_default=True, callback=_parse_size, metavar="W[xH]",
              help="Image size in pixels; the scene is laid out on 64×64 and scaled (non-square stretches it).")
def toy_world_command(out_dir: Path, split: str, n_images: int, seed: int, novel: bool, multi_instance: bool,
                      size: tuple[int, int]) -> None:
    """Write a split of the toy world: weakly labelled shape images with GT boxes, wsolevaluation layout.

    Classes: circle, square, triangle, star, cross (base) and heart (novel: never named in the toy
    model's training). Each image holds its label's object and, half the time, one of another class;
    with --multi-instance, 2–3 objects of its label's class (with --novel too: <split>-novel-multi).
    OUT_DIR gets dataset/TOY/<class>/<file>.png, metadata/TOY/<split>/ (image_ids, class_labels,
    image_sizes, localization) and world.json; call again to add splits.

    \b
    Example:
      genpromp-annotate toy-world /tmp/toy --split test --images 300
      genpromp-annotate toy-model /tmp/toy-sd
      genpromp-annotate benchmark --layout wsol --root /tmp/toy --split test --model /tmp/toy-sd --preset toy
      genpromp-annotate toy-world /tmp/hearts --split train --images 40 --novel
      genpromp-annotate toy-world /tmp/toy --split test --images 300 --multi-instance
    """
    from genpromp_annotate.toy.world import write_split

    meta = write_split(out_dir, split, n_images, seed=seed, novel=novel, size=size, multi_instance=multi_instance)
    click.echo(f"{n_images} images ({size[0]}×{size[1]}) written; metadata in {meta}")


@click.command("toy-model")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
def toy_model_command(out_dir: Path) -> None:
    """Write the shipped toy model (a small Stable Diffusion trained on the toy world) as a diffusers folder.

    It localizes the toy world's shapes with the `toy` preset (64-px images); it knows nothing of
    real photographs. Use it to try the tool end to end and to check where boxes land.

    \b
    Example:
      genpromp-annotate toy-model /tmp/toy-sd
      genpromp-annotate localize --model /tmp/toy-sd --preset toy --label circle image.png
    """
    from genpromp_annotate.toy.weights import toy_weights_meta, write_toy_model

    path = write_toy_model(out_dir)
    meta = toy_weights_meta()
    click.echo(f"toy model written to {path} (trained {meta.get('step', '?')} steps)")


def register(group: click.Group) -> None:
    group.add_command(toy_world_command)
    group.add_command(toy_model_command)
