"""Alembic environment: runs on a connection handed in by the package, or from ``alembic.ini``.

Inside the package, ``motia_state_sql.sqlite.migrate`` passes its own connection (already holding
``BEGIN IMMEDIATE``) in ``config.attributes["connection"]``. ``motia_state_sql.postgres.migrate``
runs the same revisions offline for the ``postgresql`` dialect (``config.attributes["dialect"]``):
Alembic writes the SQL into ``config.attributes["output"]``, and the package runs it on its own
asyncpg connection, in one transaction under an advisory lock. From the command line
(``alembic upgrade head`` at the repo root) the database comes from ``-x db=PATH``, then
``MOTIA_STATE_DB``, then the default ``.motia/motia.state.db``.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection

from motia_state_sql.schema import PG_VERSION_TABLE, metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    path = context.get_x_argument(as_dictionary=True).get("db") or os.environ.get(
        "MOTIA_STATE_DB", ".motia/motia.state.db"
    )
    return f"sqlite:///{path}"


if config.attributes.get("dialect") == "postgresql":
    # No BEGIN/COMMIT in the script: the package runs it inside its own transaction.
    context.configure(
        dialect_name="postgresql",
        target_metadata=metadata,
        literal_binds=True,
        transactional_ddl=False,
        version_table=PG_VERSION_TABLE,
        output_buffer=config.attributes["output"],
    )
    with context.begin_transaction():
        context.run_migrations()
elif context.is_offline_mode():
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    given = config.attributes.get("connection")
    if given is not None:
        _run(given)
    else:
        with create_engine(_url()).begin() as connection:
            _run(connection)
