"""sqlite.commit.GroupCommit: the write queue's invariants, and batches under every arrival pattern.

The queue is given plain functions as its batch runners (they record each batch), so what is
tested is the queue itself: who shares a batch, who gets which result, what a cancelled or
failing write does. The last test counts real COMMITs of a real SQLite adapter.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from motia_state_sql import SqliteStateAdapter, StoreUnavailableError
from motia_state_sql.rows import Write
from motia_state_sql.sqlite.commit import GroupCommit, Job, WriteJob


def _key(job: Job) -> str:
    assert isinstance(job, WriteJob)
    return job.write.key


class Runner:
    """Batch runners that record each batch and answer each job with its key (or its error)."""

    def __init__(self, busy: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.on_thread_batches: list[list[str]] = []
        self.busy = busy  # "another process holds the lock": on_loop declines, on_thread runs

    @staticmethod
    def _answer(jobs: list[Job]) -> list[Any]:
        return [
            ValueError(f"bad {_key(job)}") if _key(job).startswith("bad") else _key(job)
            for job in jobs
        ]

    def on_loop(self, jobs: list[Job]) -> list[Any] | None:
        if self.busy:
            return None
        self.batches.append([_key(job) for job in jobs])
        return self._answer(jobs)

    async def on_thread(self, jobs: list[Job]) -> list[Any]:
        await asyncio.sleep(0.001)
        self.on_thread_batches.append([_key(job) for job in jobs])
        return self._answer(jobs)


def _queue(runner: Runner, lock: asyncio.Lock | None = None, timeout: float = 5.0) -> GroupCommit:
    return GroupCommit(lock or asyncio.Lock(), runner.on_loop, runner.on_thread, timeout, "test.db")


def _job(key: str) -> Job:
    return WriteJob(Write("set", "g", key), 0.0)


async def _write(commits: GroupCommit, job: Job) -> Any:
    """A caller as the adapter is one: inside its own task, awaiting the write it asked for."""
    return await commits.write(job)


def _commits_per(runner: Runner, writes: int) -> float:
    return writes / len(runner.batches)


async def test_every_caller_gets_its_own_result() -> None:
    runner = Runner()
    commits = _queue(runner)
    keys = [f"k{i}" for i in range(500)]
    assert await asyncio.gather(*(_write(commits, _job(k)) for k in keys)) == keys
    assert sorted(key for batch in runner.batches for key in batch) == sorted(keys)


async def test_a_lone_writer_commits_at_once_without_waiting_for_the_loop() -> None:
    runner = Runner()
    commits = _queue(runner)
    for i in range(50):
        task = asyncio.ensure_future(_write(commits, _job(f"k{i}")))
        await asyncio.sleep(0)  # one loop turn: a lone write has committed by then
        assert runner.batches[-1] == [f"k{i}"]
        await task
    assert len(runner.batches) == 50


async def test_a_failing_write_fails_alone() -> None:
    runner = Runner()
    commits = _queue(runner)
    results = await asyncio.gather(
        *(_write(commits, _job(k)) for k in ("a", "bad1", "b")), return_exceptions=True
    )
    assert results[0] == "a"
    assert results[2] == "b"
    assert isinstance(results[1], ValueError)


async def test_a_caller_cancelled_before_its_batch_is_not_written() -> None:
    runner = Runner()
    commits = _queue(runner)
    first = asyncio.ensure_future(_write(commits, _job("first")))
    doomed = asyncio.ensure_future(_write(commits, _job("doomed")))
    kept = asyncio.ensure_future(_write(commits, _job("kept")))
    await asyncio.sleep(0)  # all three started: "first" alone, the two others queued
    doomed.cancel()
    assert await first == "first"
    assert await kept == "kept"
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert "doomed" not in [key for batch in runner.batches for key in batch]


async def test_a_busy_database_sends_the_batch_to_the_thread() -> None:
    runner = Runner(busy=True)
    commits = _queue(runner)
    assert await asyncio.gather(*(_write(commits, _job(f"k{i}")) for i in range(20))) == [
        f"k{i}" for i in range(20)
    ]
    assert runner.batches == []
    assert sum(len(batch) for batch in runner.on_thread_batches) == 20
    await commits.drain()


async def test_writes_behind_a_held_lock_wait_then_commit_together() -> None:
    runner = Runner()
    lock = asyncio.Lock()
    commits = _queue(runner, lock)
    await lock.acquire()  # a transaction of this process
    tasks = [asyncio.ensure_future(_write(commits, _job(f"k{i}"))) for i in range(30)]
    await asyncio.sleep(0.01)
    assert runner.batches == []
    lock.release()
    assert await asyncio.gather(*tasks) == [f"k{i}" for i in range(30)]
    assert len(runner.batches) == 1


async def test_writes_behind_a_lock_held_too_long_fail_cleanly() -> None:
    runner = Runner()
    lock = asyncio.Lock()
    commits = _queue(runner, lock, timeout=0.05)
    await lock.acquire()
    results = await asyncio.gather(
        *(_write(commits, _job(f"k{i}")) for i in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, StoreUnavailableError) for r in results)
    assert runner.batches == []
    lock.release()
    assert await commits.write(_job("after")) == "after"


async def test_an_error_of_the_batch_reaches_every_caller_of_it() -> None:
    calls = 0

    def broken(jobs: list[Job]) -> list[Any] | None:
        nonlocal calls
        calls += 1
        raise StoreUnavailableError("disk gone")

    async def unused(jobs: list[Job]) -> list[Any]:
        raise AssertionError("not reached")

    lock = asyncio.Lock()
    commits = GroupCommit(lock, broken, unused, 5.0, "test.db")
    await lock.acquire()  # the ten writes queue behind it and run as one batch
    tasks = [asyncio.ensure_future(_write(commits, _job(f"k{i}"))) for i in range(10)]
    await asyncio.sleep(0)
    lock.release()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, StoreUnavailableError) for r in results)
    assert len({id(r) for r in results}) == 10  # one exception object per caller
    assert calls == 1


# -- arrival patterns: how many writes share a commit -----------------------------------------

Pattern = Callable[[Callable[[str], Awaitable[Any]], int], Awaitable[None]]


async def _workers(write: Callable[[str], Awaitable[Any]], count: int) -> None:
    keys = iter(range(count))

    async def worker() -> None:
        for i in keys:
            await write(f"k{i}")

    await asyncio.gather(*(worker() for _ in range(64)))


async def _gather(write: Callable[[str], Awaitable[Any]], count: int) -> None:
    await asyncio.gather(*(write(f"k{i}") for i in range(count)))


async def _semaphore(write: Callable[[str], Awaitable[Any]], count: int) -> None:
    bound = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        async with bound:
            await write(f"k{i}")

    await asyncio.gather(*(one(i) for i in range(count)))


async def _open_loop(write: Callable[[str], Awaitable[Any]], count: int) -> None:
    tasks: list[asyncio.Future[Any]] = []
    for start in range(0, count, 16):  # 16 new requests every loop turn
        tasks += [asyncio.ensure_future(write(f"k{i}")) for i in range(start, min(start + 16, count))]
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)


PATTERNS: dict[str, tuple[Pattern, float]] = {
    # pattern: (how it runs, the fewest writes per commit it must reach)
    "64 workers": (_workers, 50),
    "gather": (_gather, 500),
    "Semaphore(64) + gather": (_semaphore, 50),
    "open loop, 16 per turn": (_open_loop, 16),
}


@pytest.mark.parametrize("name", PATTERNS)
async def test_batches_fill_under_every_arrival_pattern(name: str) -> None:
    pattern, fewest = PATTERNS[name]
    runner = Runner()
    commits = _queue(runner)
    await pattern(lambda key: _write(commits, _job(key)), 4000)
    assert _commits_per(runner, 4000) >= fewest, runner.batches[:20]


async def test_crowding_ends_when_the_writer_is_alone_again() -> None:
    runner = Runner()
    commits = _queue(runner)
    await _gather(lambda key: _write(commits, _job(key)), 100)
    for i in range(20):
        await commits.write(_job(f"alone{i}"))
    # at most two lone writes wait for a batch of their own before writes commit at once again
    assert runner.batches[-18:] == [[f"alone{i}"] for i in range(2, 20)]


async def test_a_real_store_commits_few_times_under_a_semaphore(tmp_path: Path) -> None:
    store = SqliteStateAdapter(tmp_path / "state.db")
    await store.set("warm", "up", 0)
    commits = 0

    def count(statement: str) -> None:
        nonlocal commits
        commits += statement == "COMMIT"

    writer = store._connections.writer_connection  # the writer's own sqlite3 connection
    assert writer is not None
    writer.set_trace_callback(count)
    await _semaphore(lambda key: store.set("orders", key, {"n": key}), 2000)
    writer.set_trace_callback(None)
    assert await store.get("orders", "k1999") == {"n": "k1999"}
    assert commits <= 2000 / 40, commits
    await store.close()


async def test_a_write_waiting_for_its_batch_keeps_few_objects_alive(tmp_path: Path) -> None:
    # Thousands of waiting writes (a gather) are what the garbage collector walks over and over:
    # each object less per write is that much less collector time (docs/benchmarks.md). The
    # task itself costs four (task, context, weak reference, its coroutine); the write's share
    # is its set() coroutine, Write, WriteJob, Future, the await on it and the wake-up callback.
    store = SqliteStateAdapter(tmp_path / "state.db")
    await store.set("warm", "up", 0)

    async def call(i: int) -> None:
        await store.set("g", f"k{i}", {"n": i})

    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        tasks = [asyncio.ensure_future(call(i)) for i in range(1000)]
        await asyncio.sleep(0)  # every task has asked; the batch has not run yet
        per_write = (len(gc.get_objects()) - before) / len(tasks)
    finally:
        gc.enable()
    await asyncio.gather(*tasks)
    assert await store.get("g", "k999") == {"n": 999}
    assert per_write <= 11, per_write
    await store.close()
