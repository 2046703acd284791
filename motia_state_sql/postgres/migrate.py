"""Bring a PostgreSQL schema to the head revision, safely when several instances open it at once.

The same Alembic revisions as SQLite, run for the ``postgresql`` dialect: Alembic writes their
SQL offline (no second driver), and we run it on our own asyncpg connection in one transaction,
under an advisory lock keyed on the schema, so instances starting together
migrate once and the others find the head there. Before anything is written, a schema holding a
``motia_state`` table without our version stamp (someone else's table) or stamped with a
revision this package does not know (a newer version) raises ``SchemaError``, untouched.
The lock is a session-level advisory lock held around the migration's transaction.
"""

from __future__ import annotations

import io
import logging
from typing import Any

from ..errors import ConfigError, SchemaError
from ..revision import HEAD_REVISION, PG_VERSION_TABLE, TABLE

__all__ = ["check", "current_revision", "differences", "prepare", "quote", "render_upgrade"]

log = logging.getLogger("motia_state_sql")


def quote(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def render_upgrade(revision: str | None) -> str:
    """The SQL that takes a schema from ``revision`` (``None``: empty) to head, on PostgreSQL."""
    from alembic import command

    from ..sqlite.migrate import alembic_config, alembic_quiet

    config = alembic_config()
    output = io.StringIO()
    config.attributes["dialect"] = "postgresql"
    config.attributes["output"] = output
    with alembic_quiet():
        command.upgrade(config, f"{revision}:head" if revision else "head", sql=True)
    return output.getvalue()


async def current_revision(conn: Any, schema: str) -> tuple[str | None, bool]:
    """The stamped revision (``None`` when unstamped) and whether a ``motia_state`` table exists.

    Raises:
        SchemaError: the version table does not hold exactly one revision.
    """
    table, stamp = await conn.fetchrow(
        "SELECT to_regclass($1), to_regclass($2)",
        f"{quote(schema)}.{quote(TABLE)}",
        f"{quote(schema)}.{quote(PG_VERSION_TABLE)}",
    )
    if stamp is None:
        return None, table is not None
    rows = await conn.fetch(f"SELECT version_num FROM {quote(schema)}.{quote(PG_VERSION_TABLE)}")
    if len(rows) != 1:
        raise SchemaError(f"{schema}.{PG_VERSION_TABLE} holds {len(rows)} rows, expected exactly one")
    return str(rows[0][0]), table is not None


def check(revision: str | None, has_table: bool, where: str) -> None:
    """Refuse a schema this package must not touch.

    Raises:
        SchemaError: someone else's ``motia_state`` table, or an unknown (newer) revision.
    """
    from ..sqlite.migrate import known_revisions

    if revision is None:
        if has_table:
            raise SchemaError(
                f"{where} holds a table {TABLE!r} without a motia_state_sql schema stamp "
                f"({PG_VERSION_TABLE}); refusing to touch someone else's table"
            )
        return
    if revision != HEAD_REVISION and revision not in known_revisions():
        raise SchemaError(
            f"{where} is at schema revision {revision!r}, which this version of motia_state_sql "
            f"does not know (newest known: {HEAD_REVISION!r}); it was written by a newer version. "
            "Upgrade motia_state_sql; nothing was touched"
        )


async def _check_database(conn: Any, where: str) -> None:
    encoding = await conn.fetchval("SHOW server_encoding")
    if encoding != "UTF8":
        raise ConfigError(
            f"{where}: the database's encoding is {encoding}, not UTF8: it could not hold every "
            "group id, key and value the contract allows; create the database WITH ENCODING 'UTF8'"
        )


async def prepare(conn: Any, schema: str, where: str, *, read_only: bool) -> str | None:
    """Bring ``schema`` to head (read-only: only check it is there); return the revision found.

    Raises:
        SchemaError: see ``check``; or, read-only, a schema not at head.
        ConfigError: the database is not UTF-8.
    """
    await _check_database(conn, where)
    revision, has_table = await current_revision(conn, schema)
    if revision == HEAD_REVISION:
        return revision
    check(revision, has_table, where)
    if read_only:
        raise SchemaError(
            f"{where} is not at schema revision {HEAD_REVISION!r} (found {revision!r}); open it "
            "once without read_only (?mode=ro) to bring it up to date"
        )
    # One instance migrates; the others wait for the lock, then find the head already there. A
    # session lock taken before the transaction starts: a transaction that started before the
    # wait would look at the catalog as it was then and miss the tables just created.
    lock = f"motia_state_sql:{schema}"
    await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", lock)
    try:
        async with conn.transaction():
            revision, has_table = await current_revision(conn, schema)
            if revision == HEAD_REVISION:
                return revision
            check(revision, has_table, where)
            script = render_upgrade(revision)
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
            await conn.execute(f"SET LOCAL search_path TO {quote(schema)}")
            await conn.execute(script)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", lock)
    done = "created at" if revision is None else f"migrated from revision {revision!r} to"
    log.info("%s: %s schema revision %r", where, done, HEAD_REVISION)
    return revision


#: How information_schema names the types of ``schema.state_table``'s columns.
_PG_TYPES = {"Text": "text", "BigInteger": "bigint", "Float": "double precision"}


async def differences(conn: Any, schema: str) -> list[str]:
    """How the table in ``schema`` differs from ``schema.state_table`` (empty: it matches).

    Compares columns (name, type, nullability, collation), the primary key and the expiry index.
    """
    from ..schema import state_table

    found = {
        row[0]: (row[1], row[2] == "YES", row[3])
        for row in await conn.fetch(
            "SELECT column_name, data_type, is_nullable, collation_name FROM information_schema.columns "
            "WHERE table_schema = $1 AND table_name = $2",
            schema,
            TABLE,
        )
    }
    if not found:
        return [f"table {schema}.{TABLE} is missing"]
    diffs: list[str] = []
    for column in state_table.columns:
        want = (
            _PG_TYPES[type(column.type).__name__],
            bool(column.nullable),
            "C" if column.name in ("group_id", "key") else None,
        )
        have = found.pop(column.name, None)
        if have is None:
            diffs.append(f"column {column.name} is missing")
        elif have != want:
            diffs.append(f"column {column.name} is {have}, expected {want} (type, nullable, collation)")
    diffs += [f"unexpected column {name}" for name in sorted(found)]
    table = f"{quote(schema)}.{quote(TABLE)}"
    primary = await conn.fetchval(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = to_regclass($1) AND contype = 'p'",
        table,
    )
    if primary != "PRIMARY KEY (group_id, key)":
        diffs.append(f"primary key is {primary or 'missing'}, expected (group_id, key)")
    index = await conn.fetchval(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = $2 AND indexname = $3",
        schema,
        TABLE,
        "ix_motia_state_expires_at",
    )
    if index is None or "(expires_at)" not in index or "WHERE (expires_at IS NOT NULL)" not in index:
        diffs.append(f"index ix_motia_state_expires_at is {index or 'missing'}")
    return diffs
