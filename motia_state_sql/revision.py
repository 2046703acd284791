"""The stored table's name and the newest schema revision, as plain constants.

Opening a database compares its stamp with ``HEAD_REVISION`` in plain SQL, so a store already at
head opens without importing SQLAlchemy or Alembic; they load only when a migration must run.
The table itself is defined once, with SQLAlchemy, in the schema module.
"""

from __future__ import annotations

from typing import Final

__all__ = ["HEAD_REVISION", "PG_VERSION_TABLE", "TABLE"]

TABLE: Final = "motia_state"
#: The newest Alembic revision this package knows; a test checks it against the scripts.
HEAD_REVISION: Final = "0001"
#: Alembic's version table on PostgreSQL. Not ``alembic_version``: a PostgreSQL database is
#: usually shared with the application, whose own Alembic history lives there.
PG_VERSION_TABLE: Final = "motia_state_version"
