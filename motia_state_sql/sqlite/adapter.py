"""SqliteStateAdapter: the default store, SQLite in WAL mode.

Connections (``connection.Connections``: opening, set-up, error translation, the file watch,
closing): a writer and a reader, each on a thread of its own (``worker.Worker``), plus a loop
reader used on the event loop itself (one shared connection for ``:memory:``). This module holds
the state-store logic over them: reads, writes through the commit queue (``commit.GroupCommit``),
transactions, and backup, vacuum, info and pruning.

Writes queue up on the event loop; a flusher takes everything queued in one loop turn as a batch
and runs it as one transaction: ``BEGIN IMMEDIATE``, every write, ``COMMIT`` (group commit). A
failed condition or bad op fails only its own write. With ``synchronous="NORMAL"`` a commit never
waits for the disk, so the batch runs right on the loop, trying the write lock without waiting;
when another process holds the lock, or with ``FULL`` (a commit waits for fsync), the batch goes
to the writer thread in one call and waits there (busy timeout), never blocking the loop. WAL
checkpoints run on the writer thread, off the loop, every thousand writes.

Point reads and small results are read on the loop through the loop reader (a few microseconds,
no thread hop); a busy database or a large result goes to the reader thread. Every read sees
committed data only (WAL lets readers run beside the writer).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final, Literal, TypeVar, cast

from .. import codec, options
from ..base import IdleGroup, StateAdapter, StoreInfo, TxStore, acquire_within, prefix_end
from ..codec import INT64_MAX, INT64_MIN
from ..errors import ConfigError, SchemaError, StateError, StoreUnavailableError
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
from .connection import Connections, execute, fetch_all, rollback_if_open
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
_LOOP_READ_ROWS = 256
#: Rows written between WAL checkpoints (run on the writer thread) when commits run on the loop.
_CHECKPOINT_EVERY = 1000


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
        "_checkpoint",
        "_commits",
        "_connections",
        "_dirty",
        "_last_purge",
        "_lock",
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
        self._connections = Connections(
            self.path,
            synchronous=synchronous,
            busy_timeout=self.busy_timeout,
            file_mode=self.file_mode,
            import_legacy=self.import_legacy,
            read_only=self.read_only,
            # Commits that never wait for the disk run on the loop (see the module docstring).
            commits_on_loop=synchronous == "NORMAL" or self.path == ":memory:",
            clock=clock,
        )
        self._dirty = 0
        self._checkpoint: asyncio.Task[None] | None = None
        # Held by each group-commit batch and for a whole transaction: one writer at a time.
        self._lock = asyncio.Lock()
        self._commits = GroupCommit(
            self._lock,
            self._commit_on_loop if self._commits_on_loop else None,
            self._commit_on_thread,
            self.busy_timeout,
            self.path,
        )
        self._last_purge = float("-inf")
        self._closed = False

    def __repr__(self) -> str:
        mode = ", read_only=True" if self.read_only else ""
        return f"SqliteStateAdapter(path={self.path!r}, synchronous={self.synchronous!r}{mode})"

    def _holds_resources(self) -> bool:
        return self._connections.writer is not None

    def _release_now(self) -> None:
        self._connections.release_now()

    @property
    def _memory(self) -> bool:
        return self.path == ":memory:"

    @property
    def _commits_on_loop(self) -> bool:
        return self._connections.commits_on_loop

    async def _connect(self) -> Worker:
        """The writer, once every connection is open, set up and migrated."""
        if self._connections.writer is None:
            self._check_closed()
        return await self._connections.open()

    async def __aenter__(self) -> SqliteStateAdapter:
        await self._connect()
        return self

    async def _close(self) -> None:
        await self._commits.drain()
        if self._checkpoint is not None:
            with contextlib.suppress(BaseException):
                await self._checkpoint
        await self._connections.close()

    # -- reads --------------------------------------------------------------------------------

    async def _reader(self) -> Worker:
        """The reader, once every connection is open."""
        connections = self._connections
        if connections.reader is None:
            await self._connect()
        assert connections.reader is not None
        return connections.reader

    async def _query(self, sql: str, params: tuple[Any, ...] | list[Any]) -> list[Any]:
        connections = self._connections
        reader = await self._reader()
        if connections.lost is not None:
            raise StoreUnavailableError(connections.lost)
        try:
            if self._memory:  # one connection: wait out open transactions, read committed only
                await acquire_within(self._lock, self.busy_timeout, self.path)
                try:
                    assert connections.writer_connection is not None
                    return connections.writer_connection.execute(sql, params).fetchall()
                finally:
                    self._lock.release()
            if connections.loop_reader is not None:
                try:
                    cursor = connections.loop_reader.execute(sql, params)
                    rows = cursor.fetchmany(_LOOP_READ_ROWS + 1)
                    cursor.close()
                    if len(rows) <= _LOOP_READ_ROWS:
                        return rows
                    # large: read it whole, as one snapshot, on the reader thread
                except sqlite3.OperationalError as exc:
                    if not migrate.is_busy(exc):
                        raise
            return await connections.call(reader, fetch_all, sql, params)
        except sqlite3.Error as exc:
            raise connections.translate(exc) from exc

    async def _read_row(self, group_id: str, key: str, now: float) -> Row | None:
        connections = self._connections
        loop_reader = connections.loop_reader
        if loop_reader is not None and connections.lost is None:  # every get's point read: on the loop
            try:
                found = loop_reader.execute(_SELECT_LIVE_ROW, (group_id, key, now)).fetchone()
            except sqlite3.OperationalError as exc:
                if not migrate.is_busy(exc):
                    raise connections.translate(exc) from exc
            except sqlite3.Error as exc:
                raise connections.translate(exc) from exc
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

        try:
            reader = await self._reader()
        except migrate.BehindHeadError:
            # Read-only and behind head: report what is there, on a connection of its own
            # (the adapter's reads stay refused), without migrating or writing anything.
            return await asyncio.to_thread(self._connections.read_aside, read)
        if not self._memory:
            return await self._connections.call(reader, read)
        await acquire_within(self._lock, self.busy_timeout, self.path)
        try:
            return await self._connections.call(reader, read)
        finally:
            self._lock.release()

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
        reader = await self._reader()
        return await self._track(self._connections.call(reader, copy))

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
            with self._connections.waiting_for_lock(raw):
                raw.execute("VACUUM")
                raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")

        writer = await self._connect()
        await acquire_within(self._lock, self.busy_timeout, self.path)
        try:
            await self._track(self._connections.call_to_end(writer, run))
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

    def _commit_on_loop(self, jobs: list[Job]) -> list[Any] | None:
        """Run a batch on the loop; ``None`` when another process holds the write lock."""
        connections = self._connections
        assert connections.writer_connection is not None
        try:
            results = self._apply_batch(connections.writer_connection, jobs)
        except sqlite3.OperationalError as exc:
            if migrate.is_busy(exc):
                return None
            raise connections.translate(exc) from exc
        except sqlite3.Error as exc:
            raise connections.translate(exc) from exc
        self._wrote(len(jobs))
        return results

    def _wrote(self, count: int) -> None:
        """Count committed writes; checkpoint the WAL every ``_CHECKPOINT_EVERY`` of them.

        Automatic checkpoints are off when commits run on the loop (they would run inside a
        commit), so every commit path counts here, or the WAL would grow without bound.
        """
        if not self._commits_on_loop or self._memory:
            return
        self._dirty += count
        if self._dirty >= _CHECKPOINT_EVERY and self._checkpoint is None:
            self._dirty = 0
            self._checkpoint = asyncio.get_running_loop().create_task(self._run_checkpoint())

    async def _commit_on_thread(self, jobs: list[Job]) -> list[Any]:
        """With ``_lock`` held: run a batch on the writer thread, waiting for the write lock."""
        writer = self._connections.writer
        assert writer is not None
        results = await self._connections.call(writer, self._apply_batch_waiting, jobs)
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
                writer = self._connections.writer
                if writer is not None:
                    await self._connections.call(writer, execute, "PRAGMA wal_checkpoint(PASSIVE)")
        except StateError:
            pass  # another process is checkpointing: a later checkpoint catches up
        finally:
            self._checkpoint = None

    def _apply_batch_waiting(self, raw: sqlite3.Connection, jobs: list[Job]) -> list[Any]:
        """On the writer thread: wait for the write lock up to busy_timeout, then run the batch."""
        with self._connections.waiting_for_lock(raw):
            return self._apply_batch(raw, jobs)

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
            now = jobs[0].now if len(jobs) == 1 else max(job.now for job in jobs)
            if now - self._last_purge >= self.purge_interval:
                raw.execute(_PURGE, (now, _PURGE_BATCH))
                self._last_purge = now
            self._connections.check_file()
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
        write, now = job.write, job.now
        found = raw.execute(_SELECT_ROW, (write.group_id, write.key)).fetchone()
        current = _row(found) if found is not None else None
        if current is not None and not current.live(now):
            current = None
        plan = plan_write(write, current, now)
        if plan is not UNCHANGED:
            _persist(raw, write.group_id, write.key, plan)  # type: ignore[arg-type]
        return plan, current

    def _write(self, write: Write, now: float) -> Awaitable[WriteResult]:
        # Not a coroutine of its own once connected: a write waiting for its batch keeps one
        # object less alive.
        if self._connections.writer is None:
            return self._connect_and_write(write, now)
        return cast("Awaitable[WriteResult]", self._commits.write(WriteJob(write, now)))

    async def _connect_and_write(self, write: Write, now: float) -> WriteResult:
        await self._connect()
        return cast(WriteResult, await self._commits.write(WriteJob(write, now)))

    async def _clear(self, group_id: str, now: float) -> None:
        if self._connections.writer is None:
            await self._connect()
        await self._commits.submit(ClearJob(group_id, now))

    # -- transactions -------------------------------------------------------------------------

    async def _begin(self) -> TxStore:
        writer = await self._connect()
        await acquire_within(self._lock, self.busy_timeout, self.path)
        connections = self._connections
        try:
            if self._commits_on_loop:
                assert connections.writer_connection is not None
                try:
                    connections.writer_connection.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    if not migrate.is_busy(exc):
                        raise connections.translate(exc) from exc
                    await connections.call_to_end(writer, self._begin_waiting)
            else:
                await connections.call_to_end(writer, execute, "BEGIN IMMEDIATE")
        except BaseException:
            # Failed, or cancelled after BEGIN ran: leave no transaction and no lock behind.
            with contextlib.suppress(BaseException):
                await connections.call_to_end(writer, rollback_if_open)
            self._lock.release()
            raise
        return _SqliteTx(self, writer)

    def _begin_waiting(self, raw: sqlite3.Connection) -> None:
        with self._connections.waiting_for_lock(raw):
            raw.execute("BEGIN IMMEDIATE")

    async def _on_writer(self, writer: Worker, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(raw, *args)`` with ``_lock`` held: on the loop when commits do not wait for disk."""
        connections = self._connections
        if self._commits_on_loop:
            assert connections.writer_connection is not None
            try:
                return fn(connections.writer_connection, *args)
            except sqlite3.Error as exc:
                raise connections.translate(exc) from exc
        return await connections.call_to_end(writer, fn, *args)


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
    write, now = job.write, job.now
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
        rows = await self._adapter._on_writer(self._writer, fetch_all, _SELECT_LIVE_ROW, (group_id, key, now))
        return _row(rows[0]) if rows else None

    async def read_rows(self, group_id: str | None, now: float) -> list[RowEntry]:
        sql, params = _rows_sql(group_id, now, [])
        rows = await self._adapter._on_writer(self._writer, fetch_all, sql, params)
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
                self._adapter._connections.check_file(force=True)
                raw.execute("COMMIT")
            except BaseException:
                rollback_if_open(raw)
                raise
            return result

        try:
            return await self._adapter._on_writer(self._writer, apply)
        finally:
            self._release()

    async def rollback(self) -> None:
        try:
            await self._adapter._on_writer(self._writer, rollback_if_open)
        finally:
            self._release()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._adapter._lock.release()
