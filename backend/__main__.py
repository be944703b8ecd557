"""Start the ML backend: `python -m genpromp_annotate_backend` (or `genpromp-annotate serve`), settings from the environment.

Production: `uvicorn --factory genpromp_annotate_backend.__main__:create_app_from_env --workers 2 --port 9090`, or gunicorn
with uvicorn workers: `gunicorn -k uvicorn.workers.UvicornWorker 'genpromp_annotate_backend.__main__:create_app_from_env()'`.
Each worker process loads the model once, before it accepts requests.

Environment:
  GENPROMP_PROJECT          default project-store project (Label Studio `extra_params` {"project": NAME} wins)
  GENPROMP_DATABASE_URL     the project store (default SQLite under GENPROMP_HOME)
  GENPROMP_MODEL            without a store project: the Stable Diffusion model to use directly
  GENPROMP_TOKENS           with GENPROMP_MODEL: a learned_embeds.safetensors file or a folder of them
  GENPROMP_PRESET           with GENPROMP_MODEL: paper | cub-paper | imagenet-paper | multi-instance
  GENPROMP_DEVICE, GENPROMP_DTYPE
  GENPROMP_BACKEND_HOST (0.0.0.0), GENPROMP_BACKEND_PORT (9090), GENPROMP_BACKEND_WORKERS (1 process),
  GENPROMP_BACKEND_THREADS (4 predict/download threads per process), GENPROMP_BATCH_SIZE (8)
  GENPROMP_BACKEND_STATE_DIR  shares /setup data between worker processes
  BASIC_AUTH_USER, BASIC_AUTH_PASS      require HTTP basic auth on every endpoint
  LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY, GENPROMP_MEDIA_ROOTS, GENPROMP_MEDIA_ALLOWED_HOSTS (see genpromp_annotate.labelstudio.media)
  GENPROMP_RETRAIN_EVERY    new human boxes that trigger a re-calibration (0: only START_TRAINING)
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from genpromp_annotate.errors import ConfigError
from genpromp_annotate.log import get_logger, set_verbosity
from genpromp_annotate.presets import preset
from genpromp_annotate.project.settings import calibrate_omegas
from genpromp_annotate_backend.app import BackendSettings, BackendState, create_app
from genpromp_annotate_backend.projects import ModelProject, ProjectBackend, read_tokens_dir, shared_model

logger = get_logger(__name__)


def project_factory_from_env():
    """name → project: a project-store project when a name is given (or GENPROMP_PROJECT is set),
    else the model of GENPROMP_MODEL used directly."""
    env = os.environ
    device, dtype = env.get("GENPROMP_DEVICE") or None, env.get("GENPROMP_DTYPE") or None

    def factory(name: str | None) -> ProjectBackend:
        if name:
            from genpromp_annotate_backend.store_project import StoreProject

            return StoreProject.open(name, env.get("GENPROMP_DATABASE_URL"), device=device, dtype=dtype,
                                     calibrate_omegas=calibrate_omegas(env.get("GENPROMP_CALIBRATE_OMEGAS")))
        source = env.get("GENPROMP_MODEL")
        if not source:
            raise ConfigError("no project: set GENPROMP_PROJECT (or `serve --project NAME`), put "
                              "{\"project\": NAME} in the Label Studio ML backend's extra params, or set "
                              "GENPROMP_MODEL to use a model without a project store")
        tokens = read_tokens_dir(Path(env["GENPROMP_TOKENS"])) if env.get("GENPROMP_TOKENS") else {}
        config = preset(env.get("GENPROMP_PRESET") or "paper")
        return ModelProject(None, shared_model(source, device, dtype), config, tokens)

    return factory


def create_app_from_env() -> FastAPI:
    """The app for one worker process; the default project (and its model) is loaded here, up front."""
    set_verbosity(int(os.environ.get("GENPROMP_BACKEND_VERBOSE", "1")))
    settings = BackendSettings.from_env()
    state = BackendState(settings, project_factory_from_env())
    if settings.project or os.environ.get("GENPROMP_MODEL"):
        project = state.project(None)
        logger.info("serving project %s with model version %s", project.name or "(model only)",
                    project.model_version(state.labeling_defaults()))
    return create_app(state)


def main() -> None:
    import uvicorn

    uvicorn.run(
        "genpromp_annotate_backend.__main__:create_app_from_env", factory=True,
        host=os.environ.get("GENPROMP_BACKEND_HOST", "0.0.0.0"),
        port=int(os.environ.get("GENPROMP_BACKEND_PORT", "9090")),
        workers=int(os.environ.get("GENPROMP_BACKEND_WORKERS", "1")),
        log_level=os.environ.get("GENPROMP_BACKEND_LOG_LEVEL", "info"),
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
