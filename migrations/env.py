"""Alembic environment: target_metadata from genpromp_annotate.store.models; batch mode for SQLite.

At run time `genpromp_annotate.store.schema` hands over an open connection in
`config.attributes["connection"]`. From the command line (developers: `alembic revision
--autogenerate -m "..."` in the repository root) the URL comes from GENPROMP_DATABASE_URL or
alembic.ini's sqlalchemy.url.
"""

from __future__ import annotations

import os

from alembic import context

from genpromp_annotate.store.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: batch mode copies the table instead.
        render_as_batch=True,
        compare_type=True,
    )


def run_migrations_offline() -> None:
    url = os.environ.get("GENPROMP_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True, render_as_batch=True,
                      dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    from genpromp_annotate.store.database import create_store_engine

    url = os.environ.get("GENPROMP_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    engine = create_store_engine(url)
    with engine.connect() as connection:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
