"""``Connections``: the SQLite connections of one adapter, and the watch on its database file.

Owns connecting (the file and its folder created with the adapter's permissions, the URI a
read-only adapter opens), the set-up pragmas (WAL, ``synchronous``, busy timeout, ``query_only``
for readers, the schema check and migration), the busy retry while another process switches a
new file to WAL, the translation of ``sqlite3`` errors into this package's errors, the watch
that notices the database file deleted or replaced while open, and closing.

A file database has three connections: the writer and a reader, each on a thread of its own
(``worker.Worker``), and the *loop reader*, used on the event loop itself for small reads.
``:memory:`` has one connection, the writer, which serves reads too; a read-only adapter reads
through its writer and the loop reader. When commits run on the loop (``commits_on_loop``), the
writer's own ``sqlite3`` connection (``writer_connection``) is used on the loop too, by the
adapter holding its write lock while nothing runs on the writer's thread; its statements then
never wait for the write lock, except inside ``waiting_for_lock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, TypeVar

from ..errors import ConfigError, SchemaError, StateError, StoreUnavailableError, from_os_error
from ..revision import HEAD_REVISION
from ..rows import Clock
from . import migrate
from .worker import Worker

__all__ = ["Connections", "execute", "fetch_all", "file_id", "rollback_if_open"]

T = TypeVar("T")

# SQLite primary result codes (the low byte of sqlite_errorcode, as ``migrate.primary_code``).
_READONLY, _CORRUPT, _FULL, _NOTADB = 8, 11, 13, 26
#: Seconds between looks at the database file's identity from the write path.
FILE_CHECK_EVERY: Final = 0.001


class Connections:
    """See the module docstring."""

    __slots__ = (
        "_checked_at",
        "_clock",
        "_file_id",
        "_open_lock",
        "_side_ids",
        "busy_timeout",
        "commits_on_loop",
        "file_mode",
        "import_legacy",
        "loop_reader",
        "lost",
        "path",
        "read_only",
        "reader",
        "synchronous",
        "writer",
    )

    def __init__(
        self,
        path: str,
        *,
        synchronous: str,
        busy_timeout: float,
        file_mode: int,
        import_legacy: bool,
        read_only: bool,
        commits_on_loop: bool,
        clock: Clock,
    ) -> None:
        """Describe the connections (the options are checked by the adapter); nothing opens yet."""
        self.path = path
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self.file_mode = file_mode
        self.import_legacy = import_legacy
        self.read_only = read_only
        #: Commits run on the loop through ``writer_connection``, never waiting for the lock there.
        self.commits_on_loop = commits_on_loop
        self._clock = clock
        self.writer: Worker | None = None
        self.reader: Worker | None = None  # the writer itself for :memory: and read-only adapters
        self.loop_reader: sqlite3.Connection | None = None  # reads on the loop (file databases)
        self._open_lock = asyncio.Lock()
        # The database file's (device, inode) once open, to notice it deleted or replaced.
        self._file_id: tuple[int, int] | None = None
        self._side_ids: dict[str, tuple[int, int] | None] = {}  # the -wal and -shm files we opened
        self._checked_at = float("-inf")  # time.monotonic() of the last look at the file
        #: Why the file can no longer be written, once seen (it stays so until reopened).
        self.lost: str | None = None

    @property
    def memory(self) -> bool:
        """Whether this is ``:memory:`` (one connection, no file)."""
        return self.path == ":memory:"

    @property
    def writer_connection(self) -> sqlite3.Connection | None:
        """The writer's ``sqlite3`` connection, for use on the loop while its thread is idle."""
        return None if self.writer is None else self.writer.connection

    # -- errors -------------------------------------------------------------------------------

    def translate(self, exc: sqlite3.Error) -> StateError:
        """The ``StateError`` a user sees for ``exc``; a lost database file comes first."""
        code = migrate.primary_code(exc)
        lost = self.lost or self.look_at_file(force=True)
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

    async def call(self, worker: Worker, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(connection, *args)`` on the worker's thread: one round trip.

        Raises:
            StateError: ``fn`` raised a ``sqlite3.Error`` (translated).
        """
        try:
            return await worker.run(fn, *args)
        except sqlite3.Error as exc:
            raise self.translate(exc) from exc

    async def call_to_end(self, worker: Worker, fn: Callable[..., T], *args: Any) -> T:
        """Like ``call``, but a cancelled caller still waits for the thread to finish ``fn``."""
        task = asyncio.ensure_future(self.call(worker, fn, *args))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            with contextlib.suppress(BaseException):
                await task
            raise

    # -- the write lock -----------------------------------------------------------------------

    def _lock_wait(self, raw: sqlite3.Connection, wait: bool) -> None:
        raw.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000) if wait else 0}")

    @contextlib.contextmanager
    def waiting_for_lock(self, raw: sqlite3.Connection) -> Iterator[None]:
        """On the writer's thread: statements inside wait for the write lock up to busy_timeout.

        When commits run on the loop the writer never waits outside this block (the loop must
        not block); otherwise it always waits and this block changes nothing.
        """
        if not self.commits_on_loop:
            yield
            return
        self._lock_wait(raw, True)
        try:
            yield
        finally:
            self._lock_wait(raw, False)

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

    # -- opening ------------------------------------------------------------------------------

    def _enter_wal(self, raw: sqlite3.Connection) -> None:
        migrate.check(raw, self.path)
        raw.execute("PRAGMA journal_mode = WAL")

    def _setup(self, raw: sqlite3.Connection, writer: bool) -> None:
        self._lock_wait(raw, True)
        if not writer or (self.read_only and not self.memory):
            raw.execute("PRAGMA query_only = ON")
        if self.read_only and not self.memory:  # a new :memory: store gets its (empty) schema
            self._retry_busy(lambda: migrate.check(raw, self.path))
            revision = migrate.current_revision(raw)[0]
            if revision != HEAD_REVISION:
                raise migrate.BehindHeadError(
                    f"{self.path} is not at schema revision {HEAD_REVISION!r} (found "
                    f"{revision!r}); open it once without read_only (?mode=ro) to bring it up to date"
                )
            return
        if not writer:
            return
        legacy = (
            None if self.memory or not self.import_legacy else Path(self.path).parent / "motia.state.json"
        )
        # The schema check comes first: a foreign or newer file must not be touched, and
        # switching to WAL writes to the file header.
        self._retry_busy(lambda: self._enter_wal(raw))
        raw.execute(f"PRAGMA synchronous = {self.synchronous}")
        migrate.prepare(raw, self.path, legacy, self._clock())
        if self.commits_on_loop:
            # Checkpoints would run inside a commit, on the loop: the adapter runs them on the
            # writer thread.
            raw.execute("PRAGMA wal_autocheckpoint = 0")
            self._lock_wait(raw, False)

    async def open(self) -> Worker:
        """Open, set up and migrate every connection (once; later calls return the writer).

        Raises:
            ConfigError, SchemaError, StoreUnavailableError: the database cannot be used.
        """
        if self.writer is not None:
            return self.writer
        async with self._open_lock:
            if self.writer is not None:
                return self.writer
            if not self.memory:
                self._prepare_file()
            writer = await self._open_worker()
            reader: Worker | None = None
            try:
                await self.call(writer, self._setup, True)
                reader = writer
                if not self.memory:
                    if not self.read_only:  # one connection serves a read-only adapter
                        reader = await self._open_worker()
                        await self.call(reader, self._setup, False)
                    try:
                        loop_reader = sqlite3.connect(self._target, isolation_level=None, timeout=0, uri=True)
                        loop_reader.execute("PRAGMA query_only = ON")
                    except sqlite3.Error as exc:  # the file went, or no file handle was left
                        raise self.translate(exc) from exc
                    self.loop_reader = loop_reader
                    self._file_id = file_id(self.path)
                    self._side_ids = {path: file_id(path) for path in self._side_files()}
            except BaseException:
                if reader is not None and reader is not writer:
                    await reader.close()
                await writer.close()
                raise
            self.reader, self.writer = reader, writer
            return writer

    async def _open_worker(self) -> Worker:
        # check_same_thread=False: the adapter uses the writer on the loop while holding its
        # write lock, when nothing is queued on its thread.
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
            raise self.translate(exc) from exc

    def read_aside(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on a read-only connection of its own, opened and closed here (call it on a thread).

        For ``store_info`` on a store the adapter's own connections refuse (behind head).
        """
        try:
            raw = sqlite3.connect(self._target, isolation_level=None, timeout=self.busy_timeout, uri=True)
            try:
                raw.execute("PRAGMA query_only = ON")
                return fn(raw)
            finally:
                raw.close()
        except sqlite3.Error as exc:
            raise self.translate(exc) from exc

    @property
    def _target(self) -> str:
        """What ``sqlite3.connect(..., uri=True)`` opens: the file, read-only when asked."""
        if self.memory:
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

    # -- the database file's watch ------------------------------------------------------------

    def look_at_file(self, *, force: bool = False) -> str | None:
        """Why the database file can no longer be written (deleted or replaced), else ``None``.

        SQLite keeps writing to a file deleted under it: every such write would be acknowledged
        and lost. The write path looks (one ``stat``) at most every ``FILE_CHECK_EVERY``
        seconds, before committing; errors look every time.
        """
        if self._file_id is None:
            return None
        now = time.monotonic()
        if not force and now - self._checked_at < FILE_CHECK_EVERY:
            return None
        self._checked_at = now
        found = file_id(self.path)
        if found == self._file_id:
            return None
        what = "deleted" if found is None else "replaced by another file"
        self.lost = (
            f"{self.path} was {what} while open: writes could never be read back, so they are "
            "refused (nothing was written); restore the file, or close and open the adapter again"
        )
        return self.lost

    def check_file(self, *, force: bool = False) -> None:
        """Before a commit: refuse it when the database file was deleted or replaced.

        Raises:
            StoreUnavailableError: the file is gone or another file took its place.
        """
        lost = self.lost or self.look_at_file(force=force)
        if lost is not None:
            raise StoreUnavailableError(lost)

    def _side_files(self) -> list[str]:
        return [f"{self.path}-wal", f"{self.path}-shm"]

    def _forget_side_files(self) -> None:
        """Remove our ``-wal``/``-shm`` beside a database file that replaced ours.

        SQLite would replay our WAL's frames onto the new file when it is next opened, bending
        it; a ``-wal`` some other process made since (another identity) is left alone.
        """
        for path, known in self._side_ids.items():
            if known is not None and file_id(path) == known:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)

    # -- closing ------------------------------------------------------------------------------

    async def close(self) -> None:
        """Close every connection, each after the calls queued on it before; twice is harmless."""
        if self._file_id is not None and (self.lost or self.look_at_file(force=True)):
            self._forget_side_files()
        if self.loop_reader is not None:
            self.loop_reader.close()
            self.loop_reader = None
        reader, writer = self.reader, self.writer
        self.reader = self.writer = None
        if reader is not None and reader is not writer:
            await reader.close()
        if writer is not None:
            await writer.close()

    def release_now(self) -> None:
        """Without a loop (garbage collection): close ours, have the threads close theirs."""
        if self.loop_reader is not None:
            self.loop_reader.close()
            self.loop_reader = None
        for worker in {id(w): w for w in (self.reader, self.writer) if w is not None}.values():
            with contextlib.suppress(Exception):
                worker.stop()
        self.reader = self.writer = None


def file_id(path: str) -> tuple[int, int] | None:
    """``(device, inode)`` of the file at ``path``, or ``None`` when there is none."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def execute(raw: sqlite3.Connection, sql: str) -> None:
    """Run one statement (on a worker: ``await connections.call(worker, execute, sql)``)."""
    raw.execute(sql)


def rollback_if_open(raw: sqlite3.Connection) -> None:
    """Roll back the connection's transaction, if one is open."""
    if raw.in_transaction:
        raw.execute("ROLLBACK")


def fetch_all(raw: sqlite3.Connection, sql: str, params: tuple[Any, ...] | list[Any]) -> list[Any]:
    """Every row of one query."""
    return raw.execute(sql, params).fetchall()
