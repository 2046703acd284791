"""``GroupCommit``: the write queue of one SQLite adapter; writes of one loop turn commit together.

A write (``Job``) either commits alone, right away, or joins the queue. Whatever is queued when
the loop gets to the flush callback runs as one batch: one transaction, one commit.

Which writes share a batch depends on how they arrive, and the queue adapts to it:

* A lone writer (one coroutine, or writes far apart) commits at once, with no added latency,
  and yields to other tasks once a millisecond (not after every write: a loop turn costs as much
  as the rest of a write).
* A write arriving while another is committing or queued makes the queue *crowded*. While
  crowded, every write queues, and the flush waits one more loop turn before it commits: tasks
  that a finished batch (or a released semaphore, or a new request) wakes up arrive one loop turn
  after the writes that woke them, and that extra turn lets them join instead of each committing
  almost alone. ``gather`` of many tasks, ``Semaphore``-bounded ``gather``, long-lived workers and
  open-loop arrivals all fill batches this way.
* Two batches in a row of a single write end the crowding: the writer is alone again.

Each caller is resumed with its own result or exception once its batch committed; a caller
cancelled before its batch started is dropped, and nothing of it is written.

The adapter says how to run a batch: ``on_loop(jobs)`` runs it on the event loop without waiting
for any lock (``None`` when another process holds the write lock; only given when commits never
wait for the disk) and ``on_thread(jobs)`` runs it on the writer thread, waiting for the lock up
to the busy timeout. Batches and transactions share ``lock``: one writer at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from ..base import acquire_within
from ..errors import StateError
from ..rows import Write

__all__ = ["ClearJob", "GroupCommit", "Job", "WriteJob"]



class WriteJob(NamedTuple):
    """A queued single-key write, and the time it was asked (expiry is judged at that time)."""

    write: Write
    now: float


class ClearJob(NamedTuple):
    """A queued clearing of one group, and the time it was asked."""

    group_id: str
    now: float


#: What the queue holds: a single-key write, or the clearing of a group.
Job = WriteJob | ClearJob
#: Seconds a run of lone writes may keep the loop before one of them yields to other tasks.
_YIELD_EVERY = 0.001
OnLoop = Callable[[list[Job]], "list[Any] | None"]
OnThread = Callable[[list[Job]], Awaitable[list[Any]]]


class GroupCommit:
    """See the module docstring."""

    __slots__ = (
        "_busy_timeout",
        "_crowded",
        "_deferred",
        "_flusher",
        "_futures",
        "_label",
        "_lock",
        "_lone",
        "_on_loop",
        "_on_thread",
        "_queue",
        "_scheduled",
        "_singles",
        "_yielded",
    )

    def __init__(
        self, lock: asyncio.Lock, on_loop: OnLoop | None, on_thread: OnThread, busy_timeout: float, label: str
    ) -> None:
        self._lock = lock
        self._on_loop = on_loop
        self._on_thread = on_thread
        self._busy_timeout = busy_timeout
        self._label = label
        # What is queued, as two lists in step (no pair object per write: with thousands of
        # writes waiting, fewer objects means fewer and shorter garbage collector passes).
        self._queue: list[Job] = []
        self._futures: list[asyncio.Future[Any]] = []
        self._scheduled = False  # a flush callback is due in this loop turn
        self._flusher: asyncio.Task[None] | None = None  # runs batches that wait for the lock
        self._lone = False  # a write that committed alone has not yet resumed its caller
        self._yielded = float("-inf")  # time.monotonic() when a lone write last yielded
        self._crowded = False  # writes arrive together: queue them all (see the module docstring)
        self._deferred = False  # the due flush callback already waited its extra loop turn
        self._singles = 0  # batches of one write in a row, while crowded

    def alone(self) -> bool:
        """Whether a write arriving now is the only one: nothing queued, running or just written.

        Such a write commits at once on the loop; one arriving beside others joins their batch.
        """
        return (
            self._on_loop is not None
            and not self._crowded
            and not self._lone
            and not self._queue
            and not self._scheduled
            and self._flusher is None
            and not self._lock.locked()
        )

    def write(self, job: Job) -> Awaitable[Any]:
        """Commit ``job`` (alone when ``alone()``, else in the next batch); await its result.

        A lone write commits during this call, before it returns; callers await the result at
        once, inside the task that asked (as the adapter does), so a task is what shares a batch.

        Raises (when awaited):
            Exception: the job's own error (a failed condition, a bad op), or the batch's.
        """
        if self.alone():
            assert self._on_loop is not None
            results = self._on_loop([job])
            if results is not None:
                return self._committed_alone(results[0])
        return self.submit(job)

    async def _committed_alone(self, result: Any) -> Any:
        now = time.monotonic()
        if now - self._yielded >= _YIELD_EVERY:
            # Yield now and then (a writing loop starves nobody for long); writers arriving
            # meanwhile queue and commit as one batch.
            self._yielded = now
            self._lone = True
            try:
                await asyncio.sleep(0)
            finally:
                self._lone = False
        if isinstance(result, Exception):
            raise result
        return result

    def submit(self, job: Job) -> asyncio.Future[Any]:
        """Queue ``job`` for the next batch; the future resolves once its batch committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append(job)
        self._futures.append(future)
        self._crowded = self._crowded or len(self._queue) > 1 or self._lone or self._lock.locked()
        if self._flusher is None and not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush_now)
        return future

    async def drain(self) -> None:
        """Wait until every queued batch has run (``close()``)."""
        flusher = self._flusher
        if flusher is not None:
            await asyncio.gather(flusher, return_exceptions=True)

    def _take(self) -> tuple[list[Job], list[asyncio.Future[Any]]]:
        """The queued batch, less the writes whose callers were cancelled meanwhile."""
        jobs, futures = self._queue, self._futures
        self._queue, self._futures = [], []
        if len(jobs) > 1:
            self._singles = 0
        else:
            self._singles += 1
            if self._singles >= 2:
                self._crowded = False
        if any(future.done() for future in futures):
            kept = [at for at, future in enumerate(futures) if not future.done()]
            jobs, futures = [jobs[at] for at in kept], [futures[at] for at in kept]
        return jobs, futures

    def _flush_now(self) -> None:
        """Loop callback: run the queued batch right here when the lock is free, else in a task."""
        if self._crowded and not self._deferred and self._flusher is None:
            self._deferred = True  # one more loop turn: writers woken by the last one join
            asyncio.get_running_loop().call_soon(self._flush_now)
            return
        self._scheduled = False
        self._deferred = False
        if self._flusher is not None:
            return  # the flusher takes the queue
        if self._on_loop is not None and not self._lock.locked():
            jobs, futures = self._take()
            if not jobs:
                return
            try:
                results = self._on_loop(jobs)
            except BaseException as exc:
                _fail(futures, exc)
                if not isinstance(exc, Exception):
                    raise
                return
            if results is not None:
                _deliver(futures, results)
                return
            # Another process holds the lock: wait for it on the thread.
            self._queue[:0] = jobs
            self._futures[:0] = futures
        self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self._queue:
                jobs, futures = self._take()
                if not jobs:
                    continue
                try:
                    await acquire_within(self._lock, self._busy_timeout, self._label)
                    try:
                        results = self._on_loop(jobs) if self._on_loop is not None else None
                        if results is None:
                            results = await self._on_thread(jobs)
                    finally:
                        self._lock.release()
                except BaseException as exc:
                    _fail(futures, exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                _deliver(futures, results)
        finally:
            self._flusher = None
            for future in self._futures:
                if not future.done():
                    future.set_exception(StateError("the write was abandoned: its flusher stopped"))
            self._queue.clear()
            self._futures.clear()


def _deliver(futures: list[asyncio.Future[Any]], results: list[Any]) -> None:
    for future, result in zip(futures, results, strict=True):
        if future.done():
            continue
        if isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)


def _fail(futures: list[asyncio.Future[Any]], exc: BaseException) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(_copy_error(exc))


def _copy_error(exc: BaseException) -> BaseException:
    """A fresh exception per waiting caller, so tracebacks do not pile onto one object."""
    if isinstance(exc, StateError):
        copy = type(exc)(*exc.args)
        copy.__cause__ = exc.__cause__
        return copy
    return exc
