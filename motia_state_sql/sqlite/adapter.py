"""SqliteStateAdapter: the default store, SQLite in WAL mode.

Connections: a writer and a reader, each on a thread of its own (``worker.Worker``), plus a "fast" reader
used on the event loop itself (one shared connection for ``:memory:``).

Writes queue up on the event loop; a flusher takes everything queued in one loop turn as a batch
and runs it as one transaction: ``BEGIN IMMEDIATE``, every write, ``COMMIT`` (group commit). A
failed condition or bad op fails only its own write. With ``synchronous="NORMAL"`` a commit never
waits for the disk, so the batch runs right on the loop, trying the write lock without waiting;
when another process holds the lock, or with ``FULL`` (a commit waits for fsync), the batch goes
to the writer thread in one call and waits there (busy timeout), never blocking the loop. WAL
checkpoints run on the writer thread, off the loop, every few thousand writes.

Point reads and small results are read on the loop through the fast reader (a few microseconds,
no thread hop); a busy database or a large result goes to the reader thread. Every read sees
committed data only (WAL lets readers run beside the writer).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sqlite3
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Final, Literal, TypeVar, cast

from .. import codec, options
from ..base import IdleGroup, StateAdapter, StoreInfo, TxStore, acquire_within, prefix_end
from ..codec import INT64_MAX, INT64_MIN
from ..errors import ConfigError, SchemaError, StateError, StoreUnavailableError, from_os_error
from ..ops import Filter, parse_number
from ..places import DEFAULT_PATH
from ..revision import HEAD_REVISION, TABLE
from ..rows import (
    UNCHANGED,
    Clock,
    Row,
    RowEntry,
    Write,
    WriteResult,
    new_version,
    plan_write,
)
from . import migrate
from .commit import ClearJob, GroupCommit, Job, WriteJob
from .worker import Worker

__all__ = ["DEFAULT_PATH", "SqliteStateAdapter", "database_files"]

T = TypeVar("T")

_COLUMNS = "value, version, created_at, updated_at, expires_at"
_LIVE = "(expires_at IS NULL OR expires_at > ?)"
_SELECT_ROW: Final = f"SELECT {_COLUMNS} FROM {TABLE} WHERE group_id = ? AND key = ?"
_SELECT_LIVE_ROW: Final = f"{_SELECT_ROW} AND {_LIVE}"
_SELECT_ROWS: Final = f"SELECT group_id, key, {_COLUMNS} FROM {TABLE} WHERE {_LIVE}"
_SELECT_KEYS: Final = f"SELECT key FROM {TABLE} WHERE group_id = ? AND {_LIVE} ORDER BY key"
# Skip-scan over the primary key: one index seek per group, not one row visit per item.
_SELECT_GROUPS: Final = f"""
WITH RECURSIVE g(id) AS (
  SELECT (SELECT min(group_id) FROM {TABLE} WHERE {_LIVE})
  UNION ALL
  SELECT (SELECT min(group_id) FROM {TABLE} WHERE group_id > g.id AND {_LIVE})
  FROM g WHERE g.id IS NOT NULL
)
SELECT id FROM g WHERE id IS NOT NULL
"""
_UPSERT: Final = f"INSERT OR REPLACE INTO {TABLE} (group_id, key, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
# An unconditional set in one statement: the version and creation time continue a live row and
# start afresh over an absent or expired one, as ``plan_write`` decides for every other write
# (the state machine tests hold both paths to the same model).
_SET: Final = f"""
INSERT INTO {TABLE} (group_id, key, {_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)
ON CONFLICT (group_id, key) DO UPDATE SET
  value = excluded.value,
  version = CASE WHEN {TABLE}.expires_at IS NULL OR {TABLE}.expires_at > ?5
                 THEN {TABLE}.version + 1 ELSE excluded.version END,
  created_at = CASE WHEN {TABLE}.expires_at IS NULL OR {TABLE}.expires_at > ?5
                    THEN {TABLE}.created_at ELSE excluded.created_at END,
  updated_at = excluded.updated_at,
  expires_at = excluded.expires_at
"""
_DELETE_ROW: Final = f"DELETE FROM {TABLE} WHERE group_id = ? AND key = ?"
_DELETE_GROUP: Final = f"DELETE FROM {TABLE} WHERE group_id = ?"
_PURGE: Final = (
    f"DELETE FROM {TABLE} WHERE (group_id, key) IN (SELECT group_id, key FROM {TABLE} "
    "WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?)"
)
_PURGE_BATCH = 1000
# Counts and times in one pass over the table (a million items: a fraction of a second, on the
# reader thread, so writers never wait); expired rows through the partial index on expires_at.
_INFO: Final = (
    f"SELECT count(*), count(DISTINCT group_id), min(updated_at), max(updated_at) FROM {TABLE} WHERE {_LIVE}"
)
_EXPIRED: Final = f"SELECT count(*) FROM {TABLE} WHERE expires_at IS NOT NULL AND expires_at <= ?"
# Removes a group only while none of its live items was written at or after the cutoff: the check
# and the delete are one statement in one write transaction, so a write that lands first keeps it.
_PRUNE_GROUP: Final = (
    f"DELETE FROM {TABLE} WHERE group_id = ?1 AND NOT EXISTS (SELECT 1 FROM {TABLE} "
    f"WHERE group_id = ?1 AND updated_at >= ?2 AND (expires_at IS NULL OR expires_at > ?3))"
)
_GROUP_TIMES: Final = f"SELECT count(*), max(updated_at) FROM {TABLE} WHERE group_id = ? AND {_LIVE}"
#: Results up to this many rows are read on the loop; larger ones on the reader thread.
_INLINE_ROWS = 256
#: Rows written between WAL checkpoints (run on the writer thread) when commits run on the loop.
_CHECKPOINT_EVERY = 1000

# SQLite primary result codes (the low byte of sqlite_errorcode).
_READONLY, _CORRUPT, _FULL, _NOTADB = 8, 11, 13, 26
#: Seconds between looks at the database file's identity from the write path.
_FILE_CHECK_EVERY = 0.001


def _row(values: Any) -> Row:
    return Row(*values)


def _persist(raw: sqlite3.Connection, group_id: str, key: str, row: Row | None) -> None:
    if row is None:
        raw.execute(_DELETE_ROW, (group_id, key))
    else:
        raw.execute(_UPSERT, (group_id, key, *row))


def _plain_label(name: str) -> bool:
    """Whether ``name`` can be written as a quoted label in a SQLite JSON path (``$."name"``)."""
    return name.isprintable() and '"' not in name and "\\" not in name


def _filter_sql(filters: list[Filter]) -> tuple[str, list[Any]]:
    """SQL that pre-selects rows for ``filters``: never drops a row ``ops.matches`` keeps.

    ``neq``/``notContains`` and field names a JSON path cannot quote (quotes, backslashes,
    control characters) are left to the exact Python check.
    """
    parts: list[str] = []
    params: list[Any] = []
    for flt in filters:
        name, operation = flt["valueKey"], flt["operation"]
        if not _plain_label(name) or operation in ("neq", "notContains"):
            continue
        path = f'$."{name}"'
        kind = "json_type(value, ?)"
        field = "json_extract(value, ?)"
        if operation == "isNull":
            parts.append(f"COALESCE({kind}, 'null') = 'null'")
            params += [path]
            continue
        if operation == "isNotNull":
            parts.append(f"COALESCE({kind}, 'null') != 'null'")
            params += [path]
            continue
        text = flt["value"]
        if operation == "startsWith":
            parts.append(f"({kind} = 'text' AND substr({field}, 1, ?) = ?)")
            params += [path, path, len(text), text]
        elif operation == "endsWith":
            if text:
                parts.append(f"({kind} = 'text' AND substr({field}, ?) = ?)")
                params += [path, path, -len(text), text]
            else:
                parts.append(f"{kind} = 'text'")
                params += [path]
        elif operation == "contains":
            parts.append(f"(({kind} = 'text' AND instr({field}, ?) > 0) OR {kind} = 'array')")
            params += [path, path, text, path]
        else:
            number = parse_number(text)
            if type(number) is int and not INT64_MIN <= number <= INT64_MAX:
                continue  # SQLite cannot bind it; left to the exact check
            sql_op = {"eq": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[operation]
            alternatives = [f"({kind} = 'text' AND {field} {sql_op} ?)"]
            params += [path, path, text]
            if number is not None:
                alternatives.append(f"({kind} IN ('integer', 'real') AND {field} {sql_op} ?)")
                params += [path, path, number]
            if operation == "eq" and text in ("true", "false"):
                alternatives.append(f"{kind} = ?")
                params += [path, text]
            parts.append("(" + " OR ".join(alternatives) + ")")
    return "".join(f" AND {part}" for part in parts), params


class SqliteStateAdapter(StateAdapter):
    """State in one SQLite table keyed on ``(group_id, key)``, WAL mode, group commit."""

    kind = "sqlite"

    __slots__ = (
        "_checked_at",
        "_checkpoint",
        "_commits",
        "_dirty",
        "_fast",
        "_file_id",
        "_inline",
        "_last_purge",
        "_lock",
        "_lost",
        "_open_lock",
        "_raw",
        "_reader",
        "_side_ids",
        "_writer",
        "busy_timeout",
        "file_mode",
        "import_legacy",
        "path",
        "purge_interval",
        "synchronous",
    )

    def __init__(
        self,
        path: str | os.PathLike[str] = DEFAULT_PATH,
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout: float = 5.0,
        file_mode: int = 0o600,
        import_legacy: bool = True,
        purge_interval: float = 60.0,
        read_only: bool = False,
        idle_group_ttl: float | None = None,
        max_value_bytes: int = codec.DEFAULT_MAX_VALUE_BYTES,
        clock: Clock = time.time,
    ) -> None:
        """Describe the database; it is opened (and migrated) on first use or ``async with``.

        Args:
            path: the database file, or ``":memory:"``.
            synchronous: ``"NORMAL"`` (default: a power loss may lose the last commits, never
                corrupts) or ``"FULL"`` (every acknowledged write survives a power loss).
            busy_timeout: seconds to wait for the write lock (held by another process, or by a
                transaction or batch in this one) before ``StoreUnavailableError``.
            file_mode: permissions of a database file this adapter creates.
            import_legacy: import ``motia.state.json`` from the same folder into a new database.
            purge_interval: seconds between sweeps that reclaim expired rows.
            read_only: open an existing database without writing to it: no migration, no legacy
                import, no WAL switch; writes raise ``UnsupportedError``.
            idle_group_ttl: seconds after which a group nobody wrote to is removed, whole, by a
                background prune (``prune_idle_groups``, run every ``idle_group_ttl / 2`` seconds,
                at most hourly); ``None`` (default): never.
            max_value_bytes: largest encoded value accepted.
            clock: time source (seconds since the epoch), injectable for tests.
        """
        super().__init__(
            max_value_bytes=max_value_bytes, clock=clock, read_only=read_only, idle_group_ttl=idle_group_ttl
        )
        self._closed = True  # until every option is checked (see StateAdapter.__del__)
        if synchronous not in ("NORMAL", "FULL"):
            raise ConfigError(f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}")
        if not isinstance(path, (str, os.PathLike)) or not str(path) or "\x00" in str(path):
            raise ConfigError(f"path must be a database file name or ':memory:', got {path!r}")
        self.path = str(path)
        self.synchronous = synchronous
        self.busy_timeout = options.seconds("busy_timeout", busy_timeout)
        self.file_mode = options.file_mode("file_mode", file_mode)
        self.import_legacy = options.flag("import_legacy", import_legacy)
        self.purge_interval = options.seconds("purge_interval", purge_interval)
        self._writer: Worker | None = None
        self._reader: Worker | None = None
        self._raw: sqlite3.Connection | None = None  # the writer's own sqlite3 connection
        self._fast: sqlite3.Connection | None = None  # reads on the loop (file databases)
        # Commits that never wait for the disk run on the loop (see the module docstring).
        self._inline = synchronous == "NORMAL" or self.path == ":memory:"
        self._dirty = 0
        self._checkpoint: asyncio.Task[None] | None = None
        self._open_lock = asyncio.Lock()
        # Held by each group-commit batch and for a whole transaction: one writer at a time.
        self._lock = asyncio.Lock()
        self._commits = GroupCommit(
            self._lock,
            self._inline_batch if self._inline else None,
            self._thread_batch,
            self.busy_timeout,
            self.path,
        )
        self._last_purge = float("-inf")
        # The database file's (device, inode) once open, to notice it deleted or replaced.
        self._file_id: tuple[int, int] | None = None
        self._side_ids: dict[str, tuple[int, int] | None] = {}  # the -wal and -shm files we opened
        self._checked_at = float("-inf")  # time.monotonic() of the last look at the file
        self._lost: str | None = None  # why the file can no longer be written, once seen
        self._closed = False

    def __repr__(self) -> str:
        mode = ", read_only=True" if self.read_only else ""
        return f"SqliteStateAdapter(path={self.path!r}, synchronous={self.synchronous!r}{mode})"

    def _holds_resources(self) -> bool:
        return self._writer is not None

    def _release_now(self) -> None:
        # Without a loop: stop the worker threads (each closes its connection), close ours.
        if self._fast is not None:
            self._fast.close()
            self._fast = None
        for conn in {id(c): c for c in (self._reader, self._writer) if c is not None}.values():
            with contextlib.suppress(Exception):
                conn.stop()
        self._reader = self._writer = self._raw = None

    @property
    def _memory(self) -> bool:
        return self.path == ":memory:"

    # -- connections --------------------------------------------------------------------------

    def _translate(self, exc: sqlite3.Error) -> StateError:
        code = migrate.primary_code(exc)
        lost = self._lost or self._look_at_file(force=True)
        if lost is not None:
            return StoreUnavailableError(lost)
        if code == _READONLY:
            return ConfigError(
                f"{self.path} is read-only for this process ({exc}): open it with read_only=True "
                "(?mode=ro) to read it, or make it writable; nothing was written"
            )
        if migrate.is_busy(exc):
            return StoreUnavailableError(
                f"{self.path} stayed locked by another writer past busy_timeout="
                f"{self.busy_timeout}s ({exc}); nothing was written"
            )
        if code == _FULL:
            return StoreUnavailableError(f"{self.path}: database or disk is full; nothing was written")
        if code in (_CORRUPT, _NOTADB):
            return SchemaError(
                f"{self.path} is damaged or not a SQLite database ({exc}); nothing was written"
            )
        if isinstance(exc, sqlite3.OperationalError):
            return StoreUnavailableError(f"{self.path}: {exc}")
        return StateError(f"{self.path}: sqlite error: {exc}")

    async def _call(self, conn: Worker, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(raw_connection, *args)`` on the connection's thread: one round trip."""
        try:
            return await conn.run(fn, *args)
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc

    async def _call_to_end(self, conn: Worker, fn: Callable[..., T], *args: Any) -> T:
        """Like ``_call``, but a cancelled caller still waits for the thread to finish ``fn``."""
        task = asyncio.ensure_future(self._call(conn, fn, *args))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            with contextlib.suppress(BaseException):
                await task
            raise

    def _wait_for_lock(self, raw: sqlite3.Connection, wait: bool) -> None:
        """Writes on the loop must never wait for the lock; writes on the thread wait up to busy_timeout."""
        raw.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000) if wait else 0}")

    def _enter_wal(self, raw: sqlite3.Connection) -> None:
        migrate.check(raw, self.path)
        raw.execute("PRAGMA journal_mode = WAL")

    def _retry_busy(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` again while SQLite says busy without having waited, up to ``busy_timeout``.

        While another process switches a new file to WAL, SQLite answers ``PRAGMA journal_mode``
        (and reads of the half-switched header) with SQLITE_BUSY at once, without calling the busy
        handler; two processes opening a new file at once must both succeed.
        """
        deadline = time.monotonic() + self.busy_timeout
        pause = 0.001
        while True:
            try:
                fn()
                return
            except sqlite3.OperationalError as exc:
                if not migrate.is_busy(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)  # on the connection's own thread, never on the loop
            pause = min(pause * 2, 0.05)

    def _setup(self, raw: sqlite3.Connection, writer: bool) -> int:
        self._wait_for_lock(raw, True)
        if not writer or (self.read_only and not self._memory):
            raw.execute("PRAGMA query_only = ON")
        if self.read_only and not self._memory:  # a new :memory: store gets its (empty) schema
            self._retry_busy(lambda: migrate.check(raw, self.path))
            revision = migrate.current_revision(raw)[0]
            if revision != HEAD_REVISION:
                raise migrate.BehindHeadError(
                    f"{self.path} is not at schema revision {HEAD_REVISION!r} (found "
                    f"{revision!r}); open it once without read_only (?mode=ro) to bring it up to date"
                )
            return 0
        if not writer:
            return 0
        legacy = (
            None if self._memory or not self.import_legacy else Path(self.path).parent / "motia.state.json"
        )
        # The schema check comes first: a foreign or newer file must not be touched, and
        # switching to WAL writes to the file header.
        self._retry_busy(lambda: self._enter_wal(raw))
        raw.execute(f"PRAGMA synchronous = {self.synchronous}")
        imported = migrate.prepare(raw, self.path, legacy, self._clock())
        if self._inline:
            # Checkpoints would run inside a commit, on the loop: we run them on the writer thread.
            raw.execute("PRAGMA wal_autocheckpoint = 0")
            self._wait_for_lock(raw, False)
        return imported

    async def _connect(self) -> Worker:
        if self._writer is not None:
            return self._writer
        self._check_closed()
        async with self._open_lock:
            if self._writer is not None:
                return self._writer
            if not self._memory:
                self._prepare_file()
            writer = await self._open_connection()
            reader: Worker | None = None
            try:
                await self._call(writer, self._setup, True)
                reader = writer
                if not self._memory:
                    if not self.read_only:  # one connection serves a read-only adapter
                        reader = await self._open_connection()
                        await self._call(reader, self._setup, False)
                    fast = sqlite3.connect(self._target, isolation_level=None, timeout=0, uri=True)
                    fast.execute("PRAGMA query_only = ON")
                    self._fast = fast
                    self._file_id = _file_id(self.path)
                    self._side_ids = {path: _file_id(path) for path in self._side_files()}
            except BaseException:
                if reader is not None and reader is not writer:
                    await reader.close()
                await writer.close()
                raise
            self._raw = writer.connection
            self._reader, self._writer = reader, writer
            return writer

    async def _open_connection(self) -> Worker:
        # check_same_thread=False: the loop uses the writer directly while holding ``_lock``,
        # when nothing is queued on its thread.
        connect = functools.partial(
            sqlite3.connect,
            self._target,
            isolation_level=None,
            timeout=self.busy_timeout,
            check_same_thread=False,
            uri=True,
        )
        try:
            return await Worker.open(connect)
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc

    @property
    def _target(self) -> str:
        """What ``sqlite3.connect(..., uri=True)`` opens: the file, read-only when asked."""
        if self._memory:
            return ":memory:"
        path = os.path.abspath(self.path)
        query = "mode=ro" if self.read_only else "mode=rwc"
        folder_writable = os.access(os.path.dirname(path), os.W_OK)
        if self.read_only and not folder_writable and not os.path.exists(f"{path}-wal"):
            # SQLite cannot create the -shm file a WAL reader needs in a folder it may not write.
            # No -wal file means no writer has it open: read the file as it is.
            query += "&immutable=1"
        return f"file:{urllib.parse.quote(path)}?{query}"

    def _prepare_file(self) -> None:
        """Create the database file (mode ``file_mode``) and its folder; say plainly what is wrong.

        Raises:
            ConfigError: the path is a folder, a part of it is a file, or this process may not
                create or write it (retrying cannot help).
            StoreUnavailableError: a read-only adapter found no file, or the disk failed.
        """
        path = Path(self.path)
        if path.is_dir():
            raise ConfigError(
                f"{path} is a folder: give the database file's path, e.g. {path / 'motia.state.db'}"
            )
        if self.read_only:
            if not path.exists():
                raise StoreUnavailableError(f"{path} does not exist (read-only: nothing is created)")
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, self.file_mode))
        except OSError as exc:
            raise from_os_error(exc, f"create {path}") from None
        if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
            what = path if not os.access(path, os.W_OK) else f"the folder {path.parent}"
            raise ConfigError(
                f"{what} is read-only for this process: open {path} with read_only=True "
                "(?mode=ro) to read it, or make it writable"
            )

    def _look_at_file(self, *, force: bool = False) -> str | None:
        """Why the database file can no longer be written (deleted or replaced), else ``None``.

        SQLite keeps writing to a file deleted under it: every such write would be acknowledged
        and lost. The write path looks (one ``stat``) at most every ``_FILE_CHECK_EVERY``
        seconds, before committing; errors look every time.
        """
        if self._file_id is None:
            return None
        now = time.monotonic()
        if not force and now - self._checked_at < _FILE_CHECK_EVERY:
            return None
        self._checked_at = now
        found = _file_id(self.path)
        if found == self._file_id:
            return None
        what = "deleted" if found is None else "replaced by another file"
        self._lost = (
            f"{self.path} was {what} while open: writes could never be read back, so they are "
            "refused (nothing was written); restore the file, or close and open the adapter again"
        )
        return self._lost

    def _check_file(self, *, force: bool = False) -> None:
        lost = self._lost or self._look_at_file(force=force)
        if lost is not None:
            raise StoreUnavailableError(lost)

    async def __aenter__(self) -> SqliteStateAdapter:
        await self._connect()
        return self

    def _side_files(self) -> list[str]:
        return [f"{self.path}-wal", f"{self.path}-shm"]

    def _forget_side_files(self) -> None:
        """Remove our ``-wal``/``-shm`` beside a database file that replaced ours.

        SQLite would replay our WAL's frames onto the new file when it is next opened, bending
        it; a ``-wal`` some other process made since (another identity) is left alone.
        """
        for path, known in self._side_ids.items():
            if known is not None and _file_id(path) == known:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

    async def _close(self) -> None:
        await self._commits.drain()
        if self._checkpoint is not None:
            with contextlib.suppress(BaseException):
                await self._checkpoint
        if self._file_id is not None and (self._lost or self._look_at_file(force=True)):
            self._forget_side_files()
        if self._fast is not None:
            self._fast.close()
            self._fast = None
        reader, writer = self._reader, self._writer
        self._reader = self._writer = None
        self._raw = None
        if reader is not None and reader is not writer:
            await reader.close()
        if writer is not None:
            await writer.close()

    # -- reads --------------------------------------------------------------------------------

    async def _query(self, sql: str, params: tuple[Any, ...] | list[Any]) -> list[Any]:
        if self._reader is None:
            await self._connect()
        if self._lost is not None:
            raise StoreUnavailableError(self._lost)
        assert self._reader is not None
        try:
            if self._memory:  # one connection: wait out open transactions, read committed only
                await acquire_within(self._lock, self.busy_timeout, self.path)
                try:
                    assert self._raw is not None
                    return self._raw.execute(sql, params).fetchall()
                finally:
                    self._lock.release()
            if self._fast is not None:
                try:
                    cursor = self._fast.execute(sql, params)
                    rows = cursor.fetchmany(_INLINE_ROWS + 1)
                    cursor.close()
                    if len(rows) <= _INLINE_ROWS:
                        return rows
                    # large: read it whole, as one snapshot, on the reader thread
                except sqlite3.OperationalError as exc:
                    if not migrate.is_busy(exc):
                        raise
            return await self._call(self._reader, _fetch, sql, params)
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc

    async def _read_row(self, group_id: str, key: str, now: float) -> Row | None:
        fast = self._fast
        if fast is not None and self._lost is None:  # the point read of every get: on the loop
            try:
                found = fast.execute(_SELECT_LIVE_ROW, (group_id, key, now)).fetchone()
            except sqlite3.OperationalError as exc:
                if not migrate.is_busy(exc):
                    raise self._translate(exc) from exc
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc
            else:
                return None if found is None else Row(*found)
        rows = await self._query(_SELECT_LIVE_ROW, (group_id, key, now))
        return _row(rows[0]) if rows else None

    async def _read_rows(self, group_id: str | None, now: float, filters: list[Filter]) -> list[RowEntry]:
        sql, params = _rows_sql(group_id, now, filters)
        return [(g, k, Row(*rest)) for g, k, *rest in await self._query(sql, params)]

    async def _read_keys(self, group_id: str, now: float) -> list[str]:
        return [key for (key,) in await self._query(_SELECT_KEYS, (group_id, now))]

    async def _read_groups(self, now: float) -> list[str]:
        return [group for (group,) in await self._query(_SELECT_GROUPS, (now, now))]

    async def _read_batches(self, group_id: str | None, batch_size: int) -> AsyncIterator[list[RowEntry]]:
        after: tuple[str, str] | None = None
        while True:
            now = self._clock()
            where = f"{_SELECT_ROWS}{' AND group_id = ?' if group_id is not None else ''}"
            params: list[Any] = [now] if group_id is None else [now, group_id]
            if after is not None:
                where += " AND (group_id, key) > (?, ?)"
                params += after
            rows = await self._query(f"{where} ORDER BY group_id, key LIMIT ?", [*params, batch_size])
            if not rows:
                return
            yield [(g, k, Row(*rest)) for g, k, *rest in rows]
            after = (rows[-1][0], rows[-1][1])

    # -- operations on the whole store --------------------------------------------------------

    async def _store_info(self, now: float) -> StoreInfo:
        def read(raw: sqlite3.Connection) -> StoreInfo:
            revision, tables = migrate.current_revision(raw)
            items, groups, oldest, newest, expired = 0, 0, None, None, 0  # no table yet (behind head)
            if TABLE in tables:
                items, groups, oldest, newest = raw.execute(_INFO, (now,)).fetchone()
                (expired,) = raw.execute(_EXPIRED, (now,)).fetchone()
            files = () if self._memory else database_files(self.path)
            return StoreInfo(
                self.kind, items, groups, expired, oldest, newest, revision, HEAD_REVISION, files
            )

        if self._reader is None:
            try:
                await self._connect()
            except migrate.BehindHeadError:
                # Read-only and behind head: report what is there, on a connection of its own
                # (the adapter's reads stay refused), without migrating or writing anything.
                return await asyncio.to_thread(self._read_aside, read)
        assert self._reader is not None
        if not self._memory:
            return await self._call(self._reader, read)
        await acquire_within(self._lock, self.busy_timeout, self.path)
        try:
            return await self._call(self._reader, read)
        finally:
            self._lock.release()

    def _read_aside(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on a read-only connection of its own, opened and closed here (a thread)."""
        try:
            raw = sqlite3.connect(self._target, isolation_level=None, timeout=self.busy_timeout, uri=True)
            try:
                raw.execute("PRAGMA query_only = ON")
                return fn(raw)
            finally:
                raw.close()
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc

    async def backup(
        self,
        target: str | os.PathLike[str],
        *,
        pages: int = 256,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Copy the database, as one consistent snapshot, into the empty file ``target``.

        SQLite's online backup in steps of ``pages`` pages, from one read transaction of the
        reader connection: writers (here or in other processes) go on meanwhile, never waiting
        for the copy, and the copy never restarts. ``progress(pages_done, pages_total)`` is
        called after each step (on the reader's thread). The copy's ``integrity_check`` must
        say ok. Returns the pages copied.

        Raises:
            SchemaError: the copy failed its integrity check.
            StoreUnavailableError, ConfigError: the database or ``target`` cannot be used.
        """
        size = options.positive_int("pages", pages)
        if self._memory:
            raise ConfigError("backup copies a database file; sqlite:///:memory: has none")

        def copy(raw: sqlite3.Connection) -> int:
            raw.execute("BEGIN")
            try:
                total = raw.execute("PRAGMA page_count").fetchone()[0]
                raw.execute(f"SELECT count(*) FROM {TABLE} WHERE 0").fetchall()  # the snapshot starts
                dst = sqlite3.connect(os.fspath(target), isolation_level=None)
                try:

                    def step(status: int, remaining: int, count: int) -> None:
                        if progress is not None:
                            progress(count - remaining, count)

                    raw.backup(dst, pages=size, progress=step)
                    found = dst.execute("PRAGMA integrity_check").fetchall()
                finally:
                    dst.close()
            finally:
                raw.execute("ROLLBACK")
            if found != [("ok",)]:
                shown = "; ".join(str(row[0]) for row in found[:5])
                raise SchemaError(f"the backup of {self.path} failed its integrity check: {shown}")
            return int(total)

        self._check_open()
        if self._reader is None:
            await self._connect()
        assert self._reader is not None
        return await self._track(self._call(self._reader, copy))

    async def vacuum(self) -> None:
        """Rebuild the database to give free pages back to the file system, then empty the WAL.

        Holds the write lock while it runs (writers wait, up to their busy timeout); readers
        go on.

        Raises:
            StoreUnavailableError: another writer held the lock past ``busy_timeout``.
            UnsupportedError: the adapter is read-only.
        """
        self._check_open()
        self._check_writable()

        def run(raw: sqlite3.Connection) -> None:
            if self._inline:
                self._wait_for_lock(raw, True)
            try:
                raw.execute("VACUUM")
                raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                if self._inline:
                    self._wait_for_lock(raw, False)

        writer = await self._connect()
        await acquire_within(self._lock, self.busy_timeout, self.path)
        try:
            await self._track(self._call_to_end(writer, run))
        finally:
            self._lock.release()

    async def _idle_groups(
        self, cutoff: float, prefix: str | None, after: str | None, limit: int, now: float
    ) -> list[IdleGroup]:
        where: list[str] = [_LIVE]
        params: list[Any] = [now]
        if after is not None:
            where.append("group_id > ?")
            params.append(after)
        if prefix is not None:
            where.append("group_id >= ?")
            params.append(prefix)
            end = prefix_end(prefix)
            if end is not None:
                where.append("group_id < ?")
                params.append(end)
        sql = (
            f"SELECT group_id, count(*), max(updated_at) FROM {TABLE} WHERE {' AND '.join(where)} "
            "GROUP BY group_id HAVING max(updated_at) < ? ORDER BY group_id LIMIT ?"
        )
        rows = await self._query(sql, [*params, cutoff, limit])
        return [IdleGroup(group_id, count, newest) for group_id, count, newest in rows]

    async def _prune_groups(self, groups: list[str], cutoff: float, now: float) -> list[IdleGroup]:
        """The whole batch in one write transaction: one statement per group."""

        def prune(raw: sqlite3.Connection) -> list[IdleGroup]:
            removed: list[IdleGroup] = []
            for group_id in groups:
                live, newest = raw.execute(_GROUP_TIMES, (group_id, now)).fetchone()
                if raw.execute(_PRUNE_GROUP, (group_id, cutoff, now)).rowcount > 0 and live:
                    removed.append(IdleGroup(group_id, live, newest))
            return removed

        if not groups:
            return []
        store = await self._begin()
        assert isinstance(store, _SqliteTx)
        return await store.run(prune)

    # -- writes (group commit) ----------------------------------------------------------------

    def _inline_batch(self, jobs: list[Job]) -> list[Any] | None:
        """Run a batch on the loop; ``None`` when another process holds the write lock."""
        assert self._raw is not None
        try:
            results = self._apply_batch(self._raw, jobs)
        except sqlite3.OperationalError as exc:
            if migrate.is_busy(exc):
                return None
            raise self._translate(exc) from exc
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        self._wrote(len(jobs))
        return results

    def _wrote(self, count: int) -> None:
        """Count committed writes; checkpoint the WAL every ``_CHECKPOINT_EVERY`` of them.

        Automatic checkpoints are off when commits run on the loop (they would run inside a
        commit), so every commit path counts here, or the WAL would grow without bound.
        """
        if not self._inline or self._memory:
            return
        self._dirty += count
        if self._dirty >= _CHECKPOINT_EVERY and self._checkpoint is None:
            self._dirty = 0
            self._checkpoint = asyncio.get_running_loop().create_task(self._run_checkpoint())

    async def _thread_batch(self, jobs: list[Job]) -> list[Any]:
        """With ``_lock`` held: run a batch on the writer thread, waiting for the write lock."""
        assert self._writer is not None
        results = await self._call(self._writer, self._apply_batch_waiting, jobs)
        self._wrote(len(jobs))
        return results

    async def _run_checkpoint(self) -> None:
        """Checkpoint the WAL on the writer thread, holding our write lock.

        Holding the lock lets the checkpoint finish (no new frames are appended meanwhile), so
        the next commit starts the WAL over instead of growing it; queued writes wait, the loop
        does not. (Copying the bulk first on the reader thread while writes go on was faster,
        but a commit on the loop could then wait for the checkpoint's fsync of the WAL: pauses
        of the loop of several milliseconds.)
        """
        try:
            async with self._lock:
                if self._writer is not None:
                    await self._call(self._writer, _execute, "PRAGMA wal_checkpoint(PASSIVE)")
        except StateError:
            pass  # another process is checkpointing: a later checkpoint catches up
        finally:
            self._checkpoint = None

    def _apply_batch_waiting(self, raw: sqlite3.Connection, jobs: list[Job]) -> list[Any]:
        """On the writer thread: wait for the write lock up to busy_timeout, then run the batch."""
        if not self._inline:
            return self._apply_batch(raw, jobs)
        self._wait_for_lock(raw, True)
        try:
            return self._apply_batch(raw, jobs)
        finally:
            self._wait_for_lock(raw, False)

    def _apply_batch(self, raw: sqlite3.Connection, jobs: list[Job]) -> list[Any]:
        """One transaction for the whole batch (on the loop or on the writer thread)."""
        raw.execute("BEGIN IMMEDIATE")
        try:
            results: list[Any] = []
            sets: list[tuple[Any, ...]] = []  # a run of unconditional sets: one executemany
            for job in jobs:
                params = _plain_set(job)
                if params is not None:
                    sets.append(params)
                    continue
                if sets:
                    _run_sets(raw, sets, results)
                    sets = []
                try:
                    results.append(self._apply_job(raw, job))
                except sqlite3.Error:
                    raise  # the database failed: the whole batch rolls back
                except Exception as exc:  # the job's own plan failed before it wrote anything
                    results.append(exc)
            if sets:
                _run_sets(raw, sets, results)
            now = max(job.now for job in jobs)
            if now - self._last_purge >= self.purge_interval:
                raw.execute(_PURGE, (now, _PURGE_BATCH))
                self._last_purge = now
            self._check_file()
            raw.execute("COMMIT")
        except BaseException:
            if raw.in_transaction:
                raw.execute("ROLLBACK")
            raise
        return results

    @staticmethod
    def _apply_job(raw: sqlite3.Connection, job: Job) -> Any:
        if isinstance(job, ClearJob):
            raw.execute(_DELETE_GROUP, (job.group_id,))
            return None
        write, now = job
        found = raw.execute(_SELECT_ROW, (write.group_id, write.key)).fetchone()
        current = _row(found) if found is not None else None
        if current is not None and not current.live(now):
            current = None
        plan = plan_write(write, current, now)
        if plan is not UNCHANGED:
            _persist(raw, write.group_id, write.key, plan)  # type: ignore[arg-type]
        return plan, current

    async def _write(self, write: Write, now: float) -> WriteResult:
        if self._writer is None:
            await self._connect()
        return cast(WriteResult, await self._commits.write(WriteJob(write, now)))

    async def _clear(self, group_id: str, now: float) -> None:
        if self._writer is None:
            await self._connect()
        await self._commits.submit(ClearJob(group_id, now))

    # -- transactions -------------------------------------------------------------------------

    async def _begin(self) -> TxStore:
        writer = await self._connect()
        await acquire_within(self._lock, self.busy_timeout, self.path)
        try:
            if self._inline:
                assert self._raw is not None
                try:
                    self._raw.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    if not migrate.is_busy(exc):
                        raise self._translate(exc) from exc
                    await self._call_to_end(writer, self._begin_waiting)
            else:
                await self._call_to_end(writer, _execute, "BEGIN IMMEDIATE")
        except BaseException:
            # Failed, or cancelled after BEGIN ran: leave no transaction and no lock behind.
            with contextlib.suppress(BaseException):
                await self._call_to_end(writer, _rollback_if_open)
            self._lock.release()
            raise
        return _SqliteTx(self, writer)

    def _begin_waiting(self, raw: sqlite3.Connection) -> None:
        self._wait_for_lock(raw, True)
        try:
            raw.execute("BEGIN IMMEDIATE")
        finally:
            self._wait_for_lock(raw, False)

    async def _on_writer(self, writer: Worker, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(raw, *args)`` with ``_lock`` held: on the loop when commits do not wait for disk."""
        if self._inline:
            assert self._raw is not None
            try:
                return fn(self._raw, *args)
            except sqlite3.Error as exc:
                raise self._translate(exc) from exc
        return await self._call_to_end(writer, fn, *args)


def _file_id(path: str) -> tuple[int, int] | None:
    """``(device, inode)`` of the file at ``path``, or ``None`` when there is none."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def database_files(path: str) -> tuple[tuple[str, int], ...]:
    """``(file, bytes)`` of a database and of its ``-wal`` and ``-shm``, those that exist."""
    found: list[tuple[str, int]] = []
    for name in (path, f"{path}-wal", f"{path}-shm"):
        with contextlib.suppress(FileNotFoundError):
            found.append((name, os.stat(name).st_size))
    return tuple(found)


def _plain_set(job: Job) -> tuple[Any, ...] | None:
    """The ``_SET`` parameters of an unconditional set, else ``None``."""
    if isinstance(job, ClearJob):
        return None
    write, now = job
    if write.kind != "set" or write.if_version is not None or write.if_absent:
        return None
    return (write.group_id, write.key, write.encoded, new_version(None), now, write.expires_at(now))


def _run_sets(raw: sqlite3.Connection, sets: list[tuple[Any, ...]], results: list[Any]) -> None:
    """Unconditional sets, in order, in one call: each one's result is ``None``."""
    if len(sets) == 1:
        raw.execute(_SET, sets[0])
    else:
        raw.executemany(_SET, sets)
    results.extend([None] * len(sets))


def _execute(raw: sqlite3.Connection, sql: str) -> None:
    raw.execute(sql)


def _rollback_if_open(raw: sqlite3.Connection) -> None:
    if raw.in_transaction:
        raw.execute("ROLLBACK")


def _fetch(raw: sqlite3.Connection, sql: str, params: tuple[Any, ...] | list[Any]) -> list[Any]:
    return raw.execute(sql, params).fetchall()


def _rows_sql(group_id: str | None, now: float, filters: list[Filter]) -> tuple[str, list[Any]]:
    where, params = _filter_sql(filters)
    if group_id is None:
        return f"{_SELECT_ROWS}{where} ORDER BY group_id, key", [now, *params]
    return f"{_SELECT_ROWS} AND group_id = ?{where} ORDER BY key", [now, group_id, *params]


class _SqliteTx(TxStore):
    __slots__ = ("_adapter", "_released", "_writer")

    def __init__(self, adapter: SqliteStateAdapter, writer: Worker) -> None:
        self._adapter = adapter
        self._writer = writer
        self._released = False

    async def read_row(self, group_id: str, key: str, now: float) -> Row | None:
        rows = await self._adapter._on_writer(self._writer, _fetch, _SELECT_LIVE_ROW, (group_id, key, now))
        return _row(rows[0]) if rows else None

    async def read_rows(self, group_id: str | None, now: float) -> list[RowEntry]:
        sql, params = _rows_sql(group_id, now, [])
        rows = await self._adapter._on_writer(self._writer, _fetch, sql, params)
        return [(g, k, Row(*rest)) for g, k, *rest in rows]

    async def commit(self, cleared: set[str], writes: dict[tuple[str, str], Row | None]) -> None:
        def apply(raw: sqlite3.Connection) -> None:
            for group_id in cleared:
                raw.execute(_DELETE_GROUP, (group_id,))
            for (group_id, key), row in writes.items():
                _persist(raw, group_id, key, row)

        await self.run(apply)
        self._adapter._wrote(len(cleared) + len(writes))

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work(raw)`` inside the transaction, then commit (roll back if it raises)."""

        def apply(raw: sqlite3.Connection) -> T:
            try:
                result = work(raw)
                self._adapter._check_file(force=True)
                raw.execute("COMMIT")
            except BaseException:
                _rollback_if_open(raw)
                raise
            return result

        try:
            return await self._adapter._on_writer(self._writer, apply)
        finally:
            self._release()

    async def rollback(self) -> None:
        try:
            await self._adapter._on_writer(self._writer, _rollback_if_open)
        finally:
            self._release()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._adapter._lock.release()
