"""The HTTP contract of a Label Studio ML backend (method §8): /health, /setup, /predict, /webhook, /metrics.

Inference runs in a thread pool so that the event loop keeps answering /health (1 s limit) and /setup
(3 s limit) while a /predict batch is on the UNet; webhook work runs in a background thread and the
webhook is answered at once.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import os
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from genpromp_annotate.errors import GenprompError, LabelConfigError, StoreError, UnknownLabelError
from genpromp_annotate.labelstudio.label_config import LabelingSetup, ProjectSettings, parse_label_config
from genpromp_annotate.labelstudio.media import MediaFetcher
from genpromp_annotate.log import get_logger
from genpromp_annotate_backend.feedback import Feedback
from genpromp_annotate_backend.predictor import Predictor
from genpromp_annotate_backend.projects import ProjectBackend
from genpromp_annotate_backend.setups import SetupRegistry, ls_project_id

logger = get_logger(__name__)

MODEL_CLASS = "GenPromp"


@dataclass
class BackendSettings:
    """Server settings, from the environment (see `from_env`) or the `serve` command."""

    project: str | None = None
    batch_size: int = 8
    threads: int = 4
    basic_auth_user: str | None = None
    basic_auth_pass: str | None = None
    retrain_every: int = 50

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> BackendSettings:
        """GENPROMP_PROJECT, GENPROMP_BATCH_SIZE, GENPROMP_BACKEND_THREADS, BASIC_AUTH_USER, BASIC_AUTH_PASS,
        GENPROMP_RETRAIN_EVERY (new human boxes that trigger a re-calibration; 0 = only START_TRAINING)."""
        env = os.environ if environ is None else environ
        return cls(
            project=env.get("GENPROMP_PROJECT") or None,
            batch_size=int(env.get("GENPROMP_BATCH_SIZE", 8)),
            threads=int(env.get("GENPROMP_BACKEND_THREADS", 4)),
            basic_auth_user=env.get("BASIC_AUTH_USER") or None,
            basic_auth_pass=env.get("BASIC_AUTH_PASS") or None,
            retrain_every=int(env.get("GENPROMP_RETRAIN_EVERY", 50)),
        )


@dataclass
class Metrics:
    """Counters served by /metrics (per process)."""

    started: float = field(default_factory=time.time)
    counts: Counter = field(default_factory=Counter)
    predict_seconds: float = 0.0
    model_versions: dict[str, str] = field(default_factory=dict)  # project → last model version
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **amounts: float) -> None:
        with self.lock:
            for name, amount in amounts.items():
                if name == "predict_seconds":
                    self.predict_seconds += amount
                else:
                    self.counts[name] += int(amount)

    def set_version(self, project: str | None, version: str) -> None:
        with self.lock:
            self.model_versions[project or "-"] = version

    def as_dict(self) -> dict[str, Any]:
        with self.lock:
            return {"model_class": MODEL_CLASS, "uptime_s": round(time.time() - self.started, 1),
                    "predict_seconds": round(self.predict_seconds, 3), **dict(self.counts),
                    "model_versions": dict(self.model_versions)}


class SetupRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    project: str = Field(min_length=1)
    schema_: str = Field(alias="schema", min_length=1)
    hostname: str | None = None
    access_token: str | None = None
    extra_params: Any = None


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    tasks: list[dict[str, Any]]
    project: str | None = None
    label_config: str | None = None
    params: dict[str, Any] | None = None


class WebhookRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    action: str = Field(min_length=1)
    project: dict[str, Any] | None = None
    annotation: dict[str, Any] | None = None
    task: dict[str, Any] | None = None


ProjectFactory = Callable[[str | None], ProjectBackend]


class BackendState:
    """Everything the endpoints share: one per process, built once at start-up."""

    def __init__(self, settings: BackendSettings, project_factory: ProjectFactory,
                 fetcher: MediaFetcher | None = None, registry: SetupRegistry | None = None,
                 feedback: Feedback | None = None) -> None:
        self.settings = settings
        self.fetcher = fetcher or MediaFetcher.from_env()
        self.registry = registry or SetupRegistry.from_env()
        self.predictor = Predictor(self.fetcher, batch_size=settings.batch_size, io_threads=settings.threads)
        self.metrics = Metrics()
        self._factory = project_factory
        self._projects: dict[str | None, ProjectBackend] = {}
        self._projects_lock = threading.Lock()
        # /predict calls run here, off the event loop; the model lock serialises the UNet itself.
        self.predict_pool = ThreadPoolExecutor(max_workers=max(1, settings.threads), thread_name_prefix="predict")
        self.feedback = feedback or Feedback(retrain_every=settings.retrain_every, fetcher=self.fetcher)

    def project(self, name: str | None) -> ProjectBackend:
        """The project called `name` (or the server's default), built once."""
        name = name or self.settings.project
        with self._projects_lock:
            if name not in self._projects:
                self._projects[name] = self._factory(name)
            return self._projects[name]

    def labeling_setup(self, ls_project: str | int | None, label_config: str | None) -> LabelingSetup:
        """Parse the label config with the LS project's extra params against its store project."""
        entry = self.registry.get(ls_project)
        config = label_config or (entry.schema if entry else None)
        if not config:
            raise LabelConfigError(f"Label Studio project {ls_project!r}: no label_config in the request and no "
                                   "earlier /setup for it")
        extra = entry.extra_params if entry else None
        first = parse_label_config(config, None, extra)
        project = self.project(first.settings.project)
        return parse_label_config(config, project.categories, extra)

    def labeling_defaults(self) -> ProjectSettings:
        """Settings of a Label Studio project that sets none (for start-up logging)."""
        return ProjectSettings()

    def shutdown(self) -> None:
        self.predict_pool.shutdown(wait=False, cancel_futures=True)
        self.feedback.shutdown()


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"status": "error", "detail": message})


def _status_for(exc: GenprompError) -> int:
    if isinstance(exc, (LabelConfigError, UnknownLabelError)):
        return 400
    if isinstance(exc, StoreError):
        return 404 if "no project" in str(exc).lower() or "not found" in str(exc).lower() else 500
    return 500


def create_app(state: BackendState) -> FastAPI:
    """The FastAPI application for one process (`uvicorn genpromp_annotate_backend.__main__:app` builds it from env)."""
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        state.shutdown()

    app = FastAPI(title="genpromp-annotate ML backend", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.backend = state
    settings = state.settings

    @app.middleware("http")
    async def basic_auth(request: Request, call_next):
        if settings.basic_auth_user and settings.basic_auth_pass:
            header = request.headers.get("authorization", "")
            expected = "Basic " + base64.b64encode(
                f"{settings.basic_auth_user}:{settings.basic_auth_pass}".encode()).decode()
            if not hmac.compare_digest(header.encode(), expected.encode()):
                state.metrics.add(unauthorized=1)
                return JSONResponse(status_code=401, content={"status": "error", "detail": "unauthorized"},
                                    headers={"WWW-Authenticate": 'Basic realm="genpromp-annotate"'})
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {err.get('msg')}")
        state.metrics.add(bad_requests=1)
        return _error(400, "; ".join(problems) or "invalid request body")

    @app.exception_handler(GenprompError)
    async def genpromp_error(_request: Request, exc: GenprompError) -> JSONResponse:
        state.metrics.add(errors=1)
        return _error(_status_for(exc), str(exc))

    @app.get("/")
    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "UP", "model_class": MODEL_CLASS}

    # /setup and /webhook are plain functions: FastAPI runs them in its thread pool, so their store
    # reads never hold up the event loop (and /health with it).
    @app.post("/setup")
    def setup(body: SetupRequest) -> dict[str, Any]:
        entry = state.registry.remember(body.project, body.schema_, body.extra_params, body.hostname,
                                        body.access_token)
        labeling = state.labeling_setup(entry.ls_project, body.schema_)
        project = state.project(labeling.settings.project)
        version = project.model_version(labeling.settings)
        state.metrics.add(setups=1)
        state.metrics.set_version(project.name, version)
        response: dict[str, Any] = {"model_version": version}
        if labeling.unknown_labels:
            response["unknown_labels"] = list(labeling.unknown_labels)
        return response

    def predict_sync(body: PredictRequest) -> dict[str, Any]:
        labeling = state.labeling_setup(ls_project_id(body.project), body.label_config)
        project = state.project(labeling.settings.project)
        entry = state.registry.get(ls_project_id(body.project))
        fetcher = state.fetcher
        if entry is not None and not state.fetcher.api_key:
            fetcher = state.fetcher.with_label_studio(entry.hostname, entry.access_token)
        outcome = state.predictor.predict(body.tasks, labeling, project, fetcher)
        state.metrics.add(predict_calls=1, tasks=len(body.tasks), tasks_skipped=len(outcome.skipped),
                          regions=sum(len(r["result"]) for r in outcome.results), predict_seconds=outcome.seconds)
        state.metrics.set_version(project.name, outcome.model_version)
        return {"results": outcome.results, "model_version": outcome.model_version}

    @app.post("/predict")
    async def predict(body: PredictRequest) -> dict[str, Any]:
        # the whole call (store reads, downloads, the UNet) runs on the predict pool, off the event loop
        return await asyncio.get_running_loop().run_in_executor(state.predict_pool, predict_sync, body)

    @app.post("/webhook")
    def webhook(body: WebhookRequest) -> dict[str, Any]:
        ls_project = (body.project or {}).get("id")
        try:
            labeling = state.labeling_setup(ls_project, (body.project or {}).get("label_config"))
        except LabelConfigError as exc:
            if body.action.startswith("ANNOTATION") or body.action == "START_TRAINING":
                raise
            logger.debug("webhook %s ignored: %s", body.action, exc)
            return {"status": "ignored", "action": body.action}
        project = state.project(labeling.settings.project)
        # no cache to drop when the model changes: model versions are derived from the store on each call
        accepted = state.feedback.submit(body.action, body.model_dump(), labeling, project)
        state.metrics.add(**{f"webhook_{body.action.lower()}": 1})
        return {"status": "accepted" if accepted else "ignored", "action": body.action}

    @app.get("/metrics")
    async def metrics() -> dict[str, Any]:
        return {**state.metrics.as_dict(), **state.feedback.stats()}

    return app
