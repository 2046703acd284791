"""The SQLite schema, defined once with SQLAlchemy (Alembic revisions and tests compare to it)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Index, MetaData, Table, Text

from ..revision import HEAD_REVISION, TABLE

__all__ = ["HEAD_REVISION", "TABLE", "metadata", "state_table"]

metadata = MetaData()

state_table = Table(
    TABLE,
    metadata,
    Column("group_id", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),  # compact JSON from orjson
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
)
