"""Fixtures for training tests: small categories of real image files whose content differs per category."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_category_images(folder: Path, label: str, count: int, seed: int, size: tuple[int, int] = (80, 64)) -> list[Path]:
    """`count` PNGs of noise with a coloured square whose colour and place depend on the category seed."""
    rng = np.random.default_rng(seed)
    colour = rng.integers(0, 255, 3)
    paths = []
    for i in range(count):
        width, height = size
        array = rng.integers(0, 255, (height, width, 3), dtype=np.uint8) // 3
        x, y = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
        array[y : y + height // 2, x : x + width // 2] = colour
        path = folder / label / f"{label}-{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    """Here the tiny model is trained: opened for training (diffusers and transformers modules, fp32),
    as `train-project` opens it, not with the native inference modules of the suite-wide fixture."""
    from genpromp_annotate.engine.loading import load_stable_diffusion

    return load_stable_diffusion(tiny_model_dir, device="cpu", dtype="float32", training=True)


@pytest.fixture()
def make_categories(tmp_path, tiny_model):
    """make_categories(["cat", "dog"], images=3) → list[CategoryImages] with real files under tmp_path."""
    from genpromp_annotate.engine.tokens import concept_token_name, meta_token_for
    from genpromp_annotate.training.data import CategoryImages

    def factory(labels, images: int = 3):
        result = []
        for k, label in enumerate(labels):
            paths = write_category_images(tmp_path / "images", label, images, seed=100 + k)
            meta = meta_token_for(label, tiny_model.tokenizer)
            result.append(CategoryImages(label, concept_token_name(label), meta.token_id, tuple(paths)))
        return result

    return factory


@pytest.fixture()
def make_project(tmp_path, tiny_model_dir, tiny_model, monkeypatch):
    """make_project(store, "demo", {"cat": 3, "dog": 2}) → a project on the tiny model with imported images.

    GENPROMP_HOME points into tmp_path, so checkpoints and UNets land there.
    """
    from genpromp_annotate.project import add_labels, import_records
    from genpromp_annotate.sources import read_source
    from genpromp_annotate.store import queries as q

    monkeypatch.setenv("GENPROMP_HOME", str(tmp_path / "home"))

    def factory(store, name: str, images: dict[str, int], extra_labels: tuple[str, ...] = ()):
        folder = tmp_path / f"data-{name}"
        for k, (label, count) in enumerate(images.items()):
            write_category_images(folder, label, count, seed=100 + k)
        with store.write() as session:
            q.create_project(session, name, str(tiny_model_dir), {"preset": "paper"})
        add_labels(store, name, [*images, *extra_labels], tiny_model.tokenizer)
        report = import_records(store, name, read_source(folder, "imagefolder"))
        assert report.added == sum(images.values()) and not report.errors
        return folder

    return factory
