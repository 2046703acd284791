"""sqlite.worker.Worker: one thread per connection, whole functions per hop."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import threading
import weakref
from pathlib import Path
from typing import Any

import pytest

from motia_state_sql.sqlite.worker import Worker


def _connect(path: Path) -> Any:
    return lambda: sqlite3.connect(path, isolation_level=None, check_same_thread=False)


def _ours() -> int:
    """Worker threads alive now."""
    return sum(thread.name == "motia-state-sqlite" for thread in threading.enumerate())


def _join_ours() -> None:
    """Wait (up to 5 s each) for worker threads told to end."""
    for thread in threading.enumerate():
        if thread.name == "motia-state-sqlite":
            thread.join(5)


def _thread_of(raw: sqlite3.Connection) -> int:
    return threading.get_ident()


async def test_calls_run_on_one_thread_in_order(tmp_path: Path) -> None:
    worker = await Worker.open(_connect(tmp_path / "w.db"))
    seen: list[int] = []

    def note(raw: sqlite3.Connection, n: int) -> int:
        seen.append(n)
        return n * 2

    results = await asyncio.gather(*(worker.run(note, n) for n in range(100)))
    assert results == [n * 2 for n in range(100)]
    assert seen == list(range(100))
    threads = {await worker.run(_thread_of) for _ in range(3)}
    assert len(threads) == 1
    assert threads != {threading.get_ident()}
    await worker.close()


async def test_an_error_reaches_the_caller_and_the_thread_goes_on(tmp_path: Path) -> None:
    worker = await Worker.open(_connect(tmp_path / "w.db"))
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        await worker.run(lambda raw: raw.execute("SELECT * FROM missing_table"))
    assert await worker.run(lambda raw: raw.execute("SELECT 1").fetchone()) == (1,)
    await worker.close()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        await worker.run(lambda raw: None)


async def test_close_closes_the_connection_and_ends_the_thread(tmp_path: Path) -> None:
    before = _ours()
    worker = await Worker.open(_connect(tmp_path / "w.db"))
    raw = worker.connection
    assert _ours() == before + 1
    await worker.close()
    assert _ours() == before
    with pytest.raises(sqlite3.ProgrammingError):
        raw.execute("SELECT 1")
    await worker.close()  # twice is harmless


def test_a_loop_that_closed_does_not_stop_the_thread(tmp_path: Path) -> None:
    async def start() -> Worker:
        return await Worker.open(_connect(tmp_path / "w.db"))

    worker = asyncio.run(start())
    release = threading.Event()

    async def abandon() -> None:
        # The call finishes after this loop has closed: its answer has nowhere to go.
        task = asyncio.ensure_future(worker.run(lambda raw: release.wait(5)))
        await asyncio.sleep(0)
        task.cancel()

    asyncio.run(abandon())
    release.set()

    async def later() -> Any:
        answer = await worker.run(lambda raw: raw.execute("SELECT 2").fetchone())
        await worker.close()
        return answer

    assert asyncio.run(later()) == (2,)


async def test_a_function_is_forgotten_once_run(tmp_path: Path) -> None:
    worker = await Worker.open(_connect(tmp_path / "w.db"))

    class Job:
        def __call__(self, raw: sqlite3.Connection) -> int:
            return 1

    job = Job()
    gone = weakref.ref(job)
    assert await worker.run(job) == 1
    del job
    gc.collect()
    assert gone() is None  # the idle thread holds no reference to what it last ran
    await worker.close()


def test_stop_without_a_loop_ends_the_thread(tmp_path: Path) -> None:
    before = _ours()
    worker = asyncio.run(Worker.open(_connect(tmp_path / "w.db")))
    worker.stop()
    _join_ours()
    assert _ours() == before


async def test_a_connection_that_cannot_open_ends_the_thread(tmp_path: Path) -> None:
    before = _ours()
    with pytest.raises(sqlite3.OperationalError):
        await Worker.open(lambda: sqlite3.connect(f"file:{tmp_path}/none/x.db?mode=ro", uri=True))
    _join_ours()
    assert _ours() == before
