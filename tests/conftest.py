"""Shared fixtures: the tiny model (built once per session), a loaded model, a localizer, image factory."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Tests never reach a model hub: they build their own tiny models. Set before huggingface_hub is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The suite compares maps with fp32 references and must give the same results on every CPU, so the CPU
# inference default (bf16 where the CPU has it natively) is pinned to fp32 here, for subprocesses too;
# tests/engine/test_cpu_dtype.py covers the default itself and bf16 against fp32.
os.environ.setdefault("GENPROMP_CPU_DTYPE", "float32")

TEST_DATA = Path(__file__).parent / "data"


def pytest_report_header(config) -> list[str]:
    import diffusers
    import sqlalchemy
    import torch
    import transformers

    postgres = os.environ.get("GENPROMP_TEST_POSTGRES_URL") or "not set (PostgreSQL cases skip)"
    return [
        (f"torch {torch.__version__}, diffusers {diffusers.__version__}, transformers {transformers.__version__}, "
         f"sqlalchemy {sqlalchemy.__version__}"),
        f"GENPROMP_TEST_POSTGRES_URL: {postgres}",
    ]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny SD-v1-layout model in diffusers format (seed 0), written once per test session."""
    from genpromp_annotate.engine.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-sd"), seed=0)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    """The tiny model loaded on CPU in float32 (shared: tests must not modify its weights)."""
    from genpromp_annotate.engine.loading import load_stable_diffusion

    return load_stable_diffusion(tiny_model_dir, device="cpu", dtype="float32")


@pytest.fixture()
def make_image(tmp_path):
    """Write a real image file: make_image("a.jpg", size=(W, H), seed=0, mode="RGB") → path."""

    def factory(name: str = "image.jpg", size: tuple[int, int] = (96, 64), seed: int = 0, mode: str = "RGB",
                folder: Path | None = None) -> Path:
        rng = np.random.default_rng(seed)
        width, height = size
        array = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        # a bright square so that maps of a trained model have something to find
        array[height // 4 : height // 2, width // 4 : width // 2] = 255
        image = Image.fromarray(array).convert(mode)
        path = (folder or tmp_path) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        return path

    return factory


# ---- the project store: every store test runs on SQLite and on PostgreSQL ---------------------------------
POSTGRES_URL_ENV = "GENPROMP_TEST_POSTGRES_URL"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> str:
    """A fresh, empty database URL: SQLite in tmp_path, or a new schema on the PostgreSQL server.

    The PostgreSQL case is skipped (reported as skipped) when GENPROMP_TEST_POSTGRES_URL is unset.
    Each PostgreSQL test gets its own schema (search_path in the URL), dropped afterwards, so tests and
    concurrent test runs never see each other's rows.
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    base = os.environ.get(POSTGRES_URL_ENV)
    if not base:
        pytest.skip(f"{POSTGRES_URL_ENV} is not set")
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(base)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture()
def db(db_url):
    """An open, migrated Store on `db_url` (SQLite and PostgreSQL)."""
    from genpromp_annotate.store.database import open_store

    store = open_store(db_url)
    yield store
    store.dispose()


# ---- the shipped toy model: a small Stable Diffusion that really localizes the toy world's shapes --------
@pytest.fixture(scope="session")
def toy_model_dir(tmp_path_factory) -> Path:
    """The shipped toy model written out as a diffusers folder, once per test session."""
    from genpromp_annotate.toy.weights import write_toy_model

    return write_toy_model(tmp_path_factory.mktemp("toy-sd") / "toy-sd")


@pytest.fixture(scope="session")
def toy_model(toy_model_dir):
    """The toy model loaded on CPU in float32 (shared: tests must not modify its weights)."""
    from genpromp_annotate.engine.loading import load_stable_diffusion

    return load_stable_diffusion(toy_model_dir, device="cpu", dtype="float32")
