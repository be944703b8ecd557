"""Where a Label Studio project's boxes come from: a model (and optional learned tokens) shared by every
thread of the process, a Localizer per settings, and the model version that names them."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from genpromp_annotate.engine.loading import StableDiffusion, load_stable_diffusion, weights_digest
from genpromp_annotate.engine.localizer import Localizer
from genpromp_annotate.evaluation.calibration import ScoreCalibration
from genpromp_annotate.labelstudio.label_config import ProjectSettings
from genpromp_annotate.labelstudio.tasks import StoredBox
from genpromp_annotate.log import get_logger
from genpromp_annotate.presets import LocalizeConfig
from genpromp_annotate.project.settings import effective_config
from genpromp_annotate.project.version import ProjectSnapshot, model_version

logger = get_logger(__name__)


@dataclass
class SharedModel:
    """One loaded Stable Diffusion per process, and the lock that serialises everything touching it.

    The Localizer locks its own UNet call, but several Localizers (one per project settings) share one
    UNet, tokenizer and text encoder, and adding a concept token resizes the embedding table: every
    use of the model, from any thread, goes through `lock`.
    """

    model: StableDiffusion
    lock: threading.RLock = field(default_factory=threading.RLock)
    _unet_digest: str | None = None

    @property
    def unet_digest(self) -> str:
        if self._unet_digest is None:
            self._unet_digest = weights_digest(self.model.unet)
        return self._unet_digest


_MODELS: dict[tuple[str, str, str], SharedModel] = {}
_MODELS_LOCK = threading.Lock()


def shared_model(source: str, device: str | None = None, dtype: str | None = None) -> SharedModel:
    """The process-wide model for `source` (loaded on first use)."""
    key = (str(source), str(device), str(dtype))
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = SharedModel(load_stable_diffusion(source, device=device, dtype=dtype))
        return _MODELS[key]


class ProjectBackend(Protocol):
    """What the predictor and the webhook need from a project."""

    @property
    def name(self) -> str | None:
        """The project-store name (None for a model without a store)."""

    @property
    def categories(self) -> list[str] | None:
        """The project's category names; None when any label may be localized (no store)."""

    def model_version(self, settings: ProjectSettings) -> str:
        """The model version boxes get with these settings; cheap and lock-free (answers /setup)."""

    def localizer(self, settings: ProjectSettings) -> tuple[Localizer, str, SharedModel]:
        """A Localizer with the settings applied, its model version, and the shared model behind it."""

    def score_calibration(self, model_version: str) -> ScoreCalibration | None:
        """The version's raw score → P(IoU ≥ 0.5) map, fitted on human boxes; None: send raw scores."""

    def record_predictions(self, model_version: str, boxes: Sequence[StoredBox]) -> None:
        """Keep model boxes in the store (no-op without one)."""

    def record_human_boxes(self, annotation_id: str, boxes: Sequence[StoredBox], image_value: str,
                           weak_category: str | None, fetcher: Any, task_id: Any = None) -> int:
        """Replace the boxes of one human annotation; returns how many were stored."""

    def delete_human_boxes(self, annotation_id: str) -> int:
        """Remove the boxes of a deleted annotation; returns how many were removed."""

    def improve(self, settings: ProjectSettings) -> dict[str, Any]:
        """Re-calibrate on human boxes and train missing tokens; returns what changed."""


@dataclass
class ModelProject:
    """A project without a store: a model, optional learned tokens `{label: (D,) tensor}`, base settings.

    Human boxes from the webhook are kept in memory only; there is nothing to re-calibrate against
    across restarts, so `improve` reports that a store is needed.
    """

    name: str | None
    shared: SharedModel
    base_config: LocalizeConfig = field(default_factory=LocalizeConfig)
    tokens: dict[str, torch.Tensor] = field(default_factory=dict)
    labels: list[str] | None = None
    human_boxes: dict[str, list[StoredBox]] = field(default_factory=dict)  # annotation id → boxes

    def __post_init__(self) -> None:
        self._localizers: dict[str, Localizer] = {}
        with self.shared.lock:
            self._tokens_digest = self._build(self.base_config).tokens_digest

    @property
    def categories(self) -> list[str] | None:
        return self.labels

    def config_for(self, settings: ProjectSettings) -> LocalizeConfig:
        return effective_config(self.base_config, settings.preset, settings.config_changes())

    def model_version(self, settings: ProjectSettings) -> str:
        snapshot = ProjectSnapshot(self.shared.model.source, self.base_config, None, None, self._tokens_digest,
                                   tuple(self.labels or ()))
        return model_version(snapshot, self.config_for(settings), settings.min_score).name

    def _build(self, config: LocalizeConfig) -> Localizer:
        loc = self._localizers.get(config.box_settings_key)
        if loc is None:
            loc = Localizer(self.shared.model, config)
            for label, vector in self.tokens.items():
                loc.set_concept_token(label, vector)
            self._localizers[config.box_settings_key] = loc
        return loc

    def localizer(self, settings: ProjectSettings) -> tuple[Localizer, str, SharedModel]:
        with self.shared.lock:
            loc = self._build(self.config_for(settings))
        return loc, self.model_version(settings), self.shared

    def score_calibration(self, model_version: str) -> ScoreCalibration | None:
        return None  # fitted on stored human boxes: a project without a store has none

    def record_predictions(self, model_version: str, boxes: Sequence[StoredBox]) -> None:
        logger.debug("project %s has no store: %d predicted box(es) not kept", self.name, len(boxes))

    def record_human_boxes(self, annotation_id: str, boxes: Sequence[StoredBox], image_value: str,
                           weak_category: str | None, fetcher: Any, task_id: Any = None) -> int:
        self.human_boxes[annotation_id] = list(boxes)
        return len(boxes)

    def delete_human_boxes(self, annotation_id: str) -> int:
        return len(self.human_boxes.pop(annotation_id, []))

    def improve(self, settings: ProjectSettings) -> dict[str, Any]:
        return {"skipped": "no project store: serve with --project NAME to re-calibrate and train"}


def read_tokens_dir(path: Path) -> dict[str, torch.Tensor]:
    """Learned tokens from a `learned_embeds.safetensors` file or a folder of them: `{label: (D,)}`.

    A token `<golden-retriever>` serves the label `golden retriever` (and `golden-retriever`).
    """
    from genpromp_annotate.engine.tokens import read_learned_embeds

    files = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")) if path.is_dir() else [path]
    tokens: dict[str, torch.Tensor] = {}
    for file in files:
        for token, vector in read_learned_embeds(file).items():
            tokens[token.strip("<>").replace("-", " ")] = vector.reshape(-1)
    return tokens
