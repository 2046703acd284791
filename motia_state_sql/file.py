"""FileStateAdapter: Motia's legacy ``.motia/motia.state.json``, written safely.

The format (see ``motia-formats.md``) is one JSON object written like ``JSON.stringify(data, null,
2)``; each entry is ``"<group>:<key>"`` mapped to the JSON text of the value. Unlike Motia's own
adapter this one matches groups exactly, writes through a temp file and ``os.replace``, holds a
file lock across read-modify-write so processes do not lose updates, and refuses a corrupt file
instead of starting over. The format has no room for versions, times or expiry: ``ttl`` and
``if_version`` raise ``UnsupportedError``; a group id may not hold ``:`` (it would read back as
another group).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import orjson
from filelock import FileLock, Timeout

from . import codec, options
from .base import IdleGroup, StateAdapter, TxStore, acquire_within, in_prefix
from .errors import (
    ConfigError,
    InvalidKeyError,
    InvalidValueError,
    SchemaError,
    StoreUnavailableError,
    from_os_error,
)
from .ops import Filter
from .places import FILE_NAME
from .rows import (
    UNCHANGED,
    Clock,
    Plan,
    Row,
    RowEntry,
    Write,
    plan_write,
    refuse_unstorable,
)

__all__ = ["FILE_NAME", "FileStateAdapter", "dump_motia_json", "read_motia_json"]

T = TypeVar("T")
Entries = dict[str, str]  # "<group>:<key>" -> JSON text, in Motia's (insertion) order
Adjust = Callable[[str, str, str], str]  # (group_id, key, json_text) -> the text to keep


Notes = dict[str, tuple[str, str | SchemaError]]
"""Entries whose text is not stored as it is: entry -> (its text, the text to use or the error).

Held apart from the entries, which keep Node's text byte for byte for the next rewrite of the
file. A note holds only while the entry still has that very text (compared with ``is``).
"""


def _parse(raw: bytes, path: Path, adjust: Adjust | None = None) -> tuple[Entries, Notes]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        data = _parse_surrogates(raw)  # orjson refuses lone surrogates, which Node escapes
        if data is None:
            raise SchemaError(f"{path} is not valid JSON ({exc}); the file was left untouched") from None
    if not isinstance(data, dict):
        raise SchemaError(f"{path} must hold a JSON object, found {type(data).__name__}")
    notes: Notes = {}
    for entry, text in data.items():
        group_id, sep, key = entry.partition(":")
        if not (sep and group_id and key):
            raise SchemaError(f"{path}: entry {entry!r} is not '<group>:<key>'")
        if type(text) is not str:
            raise SchemaError(
                f"{path}: entry {entry!r} holds {type(text).__name__}, expected the JSON text of a value"
            )
        # An entry our rules cannot hold fails alone: it is noted, and only reads of it raise.
        try:
            codec.check_name("group_id", group_id)
            codec.check_name("key", key, group_id)
            stored = adjust(group_id, key, text) if adjust is not None else text
            stored = codec.from_node(stored, group_id, key, max_bytes=2**62)
        except (InvalidKeyError, InvalidValueError) as exc:
            notes[entry] = (text, _bad_entry(path, entry, exc))
            continue
        if stored is not text:
            notes[entry] = (text, stored)
    return data, notes


def _parse_surrogates(raw: bytes) -> dict[str, str] | None:
    """The file read by the standard parser, which keeps lone surrogates; ``None`` if not JSON."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _bad_entry(path: Path, entry: str, exc: Exception) -> SchemaError:
    return SchemaError(f"{path}: entry {entry!r}: {exc}; fix or remove this entry in the file")


def _bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SchemaError(f"cannot read {path}: {exc.strerror}") from None


def _read(path: Path) -> tuple[Entries, Notes]:
    return _parse(_bytes(path), path)


def read_motia_json(
    path: Path, adjust: Adjust | None = None, raw: bytes | None = None
) -> list[tuple[str, str, str]]:
    """Read a ``motia.state.json`` as ``(group_id, key, json_text)`` in file order, all or nothing.

    For an import: unlike Motia (``JSON.parse`` keeps the last of a repeated name), an entry
    that appears twice is refused, as a repeated item of a JSON Lines file is. Each value's text
    goes through ``codec.from_node`` (the policy for values Node wrote): integers beyond signed
    64-bit become the doubles JavaScript meant. ``adjust(group_id, key, json_text)``, when
    given, returns the text to use before that (it may raise ``InvalidValueError``, reported
    like any bad entry).

    Args:
        path: the file, or only its name in messages when ``raw`` holds its bytes.
        adjust: see above.
        raw: the file's bytes (read from ``path`` when ``None``).

    Raises:
        SchemaError: the file is unreadable or not in Motia's format, an entry appears twice,
            or an entry cannot be held (a lone surrogate, a bad name); the message names the
            first such entry.
    """
    raw = _bytes(path) if raw is None else raw
    data, notes = _parse(raw, path, adjust)
    _refuse_repeats(raw, path, len(data))
    found = []
    for entry, text in data.items():
        group_id, key = entry.split(":", 1)
        found.append((group_id, key, _text_of(entry, text, notes)))
    return found


def _refuse_repeats(raw: bytes, path: Path, count: int) -> None:
    """Raise when the top-level object of ``raw``, known to hold ``count`` names, repeats one.

    Its values are strings, so the hook sees that one object only.
    """

    def pairs(items: list[tuple[str, Any]]) -> None:
        if len(items) == count:
            return
        seen: set[str] = set()
        for name, _ in items:
            if name in seen:
                raise SchemaError(
                    f"{path}: entry {name!r} appears more than once (Motia keeps the last); "
                    "remove all but one"
                )
            seen.add(name)

    json.loads(raw.decode("utf-8", "surrogatepass"), object_pairs_hook=pairs)


def _text_of(entry: str, text: str, notes: Notes) -> str:
    """The text to use for ``entry``, whose text in the file is ``text``; raises for a bad one."""
    note = notes.get(entry)
    if note is None or note[0] is not text:
        return text
    if isinstance(note[1], SchemaError):
        raise note[1]
    return note[1]


@contextlib.contextmanager
def replacing_path(target: Path, *, durable: bool = False) -> Iterator[Path]:
    """Yield the path of a new empty temp file beside ``target`` that replaces it once the block ends.

    For writers that need a file name (SQLite's backup); ``replacing`` gives a handle instead.
    Readers see the old file or the whole new one, never a part; an error inside the block
    removes the temp file and leaves ``target`` as it was. The new file keeps the old one's
    permissions; ``durable`` fsyncs it before the replace.

    Raises:
        OSError: the folder cannot be written, or the write failed (``filename`` is ``target``).
    """
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        exc.filename = str(target)  # name the file asked for, not the temp file
        raise
    os.close(fd)
    try:
        yield Path(tmp)
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, target.stat().st_mode & 0o777)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def replacing(target: Path, *, durable: bool = False) -> Iterator[IO[bytes]]:
    """Yield a temp file beside ``target`` that replaces it (``os.replace``) once the block ends.

    As ``replacing_path``, with the temp file open for writing (fsynced through it if ``durable``).
    """
    with replacing_path(target) as tmp, open(tmp, "wb") as handle:
        yield handle
        handle.flush()
        if durable:
            os.fsync(handle.fileno())


def dump_motia_json(entries: Iterable[tuple[str, str, str]]) -> bytes:
    """Encode ``(group_id, key, json_text)`` exactly as Motia's ``JSON.stringify(data, null, 2)``."""
    data = {f"{group_id}:{key}": text for group_id, key, text in entries}
    # A lone surrogate (only in an entry kept as Node wrote it) can only sit inside a JSON string
    # here, where "backslashreplace" writes it as the very escape Node writes: \ud83d.
    return json.dumps(data, indent=2, ensure_ascii=False).encode("utf-8", "backslashreplace")


class FileStateAdapter(StateAdapter):
    """State in ``<path>/motia.state.json``, Motia's legacy format."""

    kind = "file"

    __slots__ = ("_cache", "_file", "_filelock", "_lock", "_notes", "_pruned", "durable", "path")

    def __init__(
        self,
        path: str | os.PathLike[str] = ".motia",
        *,
        lock_timeout: float = 10.0,
        durable: bool = True,
        read_only: bool = False,
        idle_group_ttl: float | None = None,
        max_value_bytes: int = codec.DEFAULT_MAX_VALUE_BYTES,
        clock: Clock = time.time,
    ) -> None:
        """Describe the store; nothing is read or written until the first call.

        Args:
            path: the folder holding ``motia.state.json`` (created on the first write).
            lock_timeout: seconds to wait for the lock (another process's file lock, or a
                transaction in this process) before ``StoreUnavailableError``.
            durable: fsync the file before it replaces the old one.
            read_only: refuse every write (``UnsupportedError``); nothing is created.
            idle_group_ttl: seconds after which a group nobody wrote to is removed, whole, by a
                background prune (``prune_idle_groups``, run every ``idle_group_ttl / 2`` seconds,
                at most hourly); ``None`` (default): never.
            max_value_bytes: largest encoded value accepted.
            clock: time source (seconds since the epoch).
        """
        super().__init__(
            max_value_bytes=max_value_bytes, clock=clock, read_only=read_only, idle_group_ttl=idle_group_ttl
        )
        if not isinstance(path, (str, os.PathLike)) or not str(path) or "\x00" in str(path):
            raise ConfigError(f"path must be the folder holding {FILE_NAME}, got {path!r}")
        lock_timeout = options.seconds("lock_timeout", lock_timeout)
        self.path = Path(path)
        self.durable = options.flag("durable", durable)
        self._file = self.path / FILE_NAME
        # thread_local=False: a transaction takes the lock in one worker thread and may
        # release it from another; in-process callers are serialised by ``_lock`` first.
        self._filelock = FileLock(str(self._file) + ".lock", timeout=lock_timeout, thread_local=False)
        self._lock = asyncio.Lock()
        self._cache: tuple[tuple[int, int, int], Entries] | None = None
        self._notes: Notes = {}  # of the entries last read (see Notes)
        # The file our last prune wrote (its stamp) and when it was written before: a prune is
        # nobody's write, so the groups it left keep their age.
        self._pruned: tuple[tuple[int, int, int], float] | None = None

    def __repr__(self) -> str:
        return f"FileStateAdapter(path={str(self.path)!r})"

    def _check_group(self, group_id: object) -> str:
        group = codec.check_name("group_id", group_id)
        return codec.check_motia_group(
            group, "Motia's motia.state.json", "use the SQLite or Redis adapter for such groups"
        )

    def _check_write_support(self, write: Write) -> None:
        refuse_unstorable(write, "the legacy motia.state.json format", ttl=False, versions=False)

    # -- file access (worker threads) ----------------------------------------------------------

    def _load(self) -> Entries:
        try:
            stat = self._file.stat()
        except FileNotFoundError:
            self._cache = None
            return {}
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if self._cache is None or self._cache[0] != stamp:
            data, self._notes = _read(self._file)
            self._cache = (stamp, data)
        return self._cache[1]

    def _save(self, data: Entries) -> None:
        raw = dump_motia_json((*entry.split(":", 1), text) for entry, text in data.items())  # type: ignore[misc]
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise from_os_error(exc, f"write in {self.path} (nothing was written)") from None
        started = False
        try:
            with replacing(self._file, durable=self.durable) as handle:
                started = True
                handle.write(raw)
        except OSError as exc:
            if not started:  # no temp file: the folder refuses us (read-only, not a folder...)
                raise from_os_error(exc, f"write in {self.path} (nothing was written)") from None
            raise StoreUnavailableError(  # disk full, file too large...
                f"cannot write {self._file}: {exc.strerror}; the previous file is intact"
            ) from None
        stat = self._file.stat()
        self._cache = ((stat.st_ino, stat.st_mtime_ns, stat.st_size), data)

    def _acquire(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._filelock.acquire()
        except OSError as exc:
            raise from_os_error(exc, f"lock {self._file} (nothing was written)") from None
        except Timeout:
            raise StoreUnavailableError(
                f"{self._file} is locked by another process for over {self._filelock.timeout}s"
            ) from None

    def _locked(self, work: Callable[[Entries], tuple[T, bool]]) -> T:
        self._acquire()
        try:
            data = dict(self._load())
            result, changed = work(data)
            if changed:
                self._save(data)
            return result
        finally:
            self._filelock.release()

    async def _read(self) -> Entries:
        # No lock: os.replace makes every read see one whole committed file.
        return await asyncio.to_thread(self._load)

    # -- primitives ---------------------------------------------------------------------------

    async def _read_row(self, group_id: str, key: str, now: float) -> Row | None:
        return _row(await self._read(), self._notes, group_id, key)

    async def _read_rows(self, group_id: str | None, now: float, filters: list[Filter]) -> list[RowEntry]:
        return _rows(await self._read(), self._notes, group_id)

    async def _read_keys(self, group_id: str, now: float) -> list[str]:
        # Names only: an entry whose value cannot be read still has a key.
        data = await self._read()
        return sorted(key for group, key, _ in _names(data, self._notes, group_id))

    async def _read_groups(self, now: float) -> list[str]:
        return sorted({group for group, _, _ in _names(await self._read(), self._notes, None)})

    async def _write(self, write: Write, now: float) -> tuple[Plan, Row | None]:
        def work(data: Entries) -> tuple[tuple[Plan, Row | None], bool]:
            current = _row(data, self._notes, write.group_id, write.key, write.kind)
            plan = plan_write(write, current, now)
            _apply(data, write.group_id, write.key, plan)
            return (plan, current), plan is not UNCHANGED

        await acquire_within(self._lock, self._filelock.timeout, str(self._file))
        try:
            return await asyncio.to_thread(self._locked, work)
        finally:
            self._lock.release()

    async def _clear(self, group_id: str, now: float) -> None:
        def work(data: Entries) -> tuple[None, bool]:
            doomed = [entry for entry in data if entry.split(":", 1)[0] == group_id]
            for entry in doomed:
                del data[entry]
            return None, bool(doomed)

        await acquire_within(self._lock, self._filelock.timeout, str(self._file))
        try:
            await asyncio.to_thread(self._locked, work)
        finally:
            self._lock.release()

    # -- pruning: the format keeps no times; the file's own modification time stands for them ----

    def _written_at(self) -> float | None:
        """When the file was last written by anything but a prune (``None``: there is no file)."""
        try:
            stat = self._file.stat()
        except FileNotFoundError:
            return None
        if self._pruned is not None and self._pruned[0] == (stat.st_ino, stat.st_mtime_ns, stat.st_size):
            return self._pruned[1]
        return stat.st_mtime

    def _idle(self, data: Entries, cutoff: float, prefix: str | None, after: str | None) -> list[IdleGroup]:
        """Every group selected, when nothing in the file was written since ``cutoff``; else none."""
        written = self._written_at()
        if written is None or written >= cutoff:
            return []
        counts: dict[str, int] = {}
        for group, _, _ in _names(data, self._notes, None):
            if (after is None or group > after) and in_prefix(group, prefix):
                counts[group] = counts.get(group, 0) + 1
        return [IdleGroup(group, counts[group], written) for group in sorted(counts)]

    async def _idle_groups(
        self, cutoff: float, prefix: str | None, after: str | None, limit: int, now: float
    ) -> list[IdleGroup]:
        """All of them at once (one read of the file)."""
        data = await self._read()
        return await asyncio.to_thread(self._idle, data, cutoff, prefix, after)

    async def _prune_groups(self, groups: list[str], cutoff: float, now: float) -> list[IdleGroup]:
        """One file rewrite under the lock, if the file is still unwritten since ``cutoff``.

        The rewrite is remembered as a prune's, so the next batch still sees the groups' age.
        """

        def work(data: Entries) -> tuple[list[IdleGroup], bool]:
            chosen = set(groups)
            removed = [idle for idle in self._idle(data, cutoff, None, None) if idle.group_id in chosen]
            gone = {idle.group_id for idle in removed}
            for entry in [e for e in data if e.split(":", 1)[0] in gone]:
                del data[entry]
            return removed, bool(removed)

        if not groups:
            return []
        await acquire_within(self._lock, self._filelock.timeout, str(self._file))
        try:
            removed = await asyncio.to_thread(self._locked, work)
            if removed and self._cache is not None:
                self._pruned = (self._cache[0], removed[0].newest_write or 0.0)
            return removed
        finally:
            self._lock.release()

    async def _begin(self) -> TxStore:
        await acquire_within(self._lock, self._filelock.timeout, str(self._file))
        try:
            await asyncio.to_thread(self._acquire)
        except BaseException:
            self._lock.release()
            raise
        return _FileTx(self)


def _row(data: Entries, notes: Notes, group_id: str, key: str, writing: str | None = None) -> Row | None:
    """The row of one entry; an entry that cannot be read raises, except for ``set`` and ``delete``.

    Those replace it (so a bad entry can be overwritten or deleted through the API): they see it
    as its text held in a JSON string, which ``delete`` returns (as Redis's motia layout does).
    """
    entry = f"{group_id}:{key}"
    text = data.get(entry)
    if text is None:
        return None
    try:
        return Row(_text_of(entry, text, notes), None, None, None, None)
    except SchemaError:
        if writing not in ("set", "delete"):
            raise
    shown = text.encode("utf-8", "backslashreplace").decode()
    return Row(orjson.dumps(shown).decode(), None, None, None, None)


def _names(data: Entries, notes: Notes, group_id: str | None) -> list[tuple[str, str, str]]:
    """``(group, key, entry)`` of the group's entries (every group's for ``None``), in file order.

    Raises:
        SchemaError: an entry of the selection has a name our rules refuse (NUL, lone surrogate).
    """
    found = []
    for entry in data:
        group, key = entry.split(":", 1)
        if group_id is None or group == group_id:
            note = notes.get(entry)
            if note is not None and isinstance(note[1], SchemaError) and _bad_name(group, key):
                raise note[1]
            found.append((group, key, entry))
    return found


def _bad_name(group: str, key: str) -> bool:
    try:
        codec.check_name("group_id", group)
        codec.check_name("key", key, group)
    except InvalidKeyError:
        return True
    return False


def _rows(data: Entries, notes: Notes, group_id: str | None) -> list[RowEntry]:
    found = [
        (group, key, Row(_text_of(entry, data[entry], notes), None, None, None, None))
        for group, key, entry in _names(data, notes, group_id)
    ]
    found.sort(key=lambda item: (item[0], item[1]))
    return found


def _apply(data: Entries, group_id: str, key: str, row: Plan) -> None:
    entry = f"{group_id}:{key}"
    if row is None:
        data.pop(entry, None)
    elif isinstance(row, Row):
        data[entry] = row.value


class _FileTx(TxStore):
    __slots__ = ("_adapter", "_data", "_released")

    def __init__(self, adapter: FileStateAdapter) -> None:
        self._adapter = adapter
        self._data: Entries | None = None
        self._released = False

    async def _snapshot(self) -> Entries:
        if self._data is None:
            self._data = dict(await asyncio.to_thread(self._adapter._load))
        return self._data

    async def read_row(self, group_id: str, key: str, now: float) -> Row | None:
        return _row(await self._snapshot(), self._adapter._notes, group_id, key)

    async def read_rows(self, group_id: str | None, now: float) -> list[RowEntry]:
        return _rows(await self._snapshot(), self._adapter._notes, group_id)

    async def commit(self, cleared: set[str], writes: dict[tuple[str, str], Row | None]) -> None:
        try:
            if cleared or writes:
                data = await self._snapshot()
                for entry in [e for e in data if e.split(":", 1)[0] in cleared]:
                    del data[entry]
                for (group_id, key), row in writes.items():
                    _apply(data, group_id, key, row)
                await asyncio.to_thread(self._adapter._save, data)
        finally:
            await self._release()

    async def rollback(self) -> None:
        await self._release()

    async def _release(self) -> None:
        if not self._released:
            self._released = True
            self._adapter._filelock.release()
            self._adapter._lock.release()
