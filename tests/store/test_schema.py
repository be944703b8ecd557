"""Schema as code: ORM and migrations agree, one head, new databases created, old ones upgraded or refused."""

import shutil
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from genpromp_annotate.errors import SchemaOutdatedError, StoreError
from genpromp_annotate.store import queries as q
from genpromp_annotate.store import schema
from genpromp_annotate.store.database import create_store_engine, open_store
from genpromp_annotate.store.models import Base

OLD_DATABASES = Path(__file__).parents[1] / "data"


def test_orm_and_migrations_agree(db):
    """What `alembic check` does: autogenerate against the migrated database finds no difference."""
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_single_head():
    scripts = ScriptDirectory.from_config(schema.alembic_config())
    assert len(scripts.get_heads()) == 1
    assert schema.head_revision() == scripts.get_current_head()


def test_migrations_ship_inside_the_package():
    folder = schema.migrations_dir()
    assert (folder / "env.py").is_file() and (folder / "__init__.py").is_file()
    assert list((folder / "versions").glob("*_0001_*.py"))
    assert (folder / "NOTES.md").read_text().count("## ") == len(list((folder / "versions").glob("*.py")))


def test_new_database_is_created_at_head(db_url):
    store = open_store(db_url)
    with store.engine.connect() as connection:
        assert schema.current_revision(connection) == schema.head_revision()
    store.dispose()


def test_upgrade_is_idempotent(db):
    assert schema.upgrade_schema(db.engine) == (schema.head_revision(), schema.head_revision())


def test_upgrade_then_downgrade_to_base_and_back(db):
    from alembic import command

    with db.engine.begin() as connection:
        command.downgrade(schema.alembic_config(connection), "base")
    with db.engine.connect() as connection:
        assert schema.current_revision(connection) is None
    before, after = schema.upgrade_schema(db.engine)
    assert before is None and after == schema.head_revision()


def test_old_schema_is_refused_with_the_upgrade_command(db, monkeypatch):
    monkeypatch.setattr(schema, "head_revision", lambda: "0099")
    with pytest.raises(SchemaOutdatedError, match="run `genpromp-annotate db upgrade`"):
        schema.ensure_schema(db.engine)


def test_unknown_newer_revision_is_refused(db):
    with db.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'ffff'"))
    with pytest.raises(StoreError, match="newer version"):
        open_store(db.url)


def test_foreign_database_is_refused(tmp_path):
    engine = create_store_engine(f"sqlite:///{tmp_path / 'other.db'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE something (id INTEGER)"))
    engine.dispose()
    with pytest.raises(StoreError, match="not a genpromp-annotate store"):
        open_store(f"sqlite:///{tmp_path / 'other.db'}")


@pytest.mark.parametrize("old_file", sorted(OLD_DATABASES.glob("store_*.db")), ids=lambda p: p.name)
def test_committed_old_databases_upgrade_and_keep_their_rows(tmp_path, old_file):
    """tests/data/store_<revision>.db: one SQLite file per released schema, written by that release."""
    copy = tmp_path / old_file.name
    shutil.copy(old_file, copy)
    engine = create_store_engine(f"sqlite:///{copy}")
    schema.upgrade_schema(engine)
    engine.dispose()
    store = open_store(f"sqlite:///{copy}")
    with store.read() as s:
        project = q.get_project(s, "birds")
        category = q.get_category(s, project, "sparrow")
        assert q.category_embedding(category).tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
        assert [v.boxes for v in q.version_counts(s, project)] == [1]
        assert project.runs[0].status == "running"
    store.dispose()
