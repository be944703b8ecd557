"""The model version of a project's boxes, from one snapshot of what produces them (no model needed)."""

from __future__ import annotations

from dataclasses import dataclass

from genpromp_annotate.engine.tokens import concept_tokens_digest, embedding_digest
from genpromp_annotate.presets import LocalizeConfig
from genpromp_annotate.project.settings import config_for_project
from genpromp_annotate.store import queries as q
from genpromp_annotate.store.database import Store
from genpromp_annotate.store.model_version import ModelVersionParts, model_version_for


@dataclass(frozen=True)
class ProjectSnapshot:
    """What a project's boxes depend on, read in one short transaction."""

    base_model: str
    config: LocalizeConfig  # the project's stored settings
    unet_path: str | None
    unet_digest: str | None  # None with a unet_path: not recorded yet (computed when the UNet loads)
    tokens_digest: str  # equals Localizer.tokens_digest once the tokens are set
    categories: tuple[str, ...]


def read_snapshot(store: Store, project_name: str) -> ProjectSnapshot:
    with store.read() as session:
        project = q.get_project(session, project_name)
        categories = q.list_categories(session, project)
        digests = {c.name: embedding_digest(embedding.float()) for c in categories
                   if (embedding := q.category_embedding(c)) is not None}
        forced = {c.name: c.meta_token for c in categories if c.meta_forced}
        return ProjectSnapshot(project.base_model, config_for_project(project), project.unet_path,
                               project.unet_digest if project.unet_path else None,
                               concept_tokens_digest(digests, forced), tuple(c.name for c in categories))


def model_version(snapshot: ProjectSnapshot, config: LocalizeConfig | None = None, min_score: float = 0.0,
                  unet_digest: str | None = None) -> ModelVersionParts:
    """The one place a project's model version is worked out.

    Args:
        config: the effective config (default: the project's stored one).
        min_score: a score floor applied to the boxes (the Label Studio backend's), part of the version.
        unet_digest: the selected UNet's digest when the snapshot has none recorded.
    """
    config = config or snapshot.config
    key = config.box_settings_key + (f"|min{min_score}" if min_score else "")
    unet = (snapshot.unet_digest or unet_digest) if snapshot.unet_path else None
    return model_version_for(snapshot.base_model, snapshot.tokens_digest, unet, key)
