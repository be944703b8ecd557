"""A project's Localizer: its base model (or a shared one), selected finetuned UNet and learned tokens."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from genpromp_annotate.engine.loading import load_finetuned_unet
from genpromp_annotate.engine.tokens import versioned_token
from genpromp_annotate.log import get_logger
from genpromp_annotate.presets import LocalizeConfig
from genpromp_annotate.project.version import model_version, read_snapshot
from genpromp_annotate.store import queries as q
from genpromp_annotate.store.database import Store
from genpromp_annotate.store.model_version import ModelVersionParts

logger = get_logger(__name__)


@dataclass
class ProjectLocalizer:
    """A Localizer set up for a project, and the model version its boxes carry."""

    localizer: Any  # genpromp_annotate.engine.localizer.Localizer
    version: ModelVersionParts
    config: LocalizeConfig

    @property
    def model_version(self) -> str:
        return self.version.name


def build_localizer(store: Store, project_name: str, device: str | None = None, dtype: str | None = None,
                    model: Any = None, config: LocalizeConfig | None = None,
                    min_score: float = 0.0, speed: Any = None) -> ProjectLocalizer:
    """The project's base model (or `model`, e.g. an already loaded copy, never modified), its selected
    finetuned UNet, the concept tokens of every trained category, and the model version (recorded).

    Args:
        speed: `engine.acceleration.SpeedOptions` (--compile, --channels-last), applied to the model in place.
    """
    from genpromp_annotate.engine.acceleration import accelerate
    from genpromp_annotate.engine.loading import load_stable_diffusion, weights_digest
    from genpromp_annotate.engine.localizer import Localizer

    snapshot = read_snapshot(store, project_name)
    with store.read() as session:
        categories = q.list_categories(session, q.get_project(session, project_name))
        trained = [(c.name, c.concept_token, q.category_embedding(c)) for c in categories]
        forced = {c.name: c.meta_token for c in categories if c.meta_forced}
    config = config or snapshot.config
    if model is None:
        model = load_stable_diffusion(snapshot.base_model, device=device, dtype=dtype)
    unet_id = None
    if snapshot.unet_path:
        # A copy of the model record around the project's UNet: `model` may be shared by other projects.
        model = dataclasses.replace(model, unet=load_finetuned_unet(model, snapshot.unet_path))
        unet_id = snapshot.unet_digest or weights_digest(model.unet)
    if speed is not None:
        accelerate(model, speed)
    localizer = Localizer(model, config)
    for name, word in forced.items():
        localizer.set_meta_word(name, word)
    for name, token, embedding in trained:
        if embedding is not None:
            localizer.set_concept_token(name, embedding.float(), versioned_token(token, embedding.float()))
    version = model_version(snapshot, config, min_score, unet_digest=unet_id)
    with store.write() as session:
        q.record_model_version(session, q.get_project(session, project_name), version)
    logger.info("project %s: model %s on %s (%s), model version %s, settings %s", project_name,
                snapshot.base_model, model.device, model.dtype, version.name, config.box_settings_key)
    return ProjectLocalizer(localizer, version, config)


def current_model_version(store: Store, project_name: str) -> str | None:
    """The model version `build_localizer` would give now, without loading the model; None when a
    selected UNet has no recorded digest yet."""
    snapshot = read_snapshot(store, project_name)
    if snapshot.unet_path and not snapshot.unet_digest:
        return None
    return model_version(snapshot).name
