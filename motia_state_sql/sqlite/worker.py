"""``Worker``: one thread owning one ``sqlite3`` connection, running whole functions on it.

SQLite calls block, so each connection of ``SqliteStateAdapter`` lives on a thread of its own and
the event loop hands it work: ``await worker.run(fn, *args)`` runs ``fn(connection, *args)``
there, one call at a time in arrival order, and resumes the caller with the result or the
exception. A whole function per hop (a batch of writes and its commit, a query and its fetch) is
what group commit needs; a call per statement would cost a thread hop each.

The thread forgets each function once it ran (so a dropped adapter can be collected and warn),
delivers to the loop the call came from and drops a result whose loop is gone (a closed
``asyncio.run``), and ends after ``close`` or ``stop`` has closed the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar

__all__ = ["Worker"]

T = TypeVar("T")

_Job = tuple[Callable[[], Any], asyncio.Future[Any] | None]
_STOP: Final = object()  # a job result: the connection is closed, the thread ends


def _deliver(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _serve(jobs: queue.SimpleQueue[_Job | None]) -> None:
    while True:
        job = jobs.get()
        if job is None:
            return
        fn, future = job
        job = None  # forget the function before the next one arrives (see the module doc)
        result: Any = None
        error: BaseException | None = None
        try:
            result = fn()
        except BaseException as exc:  # delivered to the caller, whatever it is
            error = exc
        del fn
        if future is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                future.get_loop().call_soon_threadsafe(_deliver, future, result, error)
        del future, error
        if result is _STOP:
            return
        del result


class Worker:
    """A thread with its own ``sqlite3`` connection; see the module docstring."""

    __slots__ = ("_connection", "_jobs", "_thread")

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._connection: sqlite3.Connection | None = None
        # A daemon: an adapter never closed must not keep the interpreter from exiting (SQLite
        # rolls back whatever was not committed; nothing acknowledged is lost).
        self._thread = threading.Thread(
            target=_serve, args=(self._jobs,), name="motia-state-sqlite", daemon=True
        )
        self._thread.start()

    @classmethod
    async def open(cls, connect: Callable[[], sqlite3.Connection]) -> Worker:
        """Start a thread and open its connection there with ``connect()``.

        Raises:
            sqlite3.Error: the connection could not be opened (the thread has ended).
        """
        worker = cls()
        try:
            worker._connection = await worker._submit(connect)
        except BaseException:
            worker._jobs.put(None)
            raise
        return worker

    @property
    def connection(self) -> sqlite3.Connection:
        """The connection, for use on the loop while nothing runs on the thread.

        It is opened with ``check_same_thread=False``; the caller makes sure the two never
        use it at once.
        """
        if self._connection is None:
            raise sqlite3.ProgrammingError("the connection is closed")
        return self._connection

    def _submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.put((fn, future))
        return future

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(connection, *args)`` on the thread and return its result.

        Raises:
            sqlite3.ProgrammingError: the worker was closed.
            Exception: whatever ``fn`` raised.
        """
        return await self._submit(functools.partial(fn, self.connection, *args))

    async def close(self) -> None:
        """Close the connection on the thread, after every call queued before, and end it."""
        if self._connection is None:
            return
        connection, self._connection = self._connection, None
        await self._submit(functools.partial(_close, connection))
        await asyncio.to_thread(self._thread.join)

    def stop(self) -> None:
        """Without a loop (garbage collection): have the thread close the connection and end."""
        connection, self._connection = self._connection, None
        if connection is not None:
            self._jobs.put((functools.partial(_close, connection), None))
        else:
            self._jobs.put(None)


def _close(connection: sqlite3.Connection) -> object:
    connection.close()
    return _STOP
