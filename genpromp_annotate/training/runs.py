"""train-project as a library: categories from the store → stage 1 (and 2) → embeddings, UNet and run rows.

Crash safety: a category's embedding is committed to the store the moment it finishes, and the
in-flight tokens (with their AdamW state) are checkpointed atomically every N steps, per process, under
`$GENPROMP_HOME/projects/<project>/runs/<run id>/`. `resume=True` takes the last unfinished run, skips
every category already stored by it, and continues the in-flight ones from the checkpoints — whichever
process wrote them, so a resumed run may use a different number of processes.

Scale-out: every process (see distributed.py) trains its own shard of the categories (balanced by image
count) and writes its results to the shared store; rank 0 owns the run rows.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genpromp_annotate.errors import ConfigError, StoreError
from genpromp_annotate.log import get_logger
from genpromp_annotate.training.checkpoints import export_learned_embeds, load_checkpoint, save_checkpoint
from genpromp_annotate.training.concept_tokens import ConceptTrainer, ConceptTrainingConfig, forwards_for
from genpromp_annotate.training.data import CategoryImages
from genpromp_annotate.training.distributed import ProcessContext, process_context, shard_by_weight
from genpromp_annotate.training.unet_finetune import UnetFinetuneConfig, UnetFinetuner, save_unet

logger = get_logger(__name__)

CONCEPT_RUN = "concept_tokens"
UNET_RUN = "unet_finetune"


@dataclass(frozen=True)
class TrainOptions:
    """What `train-project` was asked to do."""

    concept: ConceptTrainingConfig = field(default_factory=ConceptTrainingConfig)
    unet: UnetFinetuneConfig | None = None  # None: no stage 2
    retrain: bool = False  # train every category, not only those without a token
    resume: bool = False  # continue the last unfinished run
    checkpoint_every: int = 20  # steps between checkpoints (0 = never)
    select_unet: bool = True  # make the finetuned UNet the project's inference UNet
    export_dir: Path | None = None  # also write diffusers learned_embeds files here
    device: str | None = None
    dtype: str | None = None


@dataclass
class TrainEvent:
    """A progress event for the CLI: kind is "plan", "step", "category", "unet-step" or "unet-saved"."""

    kind: str
    rank: int
    step: int = 0
    total: int = 0  # planned forwards (stage 1) or steps (stage 2) of this process
    images: int = 0
    loss: float = 0.0
    seconds: float = 0.0
    label: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainSummary:
    run_id: int | None
    trained: list[str]  # labels trained by this process
    skipped: list[str]  # labels without images
    images: int
    seconds: float
    unet_images: int = 0  # stage 2 images seen by this process
    unet_run_id: int | None = None
    unet_path: str | None = None
    unet_digest: str | None = None
    exported: list[Path] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def project_artifact_dir(project_name: str, project_id: int) -> Path:
    """`$GENPROMP_HOME/projects/<name>-<id>`: checkpoints and finetuned UNets of a project."""
    from genpromp_annotate.store.database import genpromp_home

    slug = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in project_name).strip(".") or "project"
    return genpromp_home() / "projects" / f"{slug}-{project_id}"


def run_checkpoint_dir(project_name: str, project_id: int, run_id: int) -> Path:
    return project_artifact_dir(project_name, project_id) / "runs" / str(run_id)


# ---- planning (rank 0) ---------------------------------------------------------------------------------------
@dataclass
class _Plan:
    run_id: int | None
    project_id: int
    base_model: str
    labels: list[str]  # categories to train in stage 1, in category-id order
    concept: dict[str, Any]  # the ConceptTrainingConfig to use (the stored one when resuming)


def _category_images(session, project) -> dict[int, list[str]]:
    """Category id → URIs of its readable images (images in error are left out)."""
    from genpromp_annotate.store import queries as q

    return q.readable_image_uris_by_category(session, project)


def _unfinished_run(session, project_id: int, kind: str):
    """The latest run of `kind` that did not finish (running after a kill, failed, or queued)."""
    from genpromp_annotate.store import queries as q
    from genpromp_annotate.store.models import Project

    runs = q.unfinished_runs(session, session.get(Project, project_id), kind)
    return runs[-1] if runs else None


def _plan_stage1(store, project_name: str, options: TrainOptions) -> _Plan:
    from genpromp_annotate.store import queries as q

    with store.write() as session:
        project = q.get_project(session, project_name)
        categories = q.list_categories(session, project)
        if options.resume:
            run = _unfinished_run(session, project.id, CONCEPT_RUN)
            if run is not None:
                wanted = set(run.config.get("categories", []))
                started = run.started_at or run.created_at
                labels = [c.name for c in categories if c.name in wanted and not (
                    c.training_state == "trained" and c.trained_at is not None and c.trained_at >= started)]
                q.update_training_run(session, run.id, status="running")
                logger.info("resuming run #%d: %d of %d categories left", run.id, len(labels), len(wanted))
                return _Plan(run.id, project.id, project.base_model, labels, run.config["training"])
            logger.info("no unfinished run to resume in project %s; starting a new one", project_name)
        labels = [c.name for c in categories if options.retrain or c.training_state != "trained" or c.embedding is None]
        if not labels:
            return _Plan(None, project.id, project.base_model, [], options.concept.as_dict())
        config = {"training": options.concept.as_dict(), "categories": labels, "retrain": options.retrain,
                  "checkpoint_every": options.checkpoint_every, "base_model": project.base_model,
                  "device": options.device, "dtype": options.dtype}
        run = q.create_training_run(session, project, CONCEPT_RUN, config, status="running")
        for category in categories:
            if category.name in labels:
                category.training_state = "training"
        return _Plan(run.id, project.id, project.base_model, labels, options.concept.as_dict())


def _categories_for(store, project_name: str, labels: list[str]) -> tuple[list[CategoryImages], list[str], dict]:
    """CategoryImages of `labels` (in store order), the labels without images, and the stored embeddings."""
    from genpromp_annotate.sources import path_for_uri
    from genpromp_annotate.store import queries as q

    with store.read() as session:
        project = q.get_project(session, project_name)
        rows = q.list_categories(session, project)
        images = _category_images(session, project)
        embeddings = {c.concept_token: q.category_embedding(c) for c in rows}
    wanted = set(labels)
    result, skipped = [], []
    for row in rows:
        if row.name not in wanted:
            continue
        uris = images.get(row.id, [])
        if not uris:
            skipped.append(row.name)
            continue
        if row.meta_token_id is None:
            raise StoreError(f"category {row.name!r} has no meta token id; re-add it with `labels … add`")
        paths = tuple(str(path_for_uri(u) or u) for u in uris)
        result.append(CategoryImages(row.name, row.concept_token, int(row.meta_token_id), paths))
    return result, skipped, embeddings


def _merge_checkpoints(folder: Path) -> dict[str, Any] | None:
    """One trainer state from every process's checkpoint in `folder` (tokens are disjoint across ranks)."""
    merged: dict[str, Any] | None = None
    for path in sorted(folder.glob("rank*.pt")):
        state = load_checkpoint(path)
        if state is None:
            continue
        if merged is None:
            merged = {"config": state["config"], "global_step": 0, "active": [], "finished": {}, "pending": []}
        merged["global_step"] = max(merged["global_step"], int(state.get("global_step", 0)))
        merged["active"].extend(state.get("active", []))
        merged["finished"].update(state.get("finished", {}))
    return merged


def _lock_run(session, run_id: int) -> None:
    """Row-lock the run on PostgreSQL so concurrent metric merges from several processes do not lose updates."""
    from genpromp_annotate.store import queries as q

    q.lock_training_run(session, run_id)


def _record_category(store, project_name: str, run_id: int | None, result, total: int) -> None:
    from genpromp_annotate.store import queries as q

    with store.write() as session:
        if run_id is not None:
            _lock_run(session, run_id)
        project = q.get_project(session, project_name)
        category = q.get_category(session, project, result.label)
        q.set_category_embedding(category, result.embedding.float(), state="trained")
        if run_id is not None:
            from genpromp_annotate.store.models import TrainingRun

            run = session.get(TrainingRun, run_id)
            started = run.started_at or run.created_at
            wanted = set(run.config.get("categories", []))
            session.flush()
            done = q.categories_trained_since(session, project, started)
            finished = len(wanted & set(done))
            q.update_training_run(session, run_id, progress=finished / max(total, 1),
                                  metrics={"categories_done": finished})


def _load_model(plan_base_model: str, context: ProcessContext, options: TrainOptions, model: Any):
    if model is not None:
        return model
    from genpromp_annotate.engine.loading import load_stable_diffusion

    return load_stable_diffusion(plan_base_model, device=context.device, dtype=options.dtype, training=True)


# ---- the whole job ------------------------------------------------------------------------------------------
def train_project(store, project_name: str, options: TrainOptions | None = None,
                  on_event: Callable[[TrainEvent], None] | None = None, model: Any = None,
                  context: ProcessContext | None = None) -> TrainSummary:
    """Stage 1 for the project's categories without a token (all with `retrain`), then stage 2 if asked.

    Every process of a launched run calls this with the same arguments. Returns this process's summary.
    `model` (optional) is an already loaded base model for stage 1, which leaves its weights untouched.
    """
    options = options or TrainOptions()
    context = context or process_context(options.device)
    emit = on_event or (lambda event: None)
    started = time.perf_counter()

    plan: _Plan | BaseException | None = None
    if context.is_main:
        try:
            plan = _plan_stage1(store, project_name, options)
        except Exception as exc:  # noqa: BLE001 - every process must learn of it, or the others wait forever
            plan = exc
    plan = context.broadcast(plan)
    if isinstance(plan, BaseException):
        raise plan
    if not isinstance(plan, _Plan):
        raise StoreError("training could not be planned (no answer from the main process)")
    summary = TrainSummary(run_id=plan.run_id, trained=[], skipped=[], images=0, seconds=0.0)
    concept = ConceptTrainingConfig.from_dict(plan.concept)
    loaded = None
    try:
        if plan.labels:
            categories, summary.skipped, _ = _categories_for(store, project_name, plan.labels)
            mine = shard_by_weight(categories, [len(c.images) for c in categories], context.rank, context.world_size)
            loaded = _load_model(plan.base_model, context, options, model)
            logger.info("rank %d/%d: %d of %d categories on %s (%s); config %s", context.rank, context.world_size,
                        len(mine), len(categories), loaded.device, loaded.dtype, concept.as_dict())
            _run_stage1(store, project_name, plan, concept, mine, len(categories), loaded, context, options, emit,
                        summary)
        images = sum(context.gather(summary.images))  # a collective: every process takes part
        context.barrier()
        if context.is_main and plan.run_id is not None:
            _finish_run(store, plan.run_id, images, context.world_size)
        if options.unet is not None:
            # Stage 2 trains the UNet in place, so it never borrows the caller's model: it loads its own
            # copy of the base model (a finetune always starts from the base UNet).
            own = model is None and loaded is not None
            loaded = loaded if own else _load_model(plan.base_model, context, options, None)
            _run_stage2(store, project_name, plan, loaded, context, options, emit, summary)
        if options.export_dir is not None and context.is_main:
            _, _, embeddings = _categories_for(store, project_name, [])
            trained = {token: vector for token, vector in embeddings.items() if vector is not None}
            if trained:
                summary.exported = export_learned_embeds(options.export_dir, trained)
    except BaseException as exc:
        _fail_runs(store, summary, exc)
        raise
    summary.seconds = time.perf_counter() - started
    return summary


def _run_stage1(store, project_name: str, plan: _Plan, concept: ConceptTrainingConfig,
                mine: list[CategoryImages], total_categories: int, model, context: ProcessContext,
                options: TrainOptions, emit, summary: TrainSummary) -> None:
    folder = run_checkpoint_dir(project_name, plan.project_id, plan.run_id or 0)
    checkpoint = folder / f"rank{context.rank}.pt"
    trainer = ConceptTrainer(model, mine, concept)
    context.barrier()  # every process reads the checkpoints before any overwrites its own
    if options.resume and folder.is_dir():
        state = _merge_checkpoints(folder)
        if state is not None:
            trainer.load_state_dict(state)
    context.barrier()
    planned = sum(forwards_for(c, concept) for c in mine)
    done_before = sum(e.next_chunk for e in trainer.active)
    emit(TrainEvent("plan", context.rank, step=done_before, total=planned,
                    detail={"categories": [c.label for c in mine], "run_id": plan.run_id}))
    forwards = done_before
    while (report := trainer.step()) is not None:
        forwards += len(report.category_losses)
        summary.images += report.images
        for result in report.finished:
            _record_category(store, project_name, plan.run_id, result, total_categories)
            summary.trained.append(result.label)
            emit(TrainEvent("category", context.rank, step=forwards, total=planned, label=result.label,
                            loss=result.last_loss, detail={"steps": result.steps, "first_loss": result.first_loss}))
        emit(TrainEvent("step", context.rank, step=forwards, total=planned, images=report.images, loss=report.loss,
                        seconds=report.seconds))
        if options.checkpoint_every and trainer.global_step % options.checkpoint_every == 0 and not trainer.done:
            save_checkpoint(checkpoint, trainer.state_dict())


def _finish_run(store, run_id: int, images: int, world_size: int) -> None:
    from genpromp_annotate.store import queries as q
    from genpromp_annotate.store.models import Project, utc_now

    with store.write() as session:
        _lock_run(session, run_id)
        run = q.update_training_run(session, run_id, status="done", progress=1.0)
        seconds = max(((run.finished_at or utc_now()) - (run.started_at or run.created_at)).total_seconds(), 1e-9)
        q.update_training_run(session, run_id, metrics={"images": images, "processes": world_size,
                                                        "seconds": round(seconds, 2),
                                                        "images_per_s": round(images / seconds, 3)})
        project = session.get(Project, run.project_id)
        # categories of the run that could not be trained (no images) are untrained, not "training"
        for category in q.categories_in_state(session, project, "training"):
            category.training_state = "untrained"
        folder = run_checkpoint_dir(project.name, project.id, run_id)
    # The run is complete: its in-flight checkpoints are no longer needed.
    shutil.rmtree(folder, ignore_errors=True)


def _run_stage2(store, project_name: str, plan: _Plan, model, context: ProcessContext, options: TrainOptions,
                emit, summary: TrainSummary) -> None:
    from genpromp_annotate.store import queries as q

    assert options.unet is not None
    with store.read() as session:
        labels = [c.name for c in q.list_categories(session, q.get_project(session, project_name))]
    categories, _, embeddings = _categories_for(store, project_name, labels)
    vectors = {token: vector for token, vector in embeddings.items() if vector is not None}
    untrained = [c.label for c in categories if c.token not in vectors]
    if untrained:
        raise ConfigError(f"--finetune-unet needs every category trained; untrained: {', '.join(untrained)}")
    if not categories:
        raise ConfigError(f"project {project_name!r} has no images to finetune the UNet on")
    run_id = None
    unet_config = options.unet
    if context.is_main:
        with store.write() as session:
            project = q.get_project(session, project_name)
            previous = _unfinished_run(session, project.id, UNET_RUN) if options.resume else None
            if previous is not None:
                run_id, stored = previous.id, dict(previous.config["training"])
                q.update_training_run(session, run_id, status="running")
            else:
                run_id = q.create_training_run(session, project, UNET_RUN,
                                               {"training": options.unet.as_dict(), "base_model": project.base_model,
                                                "processes": context.world_size}, status="running").id
                stored = options.unet.as_dict()
        unet_config = UnetFinetuneConfig.from_dict(stored)
    run_id, unet_config = context.broadcast((run_id, unet_config))
    if run_id is None:
        raise StoreError("the UNet finetune run could not be created")
    summary.unet_run_id = run_id
    finetuner = UnetFinetuner(model, categories, vectors, unet_config, context)
    checkpoint = run_checkpoint_dir(project_name, plan.project_id, run_id) / "unet.pt"
    if options.resume:
        state = load_checkpoint(checkpoint, kind=UNET_RUN)
        if state is not None:
            finetuner.load_state_dict(state)
            logger.info("UNet finetune run #%d resumed at step %d", run_id, finetuner.global_step)
    total = unet_config.max_steps
    losses = []
    while (report := finetuner.step()) is not None:
        losses.append(report.loss)
        summary.unet_images += report.images
        emit(TrainEvent("unet-step", context.rank, step=report.step, total=total, images=report.images,
                        loss=report.loss, seconds=report.seconds))
        # DDP replicas are identical: the main process alone writes the checkpoint.
        if (options.checkpoint_every and context.is_main and finetuner.at_step_boundary and not finetuner.done
                and report.step % options.checkpoint_every == 0):
            save_checkpoint(checkpoint, finetuner.state_dict(), kind=UNET_RUN)
    context.barrier()
    if context.is_main:
        with store.read() as session:
            project = q.get_project(session, project_name)
            folder = project_artifact_dir(project.name, project.id) / "unets"
        path, digest = save_unet(finetuner.finetuned_unet(), folder)
        with store.write() as session:
            project = q.get_project(session, project_name)
            if options.select_unet:
                q.select_unet(session, project, str(path), digest)
            q.update_training_run(session, run_id, status="done", progress=1.0, output_path=str(path),
                                  metrics={"steps": finetuner.global_step, "digest": digest,
                                           "first_loss": round(losses[0], 5) if losses else None,
                                           "last_loss": round(losses[-1], 5) if losses else None})
        summary.unet_path, summary.unet_digest = str(path), digest
        shutil.rmtree(checkpoint.parent, ignore_errors=True)
        emit(TrainEvent("unet-saved", context.rank, step=finetuner.global_step, total=total,
                        detail={"path": str(path), "digest": digest, "selected": options.select_unet}))
    context.barrier()


def _fail_runs(store, summary: TrainSummary, exc: BaseException) -> None:
    """Mark this job's open runs failed (a KeyboardInterrupt counts; SIGKILL leaves them running)."""
    from genpromp_annotate.store import queries as q
    from genpromp_annotate.store.models import TrainingRun

    message = f"{type(exc).__name__}: {exc}"[:2000]
    try:
        with store.write() as session:
            for run_id in (summary.run_id, summary.unet_run_id):
                if run_id is not None:
                    run = session.get(TrainingRun, run_id)
                    if run is not None and run.status == "running":
                        q.update_training_run(session, run_id, status="failed", error=message)
    except Exception:  # the store itself may be what failed; the original error matters more
        logger.exception("could not mark the training run failed")


def unfinished_runs(store, project_name: str) -> list[tuple[int, str]]:
    """(id, kind) of the project's runs that did not finish: killed, crashed, or still running elsewhere."""
    from genpromp_annotate.store import queries as q

    with store.read() as session:
        project = q.get_project(session, project_name)
        return [(int(run.id), str(run.kind)) for run in q.unfinished_runs(session, project)]


def stored_embedding(store, project_name: str, label: str) -> torch.Tensor | None:
    """The learned embedding of `label` in the store (None when untrained)."""
    from genpromp_annotate.store import queries as q

    with store.read() as session:
        return q.category_embedding(q.get_category(session, q.get_project(session, project_name), label))
