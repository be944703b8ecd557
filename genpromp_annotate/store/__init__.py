"""The project store: SQLAlchemy 2 ORM, SQLite (default) or PostgreSQL, Alembic migrations.

API (importable from here, loaded lazily):

    open_store(url=None) -> Store                  # default SQLite at $GENPROMP_HOME/genpromp.db;
                                                   # creates a new database, refuses an old schema
    store.read() / store.write()                   # context managers yielding a Session; write() takes
                                                   # SQLite's write lock up front (BEGIN IMMEDIATE)
    genpromp_home(), default_database_url()

    get_project(session, name) -> Project          # StoreError naming the `init` command when missing
    create_project(session, name, base_model, settings)
    select_unet(session, project, unet_path, unet_digest)
    list_categories(session, project) / get_category(session, project, name)   # UnknownLabelError
    add_category(session, project, name, meta_token, concept_token, meta_token_id=None)
    set_category_embedding(category, tensor, state="trained")   # stores bytes + dtype + shape
    category_embedding(category) -> torch.Tensor | None
    create_training_run(session, project, kind, config, status="queued") -> TrainingRun
    update_training_run(session, run_id, status=, progress=, metrics=, error=, output_path=)
    add_predictions(session, image, model_version, [(category, box), ...], source="model"|"human",
                    replace=True, external_id=None)
    model_version_for(base_model, tokens_digest, unet_digest_or_None, box_settings_key) -> ModelVersionParts
                                                   # .name == "gp-<digest12>"
    record_model_version(session, project, parts)

Models: Project, Category, TrainingRun, Image (weak labels in `.categories`), Prediction, ModelVersion.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "open_store": "database", "Store": "database", "genpromp_home": "database",
    "default_database_url": "database", "create_store_engine": "database",
    "Base": "models", "Project": "models", "Category": "models", "TrainingRun": "models", "Image": "models",
    "Prediction": "models", "ModelVersion": "models", "utc_now": "models",
    "ModelVersionParts": "model_version", "model_version_for": "model_version",
    "ensure_schema": "schema", "upgrade_schema": "schema", "head_revision": "schema",
    "get_project": "queries", "find_project": "queries", "create_project": "queries", "select_unet": "queries",
    "list_categories": "queries", "get_category": "queries", "find_category": "queries",
    "add_category": "queries", "set_category_embedding": "queries", "category_embedding": "queries",
    "create_training_run": "queries", "update_training_run": "queries", "add_predictions": "queries",
    "record_model_version": "queries", "find_image_by_hash": "queries",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"genpromp_annotate.store.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'genpromp_annotate.store' has no attribute {name!r}")
