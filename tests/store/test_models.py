"""The ORM: embeddings round-trip with dtype and shape, constraints, cascades (SQLite and PostgreSQL)."""

import pytest
import torch
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from genpromp_annotate.store import queries as q
from genpromp_annotate.store.models import Category, Image, Prediction, Project, utc_now


def _project(session, name="p"):
    project = q.create_project(session, name, "/models/sd", {"threshold": 0.23})
    return project, q.add_category(session, project, "goldfish, Carassius auratus", "goldfish", "<goldfish>", 1234)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(768,), (1, 32)])
def test_embedding_round_trips_bit_exactly_with_dtype_and_shape(db, dtype, shape):
    embedding = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    with db.write() as s:
        _, category = _project(s)
        q.set_category_embedding(category, embedding)
    with db.read() as s:
        stored = q.get_category(s, q.get_project(s, "p"), "goldfish, Carassius auratus")
        back = q.category_embedding(stored)
        assert stored.training_state == "trained" and stored.trained_at is not None
        assert stored.embedding_dtype == str(dtype).removeprefix("torch.")
        assert stored.embedding_shape == list(shape)
    assert back.dtype == dtype and tuple(back.shape) == shape
    assert torch.equal(back, embedding)


def test_untrained_category_has_no_embedding_and_clearing_works(db):
    with db.write() as s:
        _, category = _project(s)
        assert q.category_embedding(category) is None
        q.set_category_embedding(category, torch.ones(4))
        q.set_category_embedding(category, None, state="untrained")
        assert q.category_embedding(category) is None and category.training_state == "untrained"


def test_content_hash_is_unique_per_project(db):
    with db.write() as s:
        project, _ = _project(s)
        other = q.create_project(s, "other", "/models/sd")
        s.add(Image(project_id=project.id, uri="/a.jpg", content_hash="h" * 64))
        s.add(Image(project_id=other.id, uri="/a.jpg", content_hash="h" * 64))  # another project: fine
    with pytest.raises(IntegrityError), db.write() as s:
        s.add(Image(project_id=project.id, uri="/b.jpg", content_hash="h" * 64))


def test_deleting_a_project_cascades_to_everything(db):
    with db.write() as s:
        project, category = _project(s)
        image = Image(project_id=project.id, uri="/a.jpg", content_hash="a" * 64, width=10, height=10)
        image.categories = [category]
        s.add(image)
        s.flush()
        s.add(Prediction(image_id=image.id, category_id=category.id, x1=0, y1=0, x2=5, y2=5, score=0.5,
                         model_version="gp-x", source="model", created_at=utc_now()))
        q.create_training_run(s, project, "concept_tokens", {"lr": 5e-5})
    with db.write() as s:
        s.delete(q.get_project(s, "p"))
    with db.read() as s:
        for model in (Project, Category, Image, Prediction):
            assert s.scalar(select(func.count()).select_from(model)) == 0, model.__name__


def test_image_labels_can_hold_several_categories(db):
    with db.write() as s:
        project, first = _project(s)
        second = q.add_category(s, project, "bird", "bird", "<bird>")
        image = Image(project_id=project.id, uri="/a.jpg", content_hash="a" * 64)
        image.categories = [first, second]
        s.add(image)
    with db.read() as s:
        image = s.scalar(select(Image))
        assert image.labels == ["goldfish, Carassius auratus", "bird"]
