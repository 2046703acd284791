"""The state table, defined once with SQLAlchemy for every SQL backend (SQLite, PostgreSQL).

The Alembic revisions in ``migrations/`` build exactly this, on each dialect (tests compare the
two). On PostgreSQL, ``group_id`` and ``key`` use the ``"C"`` collation: in a UTF-8 database it
orders by byte, which is Unicode code point order, as the contract asks (SQLite's default
``BINARY`` collation does the same).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Index, MetaData, Table, Text
from sqlalchemy.types import TypeEngine

from .revision import HEAD_REVISION, PG_VERSION_TABLE, TABLE

__all__ = ["HEAD_REVISION", "PG_VERSION_TABLE", "TABLE", "metadata", "name_type", "state_table"]



def name_type() -> TypeEngine[str]:
    """The type of ``group_id`` and ``key``: text ordered by code point on every dialect."""
    return Text().with_variant(Text(collation="C"), "postgresql")


metadata = MetaData()

state_table = Table(
    TABLE,
    metadata,
    Column("group_id", name_type(), primary_key=True),
    Column("key", name_type(), primary_key=True),
    # Compact JSON from orjson, kept as text (not jsonb) on every dialect: the exact bytes and
    # key order the codec wrote come back (jsonb would reorder keys and rewrite numbers).
    Column("value", Text, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),  # seconds since the epoch
    Column("updated_at", Float, nullable=False),
    Column("expires_at", Float, nullable=True),  # NULL: never expires
    sqlite_with_rowid=False,
)

Index(
    "ix_motia_state_expires_at",
    state_table.c.expires_at,
    sqlite_where=state_table.c.expires_at.isnot(None),
    postgresql_where=state_table.c.expires_at.isnot(None),
)
