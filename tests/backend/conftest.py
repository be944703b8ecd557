"""Backend fixtures: a project on the tiny model, a backend state and its HTTP test client."""

from __future__ import annotations

from pathlib import Path

import pytest

LABEL_CONFIG = """
<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="box" toName="image">
    <Label value="Cat"/>
    <Label value="Dog" predicted_values="dog,puppy"/>
  </RectangleLabels>
</View>
"""


@pytest.fixture(scope="session")
def backend_model(tiny_model_dir):
    """A process-style shared copy of the tiny model (its own copy: concept tokens may be added)."""
    from genpromp_annotate.engine.loading import load_stable_diffusion
    from genpromp_annotate_backend.projects import SharedModel

    return SharedModel(load_stable_diffusion(tiny_model_dir, device="cpu", dtype="float32"))


@pytest.fixture()
def media_root(tmp_path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    return root


@pytest.fixture()
def make_state(backend_model, media_root, tmp_path):
    """make_state(**settings) → a BackendState whose projects are ModelProjects on the tiny model."""
    from genpromp_annotate.labelstudio.media import MediaFetcher
    from genpromp_annotate.presets import LocalizeConfig
    from genpromp_annotate_backend.app import BackendSettings, BackendState
    from genpromp_annotate_backend.projects import ModelProject
    from genpromp_annotate_backend.setups import SetupRegistry

    states = []

    def factory(**settings):
        def project_factory(name):
            return ModelProject(name, backend_model, LocalizeConfig(latent="mean"))

        fetcher = MediaFetcher(roots=[media_root], cache_dir=tmp_path / "cache")
        state = BackendState(BackendSettings(batch_size=4, threads=2, **settings), project_factory,
                             fetcher=fetcher, registry=SetupRegistry(tmp_path / "state"))
        states.append(state)
        return state

    yield factory
    for state in states:
        state.shutdown()


@pytest.fixture()
def client(make_state):
    from fastapi.testclient import TestClient

    from genpromp_annotate_backend.app import create_app

    with TestClient(create_app(make_state())) as test_client:
        yield test_client
