"""SQLite backend: schema and migrations, WAL and durability settings, locking, group commit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import sqlite3
import stat
import subprocess
import sys
import time
import venv
from pathlib import Path
from typing import Any

import pytest

from motia_state_sql import (
    ConflictError,
    InvalidOperationError,
    InvalidValueError,
    SchemaError,
    SqliteStateAdapter,
    StoreUnavailableError,
    increment,
    open_state,
    set_op,
)
from motia_state_sql.schema import HEAD_REVISION, TABLE
from motia_state_sql.sqlite import migrate

ROOT = Path(__file__).resolve().parent.parent
SPAWN = multiprocessing.get_context("spawn")


def _pragma(path: Path, name: str) -> Any:
    with sqlite3.connect(path) as raw:
        return raw.execute(f"PRAGMA {name}").fetchone()[0]


async def _adapter_pragma(store: SqliteStateAdapter, name: str) -> Any:
    writer = await store._connect()

    def read(raw: sqlite3.Connection) -> Any:
        return raw.execute(f"PRAGMA {name}").fetchone()[0]

    return await store._connections.call(writer, read)


def _hold_write_lock(path: Path) -> sqlite3.Connection:
    """Another connection (as another process would) holding the database's write lock."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


def _release(other: sqlite3.Connection, how: str) -> None:
    other.execute(how)
    other.close()


class _Ticker:
    """Counts 10 ms ticks of the event loop: proof that nothing blocks it."""

    def __init__(self) -> None:
        self.count = 0
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            self.count += 1

    def stop(self) -> None:
        self._task.cancel()


# -- schema ------------------------------------------------------------------------------------


def test_head_constant_matches_the_scripts() -> None:
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(migrate.alembic_config())
    assert scripts.get_current_head() == HEAD_REVISION


async def test_migrations_build_exactly_the_declared_schema(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import create_engine

    from motia_state_sql.schema import metadata

    async with SqliteStateAdapter(tmp_path / "s.db") as store:
        await store.set("g", "k", 1)
    engine = create_engine(f"sqlite:///{tmp_path / 's.db'}")
    with engine.connect() as connection:
        context = MigrationContext.configure(connection)
        assert context.get_current_revision() == HEAD_REVISION
        assert compare_metadata(context, metadata) == []
    engine.dispose()
    with sqlite3.connect(tmp_path / "s.db") as raw:
        (sql,) = raw.execute("SELECT sql FROM sqlite_master WHERE name = ?", (TABLE,)).fetchone()
    assert "WITHOUT ROWID" in sql
    assert 'PRIMARY KEY (group_id, "key")' in sql or "PRIMARY KEY (group_id, key)" in sql


async def test_fresh_create_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "folder" / "s.db"
    async with SqliteStateAdapter(path) as store:
        await store.set("g", "k", {"v": 1})
    async with SqliteStateAdapter(path) as store:
        assert await store.get("g", "k") == {"v": 1}
    assert _pragma(path, "journal_mode") == "wal"


def test_alembic_command_line_from_the_repo_root(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    alembic = Path(sys.executable).with_name("alembic")
    subprocess.run(
        [str(alembic), "-x", f"db={db}", "upgrade", "head"], cwd=ROOT, check=True, capture_output=True
    )
    with sqlite3.connect(db) as raw:
        assert raw.execute("SELECT version_num FROM alembic_version").fetchone()[0] == HEAD_REVISION


async def test_default_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    async with SqliteStateAdapter() as store:
        await store.set("g", "k", 1)
    assert (tmp_path / ".motia" / "motia.state.db").is_file()
    async with open_state() as store:
        assert await store.get("g", "k") == 1


async def test_memory_database_works_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    async with open_state("sqlite:///:memory:") as store:
        await store.set("g", "k", 1)
        assert await store.get("g", "k") == 1
    assert list(tmp_path.iterdir()) == []


def _open_and_write(path: str, name: str, start_at: float) -> None:
    async def main() -> None:
        async with SqliteStateAdapter(path, busy_timeout=30) as store:
            await store.set("who", name, True)

    time.sleep(max(0.0, start_at - time.time()))
    asyncio.run(main())


def test_two_processes_opening_a_new_file_at_once(tmp_path: Path) -> None:
    for attempt in range(4):
        path = str(tmp_path / f"race{attempt}.db")
        start_at = time.time() + 1.0
        procs = [SPAWN.Process(target=_open_and_write, args=(path, f"p{n}", start_at)) for n in range(2)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(60)
            assert proc.exitcode == 0
        with sqlite3.connect(path) as raw:
            assert raw.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD_REVISION,)]
            assert sorted(k for (k,) in raw.execute(f"SELECT key FROM {TABLE}")) == ["p0", "p1"]


# -- refusing what must not be touched ---------------------------------------------------------


async def test_unknown_revision_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    async with SqliteStateAdapter(path) as store:
        await store.set("g", "k", 1)
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE alembic_version SET version_num = 'zz_from_the_future'")
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = path.read_bytes()
    for _ in range(2):
        store = SqliteStateAdapter(path)
        with pytest.raises(SchemaError, match="zz_from_the_future"):
            await store.get("g", "k")
        await store.close()
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "content", [b"not a database at all" * 100, os.urandom(8192)], ids=["text", "random"]
)
async def test_a_file_that_is_not_a_database(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(content)
    store = SqliteStateAdapter(path)
    with pytest.raises(SchemaError, match="not a SQLite database"):
        await store.set("g", "k", 1)
    await store.close()
    assert path.read_bytes() == content


async def test_someone_elses_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE invoices (id INTEGER)")
    before = path.read_bytes()
    store = SqliteStateAdapter(path)
    with pytest.raises(SchemaError, match="invoices"):
        await store.get("g", "k")
    await store.close()
    assert path.read_bytes() == before


# -- legacy motia.state.json import ------------------------------------------------------------

LEGACY = (
    b'{\n  "orders:o-1": "{\\"id\\":\\"o-1\\",\\"total\\":9.5}",\n'
    b'  "trace:a:b": "[1,2]",\n  "orders:o-2": "null"\n}'
)


async def test_new_database_imports_legacy_json_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "motia.state.json").write_bytes(LEGACY)
    with caplog.at_level(logging.INFO, logger="motia_state_sql"):
        async with SqliteStateAdapter(tmp_path / "motia.state.db") as store:
            assert await store.get_group("orders") == [{"id": "o-1", "total": 9.5}, None]
            assert await store.get("trace", "a:b") == [1, 2]
            await store.delete("orders", "o-1")
    assert [r.getMessage() for r in caplog.records if "imported" in r.getMessage()] == [
        f"{tmp_path / 'motia.state.db'}: created at schema revision '0001'; imported 3 items from "
        f"{tmp_path / 'motia.state.json'}"
    ]
    assert (tmp_path / "motia.state.json").read_bytes() == LEGACY
    async with SqliteStateAdapter(tmp_path / "motia.state.db") as store:
        assert await store.get("orders", "o-1") is None  # not imported a second time


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b'{"orders:o-1": "{broken', r"motia\.state\.json"),
        (b'{"orders:o-1": "1", "orders:o-1": "2"}', r"entry 'orders:o-1' appears more than once"),
    ],
)
async def test_corrupt_legacy_json_creates_nothing(tmp_path: Path, content: bytes, says: str) -> None:
    (tmp_path / "motia.state.json").write_bytes(content)
    store = SqliteStateAdapter(tmp_path / "motia.state.db")
    with pytest.raises(SchemaError, match=says):
        await store.get("orders", "o-1")
    await store.close()
    with sqlite3.connect(tmp_path / "motia.state.db") as raw:
        assert raw.execute("SELECT name FROM sqlite_master").fetchall() == []
    (tmp_path / "motia.state.json").write_bytes(LEGACY)
    async with SqliteStateAdapter(tmp_path / "motia.state.db") as store:
        assert len(await store.items()) == 3


# What Node writes (codec.from_node): JSON.stringify({n: 1e19}) and JSON.stringify({t: "\u{1F600}"
# .substring(0, 1)}) as they appear, escaped once more, in motia.state.json.
NODE_BIG = b'"big:n": "{\\"n\\":10000000000000000000,\\"m\\":-18446744073709552000}"'
NODE_SURROGATE = b'"text:cut": "{\\"t\\":\\"\\\\ud83d\\"}"'


async def test_legacy_import_reads_big_integers_as_the_doubles_node_meant(tmp_path: Path) -> None:
    (tmp_path / "motia.state.json").write_bytes(b"{\n  " + NODE_BIG + b"\n}")
    async with SqliteStateAdapter(tmp_path / "motia.state.db") as store:
        value = await store.get("big", "n")
        assert value == {"n": 1e19, "m": -(2.0**64)}
        assert type(value["n"]) is float
        assert (await store.update("big", "n", [increment("n", 4096)])).new_value["n"] == 1e19 + 4096


async def test_legacy_entry_that_cannot_be_held_says_how_to_proceed(tmp_path: Path) -> None:
    legacy = tmp_path / "motia.state.json"
    legacy.write_bytes(b'{\n  "ok:k": "1",\n  ' + NODE_SURROGATE + b",\n  " + NODE_BIG + b"\n}")
    db = tmp_path / "motia.state.db"
    for _ in range(2):  # every open says the same, never a silent empty store
        store = SqliteStateAdapter(db)
        with pytest.raises(SchemaError) as info:
            await store.get("ok", "k")
        await store.close()
        message = str(info.value)
        for part in (str(legacy), "'text:cut'", "lone surrogate", "fix or remove", "import_legacy=False"):
            assert part in message, message
        with sqlite3.connect(db) as raw:
            assert raw.execute("SELECT name FROM sqlite_master").fetchall() == []
    async with open_state(f"sqlite:///{db}?import_legacy=false") as state:  # start without it
        assert await state.list_groups() == []
    legacy.write_bytes(b'{\n  "ok:k": "1",\n  ' + NODE_BIG + b"\n}")  # or fix the file
    db.unlink()
    async with SqliteStateAdapter(db) as store:
        assert await store.list_groups() == ["big", "ok"]


# -- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("setting", "code"), [("NORMAL", 1), ("FULL", 2)])
async def test_synchronous_setting(tmp_path: Path, setting: Any, code: int) -> None:
    async with SqliteStateAdapter(tmp_path / "s.db", synchronous=setting) as store:
        assert await _adapter_pragma(store, "synchronous") == code
        assert await _adapter_pragma(store, "journal_mode") == "wal"
        # NORMAL commits run on the event loop and must never wait there: the writer tries the
        # lock without waiting and waits (busy_timeout) on its thread instead; checkpoints are
        # moved off the loop too. FULL commits always run on the thread.
        inline = setting == "NORMAL"
        assert await _adapter_pragma(store, "busy_timeout") == (0 if inline else 5000)
        assert await _adapter_pragma(store, "wal_autocheckpoint") == (0 if inline else 1000)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SqliteStateAdapter(":memory:", synchronous="OFF")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_value_bytes"):
        SqliteStateAdapter(":memory:", max_value_bytes=0)


async def test_new_files_are_private_to_the_owner(tmp_path: Path) -> None:
    async with SqliteStateAdapter(tmp_path / "s.db") as store:
        await store.set("g", "k", 1)
        for name in ("s.db", "s.db-wal", "s.db-shm"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name


# -- locking and group commit ------------------------------------------------------------------


async def test_write_lock_held_past_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SqliteStateAdapter(path, busy_timeout=0.2) as store:
        await store.set("g", "k", 1)
        other = _hold_write_lock(path)
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="busy_timeout"):
            await store.set("g", "k", 2)
        assert time.monotonic() - started < 5
        assert await store.get("g", "k") == 1  # readers are not blocked by a writer in WAL
        _release(other, "ROLLBACK")
        await store.set("g", "k", 3)
        assert await store.get("g", "k") == 3


async def test_group_commit_isolates_failures(tmp_path: Path) -> None:
    async with SqliteStateAdapter(tmp_path / "s.db", max_value_bytes=1000) as store:
        await store.set("g", "taken", 0)
        calls = [store.set("g", f"k{n}", n) for n in range(64)]
        calls.insert(10, store.set("g", "taken", 1, if_absent=True))
        calls.insert(20, store.update("g", "taken", [{"type": "nope"}]))
        calls.insert(30, store.update("g", "k1", [increment("missing-object", 1)]))
        # Each op value fits; the value they build does not: refused inside the batch.
        calls.insert(40, store.update("g", "grown", [set_op("a", "x" * 600), set_op("b", "x" * 600)]))
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(results[10], ConflictError)
        assert isinstance(results[20], InvalidOperationError)
        assert isinstance(results[30], InvalidOperationError)  # k1 holds an int, not an object
        assert isinstance(results[40], InvalidValueError)
        assert sum(isinstance(r, Exception) for r in results) == 4
        assert await store.get_group("g") == [n for n in sorted(range(64), key=lambda n: f"k{n}")] + [0]


async def test_coroutines_lose_no_update(tmp_path: Path) -> None:
    async with SqliteStateAdapter(tmp_path / "s.db") as store:

        async def bump() -> None:
            for _ in range(20):
                await store.update("c", "k", [increment("n")])

        await asyncio.gather(*(bump() for _ in range(50)))
        assert await store.get("c", "k") == {"n": 1000}


async def test_transaction_waits_for_other_process_without_blocking_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SqliteStateAdapter(path, busy_timeout=10) as store:
        await store.set("g", "k", 1)
        other = _hold_write_lock(path)

        async def tx() -> None:
            async with store.transaction() as t:
                await t.set("g", "k", 2)

        ticks = _Ticker()
        tx_task = asyncio.create_task(tx())
        await asyncio.sleep(0.3)
        assert not tx_task.done()
        assert ticks.count >= 10  # the loop kept running while the transaction waited for the lock
        _release(other, "ROLLBACK")
        await tx_task
        ticks.stop()
        assert await store.get("g", "k") == 2


async def test_cancelled_transaction_begin_leaves_no_lock(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SqliteStateAdapter(path, busy_timeout=10) as store:
        await store.set("g", "k", 1)
        other = _hold_write_lock(path)

        async def tx() -> None:
            async with store.transaction() as t:
                await t.set("g", "k", 2)

        task = asyncio.create_task(tx())
        await asyncio.sleep(0.1)
        task.cancel()
        _release(other, "ROLLBACK")
        with pytest.raises(asyncio.CancelledError):
            await task
        await store.set("g", "k", 3)
        assert await store.get("g", "k") == 3


# -- installed from a wheel --------------------------------------------------------------------


def test_migrations_run_from_an_installed_wheel(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("motia_state_sql-*.whl")
    target = tmp_path / "venv"
    venv.create(target, with_pip=False)
    python = target / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", site, str(wheel)],
        check=True,
        capture_output=True,
    )
    # Dependencies come from this test run's environment, appended after the wheel's folder
    # (a plain path line: the editable checkout's finder is not activated there).
    deps = next(p for p in sys.path if p.endswith("site-packages") and "motia" not in p)
    (Path(site) / "deps.pth").write_text(deps + "\n")
    script = (
        "import asyncio, motia_state_sql\n"
        "from motia_state_sql import SqliteStateAdapter\n"
        "async def main():\n"
        "    async with SqliteStateAdapter('state.db') as s:\n"
        "        await s.set('g', 'k', [1])\n"
        "        print(motia_state_sql.__file__, await s.get('g', 'k'))\n"
        "asyncio.run(main())\n"
    )
    run = tmp_path / "run"
    run.mkdir()
    out = subprocess.run([str(python), "-c", script], cwd=run, check=True, capture_output=True, text=True)
    assert out.stdout.startswith(site)
    # motia-state bench lives in the package too (benchmarks/ is not in the wheel).
    bench = [str(python), "-m", "motia_state_sql", "bench", "memory://", "--ops", "5", "--workload", "set/x1"]
    benched = subprocess.run(bench, cwd=run, check=True, capture_output=True, text=True)
    assert benched.stdout.startswith("memory://\tset x1 (3 rounds)\t")
    assert out.stdout.strip().endswith("[1]")
    with sqlite3.connect(run / "state.db") as raw:
        assert raw.execute("SELECT version_num FROM alembic_version").fetchone()[0] == HEAD_REVISION


# -- commits on the loop, waits on the thread --------------------------------------------------


async def test_write_waits_on_the_thread_for_another_process(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SqliteStateAdapter(path, busy_timeout=10) as store:
        await store.set("g", "k", 1)
        other = _hold_write_lock(path)

        ticks = _Ticker()
        writes = asyncio.gather(*(store.set("g", f"w{n}", n) for n in range(20)))
        await asyncio.sleep(0.3)
        assert not writes.done()
        assert ticks.count >= 10  # the loop runs while the writes wait for the other process
        _release(other, "COMMIT")
        assert await writes == list(range(20))
        ticks.stop()
        assert len(await store.keys("g")) == 21


async def _checkpointed(store: SqliteStateAdapter) -> None:
    """Wait for the WAL checkpoint the adapter started in the background, if one runs."""
    running = store._checkpoint
    if running is not None:
        await running


async def test_wal_is_checkpointed_off_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with SqliteStateAdapter(path) as store:
        for n in range(6000):
            await store.set("g", f"k{n}", {"n": n, "pad": "x" * 200})
        await _checkpointed(store)
        wal = (tmp_path / "s.db-wal").stat().st_size
    # 6000 commits of two to three 4 KiB pages each: about 60 MB without checkpoints; with one
    # every 1000 writes the WAL is reused from its start and stays near 1000 writes' worth
    assert wal < 16 * 1024 * 1024, wal


def _wal_frames(db: Path) -> int:
    """Frames in the WAL, as another connection sees them (running a passive checkpoint)."""
    with contextlib.closing(sqlite3.connect(db)) as raw:
        (_, frames, _) = raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(frames)


@pytest.mark.parametrize("path", ["transactions", "waiting"])
async def test_every_commit_path_counts_toward_checkpoints(tmp_path: Path, path: str) -> None:
    """Automatic checkpoints are off: transaction commits and batches that waited on the writer
    thread for another process's lock must count toward the next checkpoint as batches do, or
    the WAL grows without bound."""
    db = tmp_path / "s.db"
    async with SqliteStateAdapter(db, busy_timeout=10) as store:
        if path == "transactions":
            for n in range(1000):
                async with store.transaction() as tx:
                    await tx.set("g", f"k{n % 10}", n)
        else:
            other = _hold_write_lock(db)
            writes = asyncio.gather(*(store.set("g", f"k{n}", n) for n in range(1000)))
            await asyncio.sleep(0.1)  # the batch is now waiting on the writer thread
            _release(other, "ROLLBACK")
            await writes
        await _checkpointed(store)
        await store.set("g", "after", 1)  # starts the WAL over, if it was checkpointed
        frames = _wal_frames(db)
    # Without a checkpoint the WAL holds every commit since the first (over 1000 frames for
    # the transactions, dozens for the one big batch); after one, only the last write's.
    assert frames <= 4, frames


async def test_large_results_are_read_whole(tmp_path: Path) -> None:
    async with SqliteStateAdapter(tmp_path / "s.db") as store:
        async with store.transaction() as tx:
            for n in range(1000):
                await tx.set("big", f"{n:04d}", n)
        assert await store.get_group("big") == list(range(1000))
        assert len(await store.items()) == 1000
        assert await store.keys("big") == [f"{n:04d}" for n in range(1000)]


@pytest.mark.parametrize("through", ["set", "transaction"])
async def test_a_writing_loop_lets_other_tasks_run(tmp_path: Path, through: str) -> None:
    """Commits run on the loop, but every write and transaction still yields: a busy writer
    starves nobody (a WAL checkpoint task included)."""
    async with SqliteStateAdapter(tmp_path / "s.db") as store:
        written: list[int] = []
        seen: list[int] = []

        async def writer() -> None:
            for n in range(300):
                if through == "set":
                    await store.set("g", f"k{n}", n)
                else:
                    async with store.transaction() as tx:
                        await tx.set("g", f"k{n}", n)
                written.append(n)

        async def other() -> None:
            for _ in range(100):
                seen.append(len(written))
                await asyncio.sleep(0)

        await asyncio.gather(writer(), other())
        assert any(0 < count < 300 for count in seen)  # it ran while the writer was writing
