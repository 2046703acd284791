"""Running a store in production: online backup, store info, pruning idle groups, compaction, ping.

The logic beneath ``motia-state backup``, ``info``, ``prune``, ``db vacuum`` and ``ping``; the
command line (``cli.py``) only parses arguments and prints. Each function takes an adapter (or a
URL) and works through the adapter API (``store_info``, ``prune_idle_groups``, SQLite's
``backup`` and ``vacuum``), so every backend that implements those gets the commands too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from .base import StateAdapter, StoreInfo
from .errors import ConfigError, StateError, StoreUnavailableError, UnsupportedError
from .file import FILE_NAME, FileStateAdapter, replacing_path
from .options import parse_age
from .places import store_url
from .redact import redact
from .sqlite import SqliteStateAdapter
from .sqlite.adapter import database_files
from .url import open_state

__all__ = [
    "PING_GROUP",
    "BackupResult",
    "backup",
    "info_json",
    "parse_age",
    "ping",
    "store_file",
    "vacuum",
]

#: The group ``ping`` writes its throwaway item into (and deletes it from at once).
PING_GROUP: Final = "motia-state-ping"
#: How long a ping's item lives if the process dies between its write and its delete.
_PING_TTL: Final = 60.0


def store_file(adapter: StateAdapter) -> Path | None:
    """The file holding the store, or ``None`` when it lives elsewhere (memory, a server)."""
    if isinstance(adapter, SqliteStateAdapter) and adapter.path != ":memory:":
        return Path(adapter.path)
    if isinstance(adapter, FileStateAdapter):
        return adapter.path / FILE_NAME
    return None


# -- backup -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackupResult:
    """What ``backup`` wrote."""

    path: Path
    pages: int
    bytes: int
    seconds: float


def _check_target(source: Path, target: Path) -> None:
    if target.is_dir():
        raise ConfigError(f"{target} is a folder: give the backup's file name, e.g. {target / 'backup.db'}")
    if target.resolve() == source.resolve():
        raise ConfigError(f"{target} is the database being backed up: give another file name")
    for side in (Path(f"{target}-wal"), Path(f"{target}-shm")):
        if side.exists():
            # A -wal beside the target would be replayed onto the backup when it is opened.
            raise ConfigError(
                f"{side} exists: {target} is a database in use, or was one; SQLite would apply that "
                "file to the backup. Stop what uses it and remove it, or choose another file name"
            )
    if not target.parent.is_dir():
        raise ConfigError(f"the folder {target.parent} does not exist; nothing was written")


async def backup(
    source: StateAdapter,
    target: Path,
    *,
    pages: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> BackupResult:
    """Copy a live SQLite store, as one consistent snapshot, to ``target`` (replaced atomically).

    The copy goes to a temp file beside ``target``, is checked with ``integrity_check``, fsynced,
    and only then renamed over ``target``: a failed or interrupted backup leaves ``target`` as it
    was. Writers never wait for it (see ``SqliteStateAdapter.backup``). The backup is an
    ordinary store: ``sqlite:///TARGET`` opens it.

    Raises:
        UnsupportedError: ``source`` is not a SQLite database file (Redis has its own tools).
        ConfigError: ``target`` cannot be written, or would hurt what is there.
    """
    if not isinstance(source, SqliteStateAdapter) or source.path == ":memory:":
        raise UnsupportedError(
            f"backup copies a SQLite database file; {source!r} is not one. For Redis use its own "
            "persistence (BGSAVE, then copy dump.rdb; or AOF); to copy any store into a SQLite file "
            "use `motia-state copy SRC_URL sqlite:///FILE` (not a snapshot of one instant)"
        )
    path = Path(source.path)
    _check_target(path, target)
    started = time.perf_counter()
    try:
        with replacing_path(target, durable=True) as tmp:
            copied = await source.backup(tmp, pages=pages, progress=progress)
    except OSError as exc:
        raise ConfigError(f"cannot write {target}: {exc.strerror}; nothing was written") from None
    size = await asyncio.to_thread(os.path.getsize, target)
    return BackupResult(target, copied, size, time.perf_counter() - started)


# -- compaction -----------------------------------------------------------------------------------


async def vacuum(state: StateAdapter) -> tuple[int, int]:
    """VACUUM a SQLite store; its bytes on disk (database, WAL and shared memory) before and after.

    Raises:
        UnsupportedError: not a SQLite database file.
    """
    if not isinstance(state, SqliteStateAdapter) or state.path == ":memory:":
        raise UnsupportedError(f"db vacuum compacts a SQLite database file; {state!r} is not one")
    before = sum(size for _, size in await asyncio.to_thread(database_files, state.path))
    await state.vacuum()
    return before, sum(size for _, size in await asyncio.to_thread(database_files, state.path))


# -- info -----------------------------------------------------------------------------------------


def info_json(info: StoreInfo, url: str) -> dict[str, Any]:
    """What ``motia-state info --json`` prints: ``info`` with the URL (secrets redacted)."""
    return {
        "backend": info.backend,
        "url": redact(url),
        "schema_revision": info.schema_revision,
        "schema_head": info.schema_head,
        "at_head": None if info.schema_head is None else info.schema_revision == info.schema_head,
        "items": info.items,
        "groups": info.groups,
        "expired_items": info.expired_items,
        "bytes_on_disk": info.bytes_on_disk,
        "files": dict(info.files),
        "memory_bytes": info.memory_bytes,
        "oldest_updated_at": info.oldest_updated_at,
        "newest_updated_at": info.newest_updated_at,
    }


# -- ping -----------------------------------------------------------------------------------------


def _timeouts(url: str | None, timeout: float) -> dict[str, Any]:
    """Adapter options that keep every wait of a ping within ``timeout``."""
    probe = open_state(url)  # never connected: nothing to close
    if isinstance(probe, SqliteStateAdapter):
        return {"busy_timeout": timeout}
    if isinstance(probe, FileStateAdapter):
        return {"lock_timeout": timeout}
    if probe.kind == "redis":  # by name: naming the class would import redis-py (asyncpg below)
        return {"socket_timeout": timeout, "connect_timeout": timeout}
    if probe.kind == "postgres":
        return {"connect_timeout": timeout, "command_timeout": timeout}
    return {}


async def ping(url: str | None, *, read_only: bool = False, within: float = 5.0) -> float:
    """Check the store answers a read and (unless ``read_only``) a throwaway write; the seconds it took.

    The write goes to an item of its own in ``PING_GROUP`` (with a short TTL where the store
    keeps one) and is deleted at once. A store file that does not exist is unavailable: a ping
    never creates a store.

    Raises:
        StoreUnavailableError: the store did not answer within ``within`` seconds, or failed the read
            or the write (a store that refuses writes is unavailable to writers).
        ConfigError: the URL is bad (before anything is tried).
    """
    options: dict[str, Any] = {"read_only": True} if read_only else {}
    state = open_state(url, **options, **_timeouts(url, within))
    started = time.perf_counter()
    where = redact(store_url(url))
    try:
        async with asyncio.timeout(within):
            where_file = store_file(state)
            if where_file is not None and not where_file.exists():
                raise StoreUnavailableError(f"no state store at {where_file}")
            key = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}"
            await state.get(PING_GROUP, key)
            if not read_only:
                ttl = None if isinstance(state, FileStateAdapter) else _PING_TTL
                value = {"pinged_at": time.time()}
                await state.set(PING_GROUP, key, value, ttl=ttl)
                if await state.get(PING_GROUP, key) != value:
                    raise StoreUnavailableError(f"{where}: the ping's write did not read back")
                await state.delete(PING_GROUP, key)
            return time.perf_counter() - started
    except TimeoutError:
        raise StoreUnavailableError(f"{where} did not answer within {within:g}s") from None
    except StoreUnavailableError:
        raise
    except StateError as exc:
        raise StoreUnavailableError(str(exc) if where in str(exc) else f"{where}: {exc}") from None
    finally:
        with contextlib.suppress(BaseException):
            async with asyncio.timeout(1.0):
                await state.close(grace=0)
