"""sqlite.connection.Connections: set-up, busy retry, error translation, the file watch, close."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import pytest

from motia_state_sql.errors import ConfigError, SchemaError, StateError, StoreUnavailableError
from motia_state_sql.revision import TABLE
from motia_state_sql.sqlite.connection import Connections, fetch_all

SPAWN = multiprocessing.get_context("spawn")


def _connections(
    path: Path | str, *, synchronous: str = "NORMAL", busy_timeout: float = 5.0, read_only: bool = False
) -> Connections:
    return Connections(
        str(path),
        synchronous=synchronous,
        busy_timeout=busy_timeout,
        file_mode=0o600,
        import_legacy=False,
        read_only=read_only,
        commits_on_loop=synchronous == "NORMAL" or str(path) == ":memory:",
        clock=time.time,
    )


@pytest.fixture
async def opened(tmp_path: Path) -> AsyncIterator[Connections]:
    connections = _connections(tmp_path / "s.db")
    await connections.open()
    yield connections
    await connections.close()


def _pragma(raw: sqlite3.Connection, name: str) -> Any:
    return raw.execute(f"PRAGMA {name}").fetchone()[0]


async def _on(connections: Connections, which: str, name: str) -> Any:
    worker = getattr(connections, which)
    assert worker is not None
    return await connections.call(worker, _pragma, name)


# -- set-up ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("synchronous", "level"), [("NORMAL", 1), ("FULL", 2)])
async def test_set_up_pragmas(tmp_path: Path, synchronous: str, level: int) -> None:
    connections = _connections(tmp_path / "s.db", synchronous=synchronous, busy_timeout=2.5)
    await connections.open()
    try:
        assert await _on(connections, "writer", "journal_mode") == "wal"
        assert await _on(connections, "writer", "synchronous") == level
        assert await _on(connections, "writer", "query_only") == 0
        if synchronous == "NORMAL":  # commits run on the loop: no waiting, no automatic checkpoint
            assert await _on(connections, "writer", "busy_timeout") == 0
            assert await _on(connections, "writer", "wal_autocheckpoint") == 0
        else:
            assert await _on(connections, "writer", "busy_timeout") == 2500
            assert await _on(connections, "writer", "wal_autocheckpoint") == 1000
        assert connections.reader is not connections.writer
        assert await _on(connections, "reader", "query_only") == 1
        assert await _on(connections, "reader", "busy_timeout") == 2500
        assert connections.loop_reader is not None
        assert _pragma(connections.loop_reader, "query_only") == 1
        with pytest.raises(sqlite3.OperationalError):
            connections.loop_reader.execute("CREATE TABLE t (x)")
    finally:
        await connections.close()
    assert oct(os.stat(tmp_path / "s.db").st_mode & 0o777) == oct(0o600)


async def test_waiting_for_lock_only_changes_a_writer_that_commits_on_the_loop(tmp_path: Path) -> None:
    for synchronous, outside in (("NORMAL", 0), ("FULL", 1500)):
        connections = _connections(tmp_path / f"{synchronous}.db", synchronous=synchronous, busy_timeout=1.5)
        await connections.open()
        try:

            def inside(raw: sqlite3.Connection, c: Connections = connections) -> int:
                with c.waiting_for_lock(raw):
                    return int(_pragma(raw, "busy_timeout"))

            assert connections.writer is not None
            assert await connections.call(connections.writer, inside) == 1500
            assert await _on(connections, "writer", "busy_timeout") == outside
        finally:
            await connections.close()


async def test_memory_has_one_connection() -> None:
    connections = _connections(":memory:")
    writer = await connections.open()
    try:
        assert connections.reader is writer
        assert connections.loop_reader is None
        assert connections.writer_connection is writer.connection
        assert await connections.open() is writer  # once
    finally:
        await connections.close()


async def test_read_only_reads_through_one_connection_and_refuses_an_old_schema(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    first = _connections(path)
    await first.open()
    await first.close()
    connections = _connections(path, read_only=True)
    writer = await connections.open()
    try:
        assert connections.reader is writer
        assert await _on(connections, "writer", "query_only") == 1
    finally:
        await connections.close()

    plain = tmp_path / "plain.db"
    with sqlite3.connect(plain) as raw:
        raw.execute("PRAGMA user_version = 0")
        raw.execute("VACUUM")  # a valid, empty database with no schema of ours
    before = plain.read_bytes()
    with pytest.raises(SchemaError, match="not at schema revision"):
        await _connections(plain, read_only=True).open()
    assert plain.read_bytes() == before


async def test_read_only_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailableError, match="does not exist"):
        await _connections(tmp_path / "missing.db", read_only=True).open()
    assert not (tmp_path / "missing.db").exists()


async def test_a_folder_is_not_a_database_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder"):
        await _connections(tmp_path).open()


# -- the busy retry gives up with our error, within the timeout ---------------------------------


def _hold_exclusive(path: str, ready: EventType, release: EventType) -> None:
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("BEGIN EXCLUSIVE")  # on a file not yet in WAL mode: no reader, no writer
    ready.set()
    release.wait(60)
    raw.execute("ROLLBACK")
    raw.close()


@contextlib.contextmanager
def _locked_by_another_process(path: Path) -> Iterator[EventType]:
    """A new, empty database file that another process holds exclusively until the event is set."""
    path.touch()
    ready, release = SPAWN.Event(), SPAWN.Event()
    holder = SPAWN.Process(target=_hold_exclusive, args=(str(path), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        yield release
    finally:
        release.set()
        holder.join(60)
    assert holder.exitcode == 0


async def test_busy_open_gives_up_within_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with _locked_by_another_process(path):
        connections = _connections(path, busy_timeout=0.5)
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError, match=r"busy_timeout=0\.5"):
            await connections.open()
        took = time.monotonic() - started
        assert 0.4 <= took < 3, took
        assert connections.writer is None  # nothing left open


async def test_busy_open_succeeds_once_the_lock_is_released_in_time(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with _locked_by_another_process(path) as release:
        asyncio.get_running_loop().call_later(0.3, release.set)
        connections = _connections(path, busy_timeout=10)
        await connections.open()
        await connections.close()
    with sqlite3.connect(path) as raw:
        names = {name for (name,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert TABLE in names


# -- error translation -------------------------------------------------------------------------


def _error(run: Callable[[], Any]) -> sqlite3.Error:
    with pytest.raises(sqlite3.Error) as caught:
        run()
    return caught.value


def test_translation_of_each_kind_of_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE t (x NOT NULL)")
    connections = _connections(path, busy_timeout=0.25)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    waiter = sqlite3.connect(path, isolation_level=None, timeout=0)
    busy = _error(lambda: waiter.execute("BEGIN IMMEDIATE"))
    holder.execute("ROLLBACK")
    read_only = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    readonly = _error(lambda: read_only.execute("INSERT INTO t VALUES (1)"))
    small = sqlite3.connect(path, isolation_level=None)
    small.execute("PRAGMA max_page_count = 3")
    full = _error(lambda: small.execute("INSERT INTO t VALUES (?)", (b"x" * 100_000,)))
    not_null = _error(lambda: small.execute("INSERT INTO t VALUES (NULL)"))
    no_table = _error(lambda: small.execute("SELECT * FROM missing"))
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database, only text " * 200)
    junk = sqlite3.connect(garbage)
    not_a_database = _error(lambda: junk.execute("SELECT * FROM sqlite_master"))
    for conn in (holder, waiter, read_only, small, junk):
        conn.close()

    expected: list[tuple[sqlite3.Error, type[StateError], str]] = [
        (busy, StoreUnavailableError, "past busy_timeout=0.25s"),
        (readonly, ConfigError, "read-only for this process"),
        (full, StoreUnavailableError, "database or disk is full"),
        (not_a_database, SchemaError, "not a SQLite database"),
        (no_table, StoreUnavailableError, "no such table"),
        (not_null, StateError, "sqlite error"),
    ]
    for exc, kind, says in expected:
        translated = connections.translate(exc)
        assert type(translated) is kind, (exc, translated)
        assert says in str(translated)
        assert str(path) in str(translated)


async def test_a_call_raises_our_error(opened: Connections) -> None:
    assert opened.reader is not None
    with pytest.raises(StoreUnavailableError, match="no such table"):
        await opened.call(opened.reader, fetch_all, "SELECT * FROM missing", ())


# -- the database file's watch -----------------------------------------------------------------


async def test_a_deleted_file_is_seen_and_wins_over_every_error(opened: Connections) -> None:
    opened.check_file(force=True)  # still there
    os.unlink(opened.path)
    with pytest.raises(StoreUnavailableError, match="was deleted while open"):
        opened.check_file(force=True)
    assert opened.lost is not None
    with pytest.raises(StoreUnavailableError, match="was deleted"):
        opened.check_file()
    translated = opened.translate(sqlite3.OperationalError("no such table: x"))
    assert isinstance(translated, StoreUnavailableError)
    assert "deleted" in str(translated)


async def test_a_replaced_file_is_seen_and_its_new_file_kept_clean(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    connections = _connections(path)
    writer = await connections.open()

    def write(raw: sqlite3.Connection) -> None:
        with connections.waiting_for_lock(raw):
            raw.execute("CREATE TABLE mine (x)")
            raw.execute("INSERT INTO mine VALUES (1)")

    await connections.call(writer, write)
    assert Path(f"{path}-wal").exists()
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as raw:
        raw.execute("CREATE TABLE theirs (y)")
        raw.execute("INSERT INTO theirs VALUES (2)")
    os.replace(other, path)
    with pytest.raises(StoreUnavailableError, match="replaced by another file"):
        connections.check_file(force=True)
    await connections.close()
    assert not Path(f"{path}-wal").exists()  # our WAL would replay onto their file
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert raw.execute("SELECT y FROM theirs").fetchall() == [(2,)]


async def test_a_wal_made_by_someone_else_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    connections = _connections(path)
    await connections.open()
    os.unlink(path)
    os.unlink(f"{path}-wal")
    Path(f"{path}-wal").write_bytes(b"")  # another identity: not the -wal we opened
    await connections.close()
    assert Path(f"{path}-wal").exists()


# -- close -------------------------------------------------------------------------------------


async def test_close_drains_and_is_idempotent(tmp_path: Path) -> None:
    connections = _connections(tmp_path / "s.db")
    writer = await connections.open()
    reader = connections.reader
    assert reader is not None

    def slow(raw: sqlite3.Connection, seconds: float) -> str:
        time.sleep(seconds)
        return str(_pragma(raw, "journal_mode"))

    on_writer = asyncio.ensure_future(connections.call(writer, slow, 0.3))
    on_reader = asyncio.ensure_future(connections.call(reader, slow, 0.3))
    await asyncio.sleep(0)  # both calls are queued on their threads
    await connections.close()
    assert on_writer.done()  # close waited for both
    assert on_reader.done()
    assert await on_writer == await on_reader == "wal"
    assert connections.writer is None
    assert connections.reader is None
    assert connections.loop_reader is None
    assert connections.writer_connection is None
    await connections.close()  # twice: harmless
    with pytest.raises(StateError, match="closed"):
        await connections.call(writer, slow, 0)


async def test_release_now_without_a_loop_stops_every_connection(tmp_path: Path) -> None:
    connections = _connections(tmp_path / "s.db")
    writer = await connections.open()
    connections.release_now()
    assert connections.writer is None
    assert connections.reader is None
    assert connections.loop_reader is None
    with pytest.raises(StateError, match="closed"):
        await connections.call(writer, _pragma, "journal_mode")
    connections.release_now()  # twice: harmless
