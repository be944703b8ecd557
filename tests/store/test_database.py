"""Engine and sessions: the default location, URL forms, SQLite PRAGMAs and write transactions."""

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from genpromp_annotate.errors import StoreError
from genpromp_annotate.store import queries as q
from genpromp_annotate.store.database import (
    create_store_engine,
    default_database_url,
    genpromp_home,
    normalise_url,
    open_store,
)


def test_home_follows_genpromp_home_then_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("GENPROMP_HOME", str(tmp_path / "gh"))
    assert genpromp_home() == tmp_path / "gh" and (tmp_path / "gh").is_dir()
    monkeypatch.delenv("GENPROMP_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert genpromp_home() == tmp_path / "xdg" / "genpromp-annotate"


def test_default_url_is_sqlite_in_home_unless_env_says_otherwise(monkeypatch, tmp_path):
    monkeypatch.setenv("GENPROMP_HOME", str(tmp_path))
    monkeypatch.delenv("GENPROMP_DATABASE_URL", raising=False)
    assert default_database_url() == f"sqlite:///{tmp_path / 'genpromp.db'}"
    monkeypatch.setenv("GENPROMP_DATABASE_URL", "postgresql+psycopg://u@h/db")
    assert default_database_url() == "postgresql+psycopg://u@h/db"


def test_url_forms(tmp_path):
    assert normalise_url(str(tmp_path / "x.db")) == f"sqlite:///{tmp_path / 'x.db'}"
    assert normalise_url("postgresql://u@h:5432/d") == "postgresql+psycopg://u@h:5432/d"
    assert normalise_url("sqlite:////a/b.db") == "sqlite:////a/b.db"
    with pytest.raises(StoreError, match="only sqlite"):
        create_store_engine("mysql://u@h/d")


def test_sqlite_pragmas(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'p.db'}")
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 60_000
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    store.dispose()


def test_sqlite_write_takes_the_lock_up_front_and_readers_still_read(tmp_path):
    """A write session holds the write lock from BEGIN (IMMEDIATE): a second writer waits, a reader doesn't."""
    url = f"sqlite:///{tmp_path / 'p.db'}"
    first, second = open_store(url), open_store(url)
    with first.write() as s:
        q.create_project(s, "p", "/m")
    order: list[str] = []
    holding = threading.Event()

    def writer_one() -> None:
        with first.write() as s:
            s.execute(text("SELECT 1"))  # BEGIN IMMEDIATE has run: the lock is held
            holding.set()
            time.sleep(0.5)
            order.append("one done")

    thread = threading.Thread(target=writer_one)
    thread.start()
    holding.wait(5)
    with second.read() as s:  # WAL: reading does not wait for the writer
        assert q.get_project(s, "p").name == "p"
        order.append("read")
    with second.write() as s:
        s.execute(text("SELECT 1"))  # BEGIN IMMEDIATE waits (busy_timeout) until writer one commits
        order.append("two started")
    thread.join()
    assert order == ["read", "one done", "two started"]
    first.dispose()
    second.dispose()


def test_unreachable_postgres_is_a_store_error():
    with pytest.raises(StoreError, match="cannot open the database"):
        open_store("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")


def test_sessions_commit_on_success_and_roll_back_on_error(db):
    with pytest.raises(RuntimeError), db.write() as s:
        q.create_project(s, "gone", "/m")
        raise RuntimeError("boom")
    with db.write() as s:
        q.create_project(s, "kept", "/m")
    with db.read() as s:
        assert q.find_project(s, "gone") is None and q.find_project(s, "kept") is not None


def test_home_database_file_is_created_on_first_open(monkeypatch, tmp_path):
    monkeypatch.setenv("GENPROMP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GENPROMP_DATABASE_URL", raising=False)
    store = open_store()
    assert Path(store.engine.url.database) == tmp_path / "home" / "genpromp.db"
    assert (tmp_path / "home" / "genpromp.db").is_file()
    store.dispose()
