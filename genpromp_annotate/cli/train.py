"""`train-project`: learn the concept tokens of a project's labels, optionally finetune the UNet."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click


class _Progress:
    """One progress bar per stage on the main process, with the loss and images/s beside it."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.position = 0
        self.stage = "tokens"
        self.images = 0
        self.seconds = 0.0

    def open(self, label: str, total: int, start: int = 0) -> None:
        self.close()
        if not self.enabled:
            return
        from tqdm import tqdm

        self.bar = tqdm(total=max(total, 1), initial=start, desc=label, unit="step", file=sys.stderr,
                        dynamic_ncols=True)
        self.position, self.images, self.seconds = start, 0, 0.0

    def advance(self, to: int, loss: float, images: int, seconds: float) -> None:
        self.images += images
        self.seconds += seconds
        if self.bar is not None:
            rate = self.images / self.seconds if self.seconds > 0 else 0.0
            self.bar.set_postfix_str(f"loss {loss:.4f}, {rate:.2f} images/s", refresh=False)
            self.bar.update(max(to - self.position, 0))
            self.position = max(to, self.position)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@click.command("train-project")
@click.argument("project")
@click.option("--preset", "recipe_name", type=click.Choice(["cub-paper", "imagenet-paper"]), default=None,
              help="The paper's training recipe for that dataset (batch, accumulation, LR scaling, steps of both "
                   "stages); other options override its values. Default: the project's preset when it names one, "
                   "else stage 1 as the paper and a small stage 2 (batch 4, no accumulation).")
@click.option("--retrain", is_flag=True, help="Train every label, also those that already have a token.")
@click.option("--resume", is_flag=True,
              help="Continue the last unfinished run (after a crash or kill) with that run's settings: "
                   "finished labels are kept, in-flight ones continue from their last checkpoint.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Passes over each label's images [2].")
@click.option("--steps", "max_steps", type=click.IntRange(min=1), default=None,
              help="Optimizer steps per label (replaces --epochs).")
@click.option("--lr", "learning_rate", type=float, default=None,
              help="Learning rate per image [5e-5]; multiplied by batch size × accumulation unless --no-scale-lr.")
@click.option("--no-scale-lr", is_flag=True, help="Use --lr as given.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Images of one label per step [4].")
@click.option("--grad-accum", type=click.IntRange(min=1), default=None, help="Forwards per token update [1].")
@click.option("--categories-per-step", type=click.IntRange(min=1), default=None,
              help="Labels trained together in one UNet call [4], so the UNet batch is 4 × --batch-size; "
                   "each label still sees only its own images.")
@click.option("--resolution", type=int, default=None, help="Training image side in pixels, a multiple of 64 [the project's image size: 512, or 64 for the toy preset].")
@click.option("--seed", type=int, default=None, help="Seed of augmentations, timesteps and noise [0].")
@click.option("--gradient-checkpointing", is_flag=True, help="Trade compute for memory in the UNet.")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=20, show_default=True,
              help="Steps between checkpoints of the in-flight tokens (0: never).")
@click.option("--finetune-unet", is_flag=True,
              help="Stage 2: finetune the whole UNet on 0.5·f_r + 0.5·f_d, save it as a new model version "
                   "and select it for annotation.")
@click.option("--unet-steps", type=click.IntRange(min=1), default=None, help="Stage 2 optimizer steps [250].")
@click.option("--unet-lr", type=float, default=None, help="Stage 2 learning rate [5e-6].")
@click.option("--unet-batch-size", type=click.IntRange(min=1), default=None, help="Stage 2 images per process [4].")
@click.option("--no-select-unet", is_flag=True, help="Save the finetuned UNet but keep the current one selected.")
@click.option("--export-tokens", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write every learned token as DIR/<token>/learned_embeds.safetensors (diffusers format).")
@click.option("--device", default=None, help="torch device (cuda, cpu, mps). Default: best available; the "
                                             "process's own GPU under accelerate launch.")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default=None,
              help="Weights of the frozen model. Default: bfloat16/float16 on CUDA, float32 on CPU.")
@click.pass_context
def train_project_command(ctx: click.Context, project: str, recipe_name: str | None, retrain: bool, resume: bool,
                          epochs: int | None,
                          max_steps: int | None, learning_rate: float | None, no_scale_lr: bool,
                          batch_size: int | None, grad_accum: int | None, categories_per_step: int | None,
                          resolution: int | None, seed: int | None, gradient_checkpointing: bool,
                          checkpoint_every: int, finetune_unet: bool, unet_steps: int | None,
                          unet_lr: float | None, unet_batch_size: int | None, no_select_unet: bool,
                          export_tokens: Path | None, device: str | None, dtype: str | None) -> None:
    """Learn one concept token per label of PROJECT (docs/method.md §5); optionally finetune the UNet.

    Trains the labels that have no token yet (all with --retrain) on the project's images: Stable
    Diffusion frozen, each token initialised from its meta token, the paper's augmentations, AdamW and
    learning rate. Several labels share each UNet call. Each token is written to the project as soon as
    it is trained, so `annotate` uses it and a crash loses nothing finished; `--resume` continues.
    The run (config, progress, metrics) shows in `status`.

    Several processes or machines: launch with accelerate; labels are split between processes
    (stage 2 splits the images), all write to the shared --db (PostgreSQL across machines).

    \b
    Example:
      genpromp-annotate train-project birds
      genpromp-annotate train-project birds --steps 20 --resolution 256 --export-tokens tokens/
      genpromp-annotate train-project birds --resume
      genpromp-annotate train-project birds --finetune-unet --unet-steps 250
      genpromp-annotate train-project imagenet --preset imagenet-paper --finetune-unet
      accelerate launch --multi_gpu --num_processes 2 -m genpromp_annotate train-project birds
    """
    from genpromp_annotate.cli.project import open_project_store
    from genpromp_annotate.training.distributed import process_context
    from genpromp_annotate.training.recipes import describe, recipe
    from genpromp_annotate.training.runs import TrainEvent, TrainOptions, train_project, unfinished_runs

    context = process_context(device)
    store = open_project_store(ctx)
    stored = _project_config(store, project)
    if resolution is None:  # train at the size the project's boxes are made at (64 for the toy preset)
        resolution = stored.image_size
    chosen = recipe(recipe_name or stored.preset)
    concept = chosen.concept.replace(
        epochs=epochs, max_steps=max_steps, learning_rate=learning_rate, batch_size=batch_size,
        grad_accum=grad_accum, categories_per_step=categories_per_step, resolution=resolution, seed=seed,
        scale_lr=False if no_scale_lr else None, gradient_checkpointing=True if gradient_checkpointing else None)
    unet = None
    if finetune_unet:
        unet = chosen.unet.replace(max_steps=unet_steps, learning_rate=unet_lr, batch_size=unet_batch_size,
                                            resolution=resolution, seed=seed,
                                            gradient_checkpointing=True if gradient_checkpointing else None)
    options = TrainOptions(concept=concept, unet=unet, retrain=retrain, resume=resume,
                           checkpoint_every=checkpoint_every, select_unet=not no_select_unet,
                           export_dir=export_tokens, device=device, dtype=dtype)
    progress = _Progress(enabled=context.is_main)
    say = click.echo if context.is_main else (lambda *a, **k: None)
    if not resume:  # a resumed run keeps its stored settings
        say(f"recipe: {chosen.name}" + (" (the paper's results for it use the original UNet)"
                                        if recipe_name and not chosen.uses_finetuned_unet else ""), err=True)
        for line in describe(concept, unet, context.world_size):
            say("  " + line, err=True)
    world = f" on {context.world_size} processes" if context.world_size > 1 else ""
    if not resume and context.is_main:
        for run_id, kind in unfinished_runs(store, project):
            click.echo(f"note: {kind} run #{run_id} did not finish (killed or failed); `train-project {project} "
                       "--resume` continues it instead of starting over", err=True)

    def on_event(event: TrainEvent) -> None:
        if event.kind == "plan":
            labels = event.detail["categories"]
            say(f"training {len(labels)} label(s){world} (run #{event.detail['run_id']}): "
                f"{', '.join(labels[:6])}{', …' if len(labels) > 6 else ''}", err=True)
            progress.open("concept tokens", event.total, event.step)
        elif event.kind == "step":
            progress.advance(event.step, event.loss, event.images, event.seconds)
        elif event.kind == "unet-step":
            if progress.bar is None or progress.stage != "unet":
                progress.open("finetune UNet", event.total)
                progress.stage = "unet"
            progress.advance(event.step, event.loss, event.images, event.seconds)
        elif event.kind == "unet-saved":
            progress.close()
            detail = event.detail
            say(f"finetuned UNet saved: {detail['path']} (digest {detail['digest']})"
                + ("; selected for annotation" if detail["selected"] else ""))

    try:
        summary = train_project(store, project, options, on_event=on_event, context=context)
    finally:
        progress.close()
    if context.world_size > 1:  # every process reports its own share
        click.echo(f"process {context.rank}/{context.world_size} trained {len(summary.trained)} label(s): "
                   f"{', '.join(summary.trained)}")
        context.barrier()
    if summary.run_id is None and unet is None:
        say(f"every label of {project!r} already has a token; use --retrain to train them again")
        return
    if summary.run_id is not None:
        say(f"run #{summary.run_id}: trained {len(summary.trained)} label(s)"
            + (" on this process" if context.world_size > 1 else "")
            + f", {summary.images} images in {summary.seconds:.1f}s ({summary.images_per_s:.2f} images/s)"
            + (f"; UNet finetune: {summary.unet_images} images" if summary.unet_path or summary.unet_images else ""))
    if summary.skipped:
        say(f"skipped (no images): {', '.join(summary.skipped)}; import images and run again")
    for path in summary.exported:
        say(f"exported {path}")
    say(f"next: genpromp-annotate status {project}   |   genpromp-annotate annotate {project}")


def _project_config(store, project: str):  # -> LocalizeConfig
    from genpromp_annotate.store import queries as q
    from genpromp_annotate.store.settings import config_for_project

    with store.read() as session:
        return config_for_project(q.get_project(session, project))


def register(group: click.Group) -> None:
    group.add_command(train_project_command)
