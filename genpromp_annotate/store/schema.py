"""In-code Alembic config: create a new database at head, upgrade an old one, or refuse with the command.

The migration scripts live in the `migrations` package (the repository's `migrations/` folder, shipped
inside the wheel), so `genpromp-annotate db upgrade` works after a plain `pip install`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from genpromp_annotate.errors import SchemaOutdatedError, StoreError
from genpromp_annotate.log import get_logger

logger = get_logger(__name__)

UPGRADE_COMMAND = "genpromp-annotate db upgrade"
# Dated file names for new revisions (see migrations/NOTES.md).
FILE_TEMPLATE = "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s"
# Any constant: serialises schema creation between processes on PostgreSQL.
_PG_LOCK_KEY = 7_314_159_265


def migrations_dir() -> Path:
    """The folder holding env.py and versions/ (installed package first, then the source tree)."""
    spec = importlib.util.find_spec("genpromp_annotate_migrations")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            if (Path(location) / "env.py").is_file():
                return Path(location)
    source_tree = Path(__file__).resolve().parents[2] / "migrations"
    if (source_tree / "env.py").is_file():
        return source_tree
    raise StoreError("the migration scripts (package `migrations`) are missing from this installation; "
                     "reinstall genpromp-annotate")


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic Config pointing at the shipped scripts; `connection` is handed to env.py."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("file_template", FILE_TEMPLATE)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise StoreError(f"no migration found in {migrations_dir()}")
    return head


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


@contextmanager
def _schema_lock(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that excludes other processes changing the schema at the same time."""
    if engine.dialect.name == "sqlite":
        engine = engine.execution_options(sqlite_begin="IMMEDIATE")
    with engine.connect() as connection, connection.begin():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        yield connection


def _describe(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _state(connection: Connection) -> tuple[str | None, bool]:
    """(revision, has_tables) of the database behind `connection`."""
    tables = set(inspect(connection).get_table_names())
    return current_revision(connection), bool(tables - {"alembic_version"})


def ensure_schema(engine: Engine) -> str:
    """Make sure the database has this code's schema; returns the revision.

    An empty database is created at head; one at an older revision raises SchemaOutdatedError with
    the upgrade command; a newer or unknown revision, or foreign tables without a revision, StoreError.
    """
    head = head_revision()
    try:
        with engine.connect() as connection:
            revision, has_tables = _state(connection)
        if revision == head:
            return head
        if revision is None and not has_tables:
            with _schema_lock(engine) as connection:
                revision, has_tables = _state(connection)  # another process may have created it meanwhile
                if revision is None and not has_tables:
                    _run_upgrade(connection, head)
                    logger.info("created the store schema at revision %s in %s", head, _describe(engine))
                    return head
        if revision == head:
            return head
    except OperationalError as exc:
        raise StoreError(f"cannot open the database {_describe(engine)}: {exc.orig}") from exc
    _refuse(engine, revision, has_tables)
    return head  # unreachable: _refuse raises


def _refuse(engine: Engine, revision: str | None, has_tables: bool) -> None:
    where = _describe(engine)
    if revision is None:
        raise StoreError(f"{where} holds tables but no schema revision (alembic_version): it is not a "
                         "genpromp-annotate store; pass another --db")
    scripts = ScriptDirectory.from_config(alembic_config())
    try:
        scripts.get_revision(revision)
    except Exception as exc:  # alembic raises several types for an unknown revision
        raise StoreError(f"{where} is at schema revision {revision}, which this version of genpromp-annotate "
                         "does not know: it was written by a newer version; upgrade genpromp-annotate") from exc
    raise SchemaOutdatedError(f"{where} is at schema revision {revision}, this version needs {head_revision()}: "
                              f"run `{UPGRADE_COMMAND}` (back the database up first)")


def _run_upgrade(connection: Connection, target: str = "head") -> None:
    command.upgrade(alembic_config(connection), target)


def upgrade_schema(engine: Engine, target: str = "head") -> tuple[str | None, str]:
    """Upgrade the database to `target`; returns (revision before, revision after)."""
    try:
        with _schema_lock(engine) as connection:
            before, has_tables = _state(connection)
            if before is None and has_tables:
                _refuse(engine, before, has_tables)
            _run_upgrade(connection, target)
            after = current_revision(connection)
    except SQLAlchemyError as exc:
        raise StoreError(f"upgrade of {_describe(engine)} failed: {exc}") from exc
    return before, after or ""
