"""Engine and sessions from a database URL; SQLite PRAGMAs and BEGIN IMMEDIATE; the default location.

The default database is SQLite at `$GENPROMP_HOME/genpromp.db`. GENPROMP_HOME defaults to
`$XDG_DATA_HOME/genpromp-annotate`, i.e. `~/.local/share/genpromp-annotate` on most systems.
PostgreSQL is used when the URL says so (`--db` / GENPROMP_DATABASE_URL), e.g.
`postgresql+psycopg://user@host:5432/dbname`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from genpromp_annotate.errors import StoreError
from genpromp_annotate.log import get_logger

logger = get_logger(__name__)

HOME_ENV = "GENPROMP_HOME"
DATABASE_URL_ENV = "GENPROMP_DATABASE_URL"
# How long a writer waits for another process's write transaction before giving up (milliseconds).
SQLITE_BUSY_TIMEOUT_MS = 60_000


def genpromp_home() -> Path:
    """The per-user folder for the default database and caches (created on first use).

    `$GENPROMP_HOME` when set, else `$XDG_DATA_HOME/genpromp-annotate`, else
    `~/.local/share/genpromp-annotate`.
    """
    if os.environ.get(HOME_ENV):
        home = Path(os.environ[HOME_ENV]).expanduser()
    else:
        data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
        home = data / "genpromp-annotate"
    home.mkdir(parents=True, exist_ok=True)
    return home


def default_database_url() -> str:
    """GENPROMP_DATABASE_URL when set, else SQLite at `genpromp_home()/genpromp.db`."""
    return os.environ.get(DATABASE_URL_ENV) or f"sqlite:///{genpromp_home() / 'genpromp.db'}"


def normalise_url(url: str) -> str:
    """Accept plain paths (`./p.db`) and `postgresql://` (served by psycopg 3, the driver we ship)."""
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser().resolve()}"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite would open transactions lazily and in its own way; SQLAlchemy's "begin" hook does it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # WAL: readers never block the writer nor the writer the readers (two annotate processes).
        cursor.execute("PRAGMA journal_mode=WAL")
        # Wait for the other process's write transaction instead of failing with "database is locked".
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # SQLite ignores FOREIGN KEY clauses (and ON DELETE CASCADE) unless asked.
        cursor.execute("PRAGMA foreign_keys=ON")
        # With WAL, NORMAL cannot corrupt the database and only a power cut may lose the last commits.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Write sessions take the write lock up front (BEGIN IMMEDIATE): a deferred transaction that
        # reads and then writes can fail with SQLITE_BUSY at once, which busy_timeout cannot absorb.
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def create_store_engine(url: str) -> Engine:
    """A SQLAlchemy engine for `url` with the store's settings (SQLite: WAL, busy timeout, FKs)."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _configure_sqlite(engine)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(url, pool_pre_ping=True)
    raise StoreError(f"database URL {parsed.render_as_string(hide_password=True)!r}: only sqlite:/// and "
                     "postgresql+psycopg:// URLs are supported")


@dataclass
class Store:
    """An open project store: `with store.read() as s:` for queries, `with store.write() as s:` to change.

    Both commit on success and roll back on error; objects stay usable after the block
    (expire_on_commit=False).
    """

    url: str
    engine: Engine

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @property
    def display_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that holds SQLite's write lock from its first statement (BEGIN IMMEDIATE)."""
        engine = self.engine.execution_options(sqlite_begin="IMMEDIATE") if self.is_sqlite else self.engine
        with Session(engine, expire_on_commit=False) as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def open_store(url: str | None = None, *, check_schema: bool = True) -> Store:
    """Open the store at `url` (default: `default_database_url()`).

    With `check_schema`, a new, empty database gets the current schema and an old one is refused
    with SchemaOutdatedError naming `genpromp-annotate db upgrade`.
    """
    from genpromp_annotate.store.schema import ensure_schema

    url = normalise_url(url or default_database_url())
    engine = create_store_engine(url)
    store = Store(url=url, engine=engine)
    if check_schema:
        try:
            ensure_schema(engine)
        except Exception:
            engine.dispose()
            raise
    logger.info("store: %s", store.display_url)
    return store
