"""Bring a SQLite database to the schema head, safely when several processes open it at once.

The check runs before anything is written: a file that is not a database, holds foreign tables,
or is stamped with a revision this package does not know raises ``SchemaError`` and is left
byte-for-byte untouched. A migration runs under ``BEGIN IMMEDIATE`` (one process at a time; the
others wait on the busy timeout and then find the head already there), in one transaction with
the one-time import of a legacy ``motia.state.json``.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

from ..errors import SchemaError
from ..revision import HEAD_REVISION, TABLE

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "BehindHeadError",
    "alembic_config",
    "check",
    "current_revision",
    "is_busy",
    "known_revisions",
    "prepare",
]

log = logging.getLogger("motia_state_sql")

_OUR_TABLES = {TABLE, "alembic_version"}
# SQLite primary result codes (the low byte of sqlite_errorcode) for "another connection holds a lock".
_BUSY, _LOCKED = 5, 6


class BehindHeadError(SchemaError):
    """A read-only adapter found a schema it knows but behind head, which it may not migrate.

    Reads refuse such a store; ``store_info`` still reports it (its revision and what it holds).
    """


#: The packaged Alembic scripts (``migrations/`` of the source tree, installed as this package).
SCRIPTS: Final = "motia_state_sql.migrations:"


def alembic_config() -> Config:
    """An Alembic ``Config`` whose scripts are the ones inside the installed package."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", SCRIPTS)
    return config


def known_revisions() -> set[str]:
    """Every revision id the packaged Alembic scripts define."""
    from alembic.script import ScriptDirectory

    return {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def primary_code(exc: sqlite3.Error) -> int:
    """SQLite's primary result code of ``exc`` (``SQLITE_BUSY``...; 0 when it has none)."""
    return (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` is SQLITE_BUSY or SQLITE_LOCKED: another connection holds a lock."""
    return primary_code(exc) in (_BUSY, _LOCKED)


def current_revision(raw: sqlite3.Connection) -> tuple[str | None, set[str]]:
    """The stamped revision (``None`` when unstamped) and the names of the user tables.

    Raises:
        sqlite3.DatabaseError: the file is not a database.
    """
    tables = {
        name
        for (name,) in raw.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
        )
    }
    if "alembic_version" not in tables:
        return None, tables
    rows = raw.execute("SELECT version_num FROM alembic_version").fetchall()
    if len(rows) != 1:
        raise SchemaError(f"alembic_version holds {len(rows)} rows, expected exactly one")
    return str(rows[0][0]), tables


def _check(revision: str | None, tables: set[str], where: str) -> None:
    if revision is None:
        if tables - _OUR_TABLES:
            raise SchemaError(
                f"{where} holds tables {sorted(tables - _OUR_TABLES)} and no motia_state_sql "
                "schema stamp; refusing to add a schema to someone else's database"
            )
        return
    if revision != HEAD_REVISION and revision not in known_revisions():
        raise SchemaError(
            f"{where} is at schema revision {revision!r}, which this version of motia_state_sql "
            f"does not know (newest known: {HEAD_REVISION!r}); it was written by a newer version. "
            "Upgrade motia_state_sql; the file was left untouched"
        )


def check(raw: sqlite3.Connection, where: str) -> None:
    """Refuse, before anything is written, a database this package must not touch.

    Raises:
        SchemaError: not a database, a damaged (e.g. truncated) one, someone else's database, or
            an unknown (newer) revision.
    """
    try:
        revision, tables = current_revision(raw)
        _check_size(raw, where)
    except sqlite3.DatabaseError as exc:
        if is_busy(exc):
            raise  # locked, not damaged: the caller waits or reports the store unavailable
        raise SchemaError(
            f"{where} is damaged or not a SQLite database ({exc}); the file was left untouched"
        ) from None
    if revision != HEAD_REVISION:
        _check(revision, tables, where)


def _check_size(raw: sqlite3.Connection, where: str) -> None:
    """A main file shorter than its pages, with no WAL holding them, was truncated."""
    if where == ":memory:":
        return
    path = Path(where)
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        return  # pages may live in the WAL until a checkpoint
    (pages,) = raw.execute("PRAGMA page_count").fetchone()
    (page_size,) = raw.execute("PRAGMA page_size").fetchone()
    size = path.stat().st_size
    if size < pages * page_size:
        raise SchemaError(
            f"{where} is damaged: {size} bytes on disk, but its header counts {pages} pages of "
            f"{page_size} bytes (truncated?); the file was left untouched"
        )


def prepare(raw: sqlite3.Connection, where: str, legacy_json: Path | None, now: float) -> int:
    """Bring the database behind ``raw`` to head; return how many legacy items were imported.

    Call ``check`` first. ``raw`` must be in autocommit mode (``isolation_level=None``).

    Raises:
        SchemaError: a revision this package does not know appeared meanwhile, or the legacy
            JSON file is not in Motia's format (then nothing is created).
    """
    if current_revision(raw)[0] == HEAD_REVISION:
        return 0
    with alembic_quiet():
        return _upgrade(raw, where, legacy_json, now)


@contextlib.contextmanager
def alembic_quiet() -> Iterator[None]:
    """Keep Alembic's own INFO lines (plugins, context, each step) out of an app's INFO log.

    Unless its level was set by the user, or everything is logged at DEBUG, the ``alembic``
    logger is held at WARNING while we migrate; our own logger says what happened in one line.
    """
    alembic_log = logging.getLogger("alembic")
    if alembic_log.level != logging.NOTSET or alembic_log.isEnabledFor(logging.DEBUG):
        yield
        return
    alembic_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        alembic_log.setLevel(logging.NOTSET)


def _upgrade(raw: sqlite3.Connection, where: str, legacy_json: Path | None, now: float) -> int:
    from alembic import command
    from sqlalchemy import create_engine
    from sqlalchemy.pool import StaticPool

    # Alembic runs on this very connection. SQLAlchemy's first connect sets up its dialect and
    # rolls back, so it happens before BEGIN IMMEDIATE, not inside our transaction.
    engine = create_engine("sqlite://", creator=lambda: raw, poolclass=StaticPool)
    imported = 0
    revision: str | None = HEAD_REVISION
    with engine.connect() as connection:
        raw.execute("BEGIN IMMEDIATE")
        try:
            revision, tables = current_revision(raw)  # another process may have migrated meanwhile
            if revision != HEAD_REVISION:
                _check(revision, tables, where)
                connection.begin()  # Alembic sees an external transaction and leaves it to us
                config = alembic_config()
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
                if revision is None and legacy_json is not None and legacy_json.exists():
                    imported = _import_legacy(raw, legacy_json, now)
            raw.execute("COMMIT")
        except BaseException:
            if raw.in_transaction:
                raw.execute("ROLLBACK")
            raise
    if revision != HEAD_REVISION:
        done = "created at" if revision is None else f"migrated from revision {revision!r} to"
        took = f"; imported {imported} items from {legacy_json}" if imported else ""
        log.info("%s: %s schema revision %r%s", where, done, HEAD_REVISION, took)
    return imported


def _import_legacy(raw: sqlite3.Connection, path: Path, now: float) -> int:
    from ..file import read_motia_json
    from ..rows import new_version

    # All or nothing, like every import: a file holding an entry our rules cannot hold (a lone
    # surrogate) creates no database, so the next open tries again, and says the same and how on.
    try:
        entries = read_motia_json(path)  # numbers beyond 64-bit are the doubles Node meant
    except SchemaError as exc:
        raise SchemaError(
            f"{exc}, then open the database again; or open it with import_legacy=False "
            "(?import_legacy=false) to start without importing the file. Nothing was created"
        ) from None
    rows = [(group_id, key, encoded, new_version(None), now, now, None) for group_id, key, encoded in entries]
    raw.executemany(
        f"INSERT OR REPLACE INTO {TABLE} "
        "(group_id, key, value, version, created_at, updated_at, expires_at) VALUES (?,?,?,?,?,?,?)",
        rows,
    )
    return len(rows)
