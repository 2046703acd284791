"""StateAdapter: public methods validate, encode and decide; backends only read and persist rows.

The semantics of the contract live here once: validation (``codec``), what a write does to the
current row (``plan_write``), expiry visibility, ordering, filters and transactions over an
overlay. A backend implements a handful of row primitives (``_read_row``, ``_read_rows``,
``_write``, ``_clear``, ``_begin``) and nothing else decides anything.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import time
import warnings
import weakref
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Final, Literal, NamedTuple, Self, TypeVar

from . import codec, options
from .errors import (
    ConfigError,
    ConflictError,
    InvalidOperationError,
    InvalidValueError,
    StateError,
    StoreUnavailableError,
    UnsupportedError,
)
from .ops import Filter, check_filters, check_ops, matches
from .rows import (
    Clock,
    Plan,
    Row,
    RowEntry,
    StateItem,
    Unchanged,
    UpdateResult,
    Write,
    WriteResult,
    item_of,
    plan_write,
)

__all__ = [
    "IdleGroup",
    "JsonEntry",
    "StateAdapter",
    "StateOperations",
    "StateTransaction",
    "StoreInfo",
    "TxStore",
    "acquire_within",
    "in_prefix",
    "newest_write",
    "prefix_end",
]

T = TypeVar("T")
log = logging.getLogger("motia_state_sql")
#: The longest pause between background prunes (``idle_group_ttl``).
_PRUNE_EVERY_MAX: Final = 3600.0

#: The transactions open in this context. Tasks started inside an ``async with transaction()``
#: block copy the context, so their calls on the adapter are refused too instead of waiting
#: for a lock the block holds.
_OPEN_TRANSACTIONS: contextvars.ContextVar[tuple[object, ...]] = contextvars.ContextVar(
    "motia_state_sql_open_transactions", default=()
)


class StateOperations(ABC):
    """The operations shared by adapters and transactions; subclasses provide row primitives."""

    __slots__ = ()

    _clock: Clock
    max_value_bytes: int

    # -- primitives ---------------------------------------------------------------------------

    @abstractmethod
    async def _read_row(self, group_id: str, key: str, now: float) -> Row | None:
        """The live row at (group_id, key), or ``None``."""

    @abstractmethod
    async def _read_rows(self, group_id: str | None, now: float, filters: list[Filter]) -> list[RowEntry]:
        """Live rows of one group (or all), ordered by (group, key).

        ``filters`` may be used to pre-select; every row returned is still checked exactly.
        """

    @abstractmethod
    def _write(self, write: Write, now: float) -> Awaitable[WriteResult]:
        """Atomically plan ``write`` against the current live row and persist the plan.

        Returns ``(plan, current)``; an unconditional set may return ``None`` instead.
        """

    @abstractmethod
    async def _clear(self, group_id: str, now: float) -> None:
        """Atomically remove every row of the group."""

    async def _read_keys(self, group_id: str, now: float) -> list[str]:
        return [key for _, key, _ in await self._read_rows(group_id, now, [])]

    async def _read_groups(self, now: float) -> list[str]:
        groups: list[str] = []
        for group_id, _, _ in await self._read_rows(None, now, []):
            if not groups or groups[-1] != group_id:
                groups.append(group_id)
        return groups

    @abstractmethod
    def _check_open(self) -> None:
        """Raise ``StateError`` when the adapter or transaction can no longer be used."""

    @abstractmethod
    def _enter(self) -> None:
        """Count a call in flight: ``close()`` waits for it (see ``StateAdapter.close``)."""

    @abstractmethod
    def _leave(self) -> None:
        """The call counted by ``_enter`` has ended."""

    async def _track(self, call: Awaitable[T]) -> T:
        """Await a backend call counted as in flight, so ``close()`` drains it first."""
        self._enter()
        try:
            return await call
        finally:
            self._leave()

    def _check_writable(self) -> None:  # noqa: B027 - a hook: only adapters can be read-only
        """Raise ``UnsupportedError`` when the store was opened read-only."""

    def _check_group(self, group_id: object) -> str:
        return codec.check_name("group_id", group_id)

    def _check_write_support(self, write: Write) -> None:  # noqa: B027 - a hook: most store everything
        """Backends whose format cannot hold a feature refuse it here, before any I/O."""

    # -- public API ---------------------------------------------------------------------------

    def _checked(
        self,
        kind: Literal["set", "delete", "update"],
        group_id: object,
        key: object,
        if_version: int | None,
        if_absent: bool,
    ) -> Write:
        self._check_open()
        self._check_writable()
        group = self._check_group(group_id)
        name = codec.check_name("key", key, group)
        if type(if_absent) is not bool:
            raise InvalidOperationError(
                f"if_absent for {group!r}/{name!r} must be True or False, got {if_absent!r}"
            )
        if if_version is not None and (type(if_version) is not int):
            raise InvalidOperationError(
                f"if_version for {group!r}/{name!r} must be an int, got {if_version!r}"
            )
        if if_version is not None and if_absent:
            raise InvalidOperationError(
                f"{kind} of {group!r}/{name!r}: if_version and if_absent exclude each other"
            )
        return Write(
            kind,
            group,
            name,
            if_version=if_version,
            if_absent=if_absent,
            max_bytes=self.max_value_bytes,
        )

    async def set(
        self,
        group_id: str,
        key: str,
        value: Any,
        *,
        ttl: float | None = None,
        if_version: int | None = None,
        if_absent: bool = False,
    ) -> Any:
        """Store ``value`` and return it as stored (tuples come back as lists).

        Raises:
            InvalidKeyError: bad group id, key or ttl.
            InvalidValueError: ``value`` is not storable.
            ConflictError: ``if_version``/``if_absent`` does not hold.
        """
        write = self._prepare_set(group_id, key, ttl, if_version, if_absent)
        encoded = write.encoded = codec.encode(value, write.group_id, write.key, self.max_value_bytes)
        self._check_write_support(write)
        # ``_track`` written out: the hottest call keeps one coroutine less alive while it waits.
        self._enter()
        try:
            await self._write(write, self._clock())
        finally:
            self._leave()
        return codec.decode(encoded)

    async def set_json(
        self,
        group_id: str,
        key: str,
        text: str,
        *,
        ttl: float | None = None,
        if_version: int | None = None,
        if_absent: bool = False,
    ) -> None:
        """Store a value given as JSON text, kept byte for byte (import, export and copy use it).

        Raises:
            InvalidValueError: ``text`` is not JSON text of a storable value.
            InvalidKeyError, ConflictError: as for ``set``.
        """
        write = self.check_set_json(group_id, key, text, ttl=ttl, if_version=if_version, if_absent=if_absent)
        await self._track(self._write(write, self._clock()))

    def check_set_json(
        self,
        group_id: str,
        key: str,
        text: str,
        *,
        ttl: float | None = None,
        if_version: int | None = None,
        if_absent: bool = False,
    ) -> Write:
        """Check a ``set_json`` call without touching the store (not even opening it).

        Raises:
            InvalidKeyError, InvalidValueError, InvalidOperationError, UnsupportedError: what
                ``set_json`` would raise for this input before writing anything.
        """
        write = self._prepare_set(group_id, key, ttl, if_version, if_absent)
        if type(text) is not str:
            raise InvalidValueError(
                f"JSON text for {write.group_id!r}/{write.key!r} must be a str, got {type(text).__name__}"
            )
        write.encoded = codec.check_encoded(text, write.group_id, write.key, self.max_value_bytes)
        self._check_write_support(write)
        return write

    def _prepare_set(
        self,
        group_id: str,
        key: str,
        ttl: float | None,
        if_version: int | None,
        if_absent: bool,
    ) -> Write:
        """The ``Write`` of a ``set``, its key and ttl checked.

        The caller checks and encodes the value into ``write.encoded``, then calls
        ``_check_write_support``.
        """
        write = self._checked("set", group_id, key, if_version, if_absent)
        write.ttl = codec.check_ttl(ttl, write.group_id, write.key)
        return write

    async def get(self, group_id: str, key: str) -> Any:
        """The value at (group_id, key), or ``None`` when absent or expired."""
        self._check_open()
        group = self._check_group(group_id)
        row = await self._track(self._read_row(group, codec.check_name("key", key, group), self._clock()))
        return None if row is None else codec.decode(row.value)

    async def get_item(self, group_id: str, key: str) -> StateItem | None:
        """The item with its version and times, or ``None``; tells a stored ``None`` from absence."""
        self._check_open()
        group = self._check_group(group_id)
        name = codec.check_name("key", key, group)
        row = await self._track(self._read_row(group, name, self._clock()))
        return None if row is None else item_of(group, name, row)

    async def delete(
        self, group_id: str, key: str, *, if_version: int | None = None, if_absent: bool = False
    ) -> Any:
        """Remove the item and return its value, or ``None`` when it was absent."""
        write = self._checked("delete", group_id, key, if_version, if_absent)
        self._check_write_support(write)
        result = await self._track(self._write(write, self._clock()))
        assert result is not None
        current = result[1]
        return None if current is None else codec.decode(current.value)

    async def update(
        self,
        group_id: str,
        key: str,
        ops: Sequence[Mapping[str, Any]],
        *,
        if_version: int | None = None,
        if_absent: bool = False,
    ) -> UpdateResult:
        """Apply Motia update ops atomically to the current value (``{}`` when absent).

        Raises:
            InvalidOperationError: an op is malformed or cannot apply; nothing is written.
            ConflictError: ``if_version``/``if_absent`` does not hold.
        """
        write = self._checked("update", group_id, key, if_version, if_absent)
        try:
            write.ops = check_ops(ops)
        except InvalidOperationError as exc:
            raise InvalidOperationError(f"update of {write.group_id!r}/{write.key!r}: {exc}") from None
        self._check_write_support(write)
        result = await self._track(self._write(write, self._clock()))
        assert result is not None
        new, current = result
        assert isinstance(new, Row)
        old = None if current is None else codec.decode(current.value)
        return UpdateResult(old, codec.decode(new.value))

    async def get_group(self, group_id: str) -> list[Any]:
        """The values of the group, ordered by key."""
        self._check_open()
        rows = await self._track(self._read_rows(self._check_group(group_id), self._clock(), []))
        return [codec.decode(row.value) for _, _, row in rows]

    async def clear(self, group_id: str) -> None:
        """Remove every item of the group, atomically."""
        self._check_open()
        self._check_writable()
        await self._track(self._clear(self._check_group(group_id), self._clock()))

    async def keys(self, group_id: str) -> list[str]:
        """The keys of the group, ordered by code point."""
        self._check_open()
        return await self._track(self._read_keys(self._check_group(group_id), self._clock()))

    async def list_groups(self) -> list[str]:
        """Group ids holding at least one live item, ordered by code point."""
        self._check_open()
        return await self._track(self._read_groups(self._clock()))

    async def items(
        self, group_id: str | None = None, filters: Sequence[Mapping[str, Any]] | None = None
    ) -> list[StateItem]:
        """Live items of one group (or all), ordered by (group, key), that pass every filter."""
        self._check_open()
        group = None if group_id is None else self._check_group(group_id)
        checked = check_filters(filters)
        rows = await self._track(self._read_rows(group, self._clock(), checked))
        found = (item_of(g, k, row) for g, k, row in rows)
        return [item for item in found if matches(item.value, checked)] if checked else list(found)

    async def _read_batches(self, group_id: str | None, batch_size: int) -> AsyncIterator[list[RowEntry]]:
        """Live rows in (group, key) order, a batch at a time; memory bounded by the largest group.

        Backends that can page through the whole store (SQLite) override this.
        """
        groups = [group_id] if group_id is not None else await self._read_groups(self._clock())
        for group in groups:
            rows = await self._read_rows(group, self._clock(), [])
            for start in range(0, len(rows), batch_size):
                yield rows[start : start + batch_size]

    async def iter_entries(
        self, group_id: str | None = None, *, batch_size: int = 1000
    ) -> AsyncIterator[JsonEntry]:
        """Stream live items as ``JsonEntry(group_id, key, text, expires_at)``, ordered by (group, key).

        Reads ``batch_size`` items at a time, so exporting or copying a large store does not hold
        it all in memory. Not a snapshot: writes made meanwhile may or may not be seen.
        """
        self._check_open()
        group = None if group_id is None else self._check_group(group_id)
        if type(batch_size) is not int or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        async for batch in self._read_batches(group, batch_size):
            for g, k, row in batch:
                yield JsonEntry(g, k, row.value, row.expires_at)

    async def iter_json(
        self, group_id: str | None = None, *, batch_size: int = 1000
    ) -> AsyncIterator[tuple[str, str, str]]:
        """Stream live items as ``(group_id, key, json_text)`` in (group, key) order; see ``iter_entries``."""
        async for entry in self.iter_entries(group_id, batch_size=batch_size):
            yield entry.group_id, entry.key, entry.text


class JsonEntry(NamedTuple):
    """One item as ``iter_entries`` streams it: the value as JSON text, and its expiry."""

    group_id: str
    key: str
    text: str
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class StoreInfo:
    """What ``StateAdapter.store_info()`` tells about a store (``motia-state info`` prints it).

    A field is ``None`` where the backend cannot answer it without reading every value.
    """

    backend: str
    #: Live items, and the groups holding at least one.
    items: int
    groups: int
    #: Items past their expiry whose storage is not yet reclaimed (invisible to every read).
    expired_items: int | None
    #: The oldest and newest ``updated_at`` of the live items (``None``: empty, or not kept).
    oldest_updated_at: float | None
    newest_updated_at: float | None
    #: The schema revision stamped in the store and the newest this version knows (SQL stores).
    schema_revision: str | None = None
    schema_head: str | None = None
    #: Bytes of each file holding the store (SQLite: the database, its -wal and -shm).
    files: tuple[tuple[str, int], ...] = ()
    #: Memory the server reports using (Redis ``used_memory``).
    memory_bytes: int | None = None

    @property
    def bytes_on_disk(self) -> int | None:
        """The files' bytes together, or ``None`` for a store without files of ours."""
        return sum(size for _, size in self.files) if self.files else None


@dataclass(frozen=True, slots=True)
class IdleGroup:
    """A group ``prune_idle_groups`` removed (or, with ``dry_run``, found idle)."""

    group_id: str
    #: The live items it held.
    items: int
    #: When its newest item was written (``updated_at``; see each backend's notes), if known.
    newest_write: float | None


def prefix_end(prefix: str) -> str | None:
    """The smallest string above every string starting with ``prefix`` (code point order).

    ``None`` when there is none (the prefix is all U+10FFFF). Range scans use
    ``prefix <= name < prefix_end(prefix)``.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars.pop()) + 1
        if 0xD800 <= last <= 0xDFFF:  # surrogates are not text: the next character is U+E000
            last = 0xE000
        if last <= 0x10FFFF:
            return "".join(chars) + chr(last)
    return None


def in_prefix(group_id: str, prefix: str | None) -> bool:
    """Whether ``group_id`` is selected by ``prefix`` (``None`` selects every group)."""
    return prefix is None or group_id.startswith(prefix)


def newest_write(rows: Sequence[RowEntry], store: object) -> float:
    """The newest ``updated_at`` of ``rows`` (not empty).

    Raises:
        UnsupportedError: the store keeps no write times (its backend must say when it was written).
    """
    times = [row.updated_at for _, _, row in rows]
    if any(at is None for at in times):
        raise UnsupportedError(f"{store!r} keeps no write times, so it cannot tell idle groups")
    return max(at for at in times if at is not None)


class TxStore(ABC):
    """A backend's side of a transaction: consistent reads, then one atomic commit."""

    __slots__ = ()

    @abstractmethod
    async def read_row(self, group_id: str, key: str, now: float) -> Row | None:
        """The committed live row as this transaction sees it."""

    @abstractmethod
    async def read_rows(self, group_id: str | None, now: float) -> list[RowEntry]:
        """Committed live rows, ordered by (group, key)."""

    @abstractmethod
    async def commit(self, cleared: set[str], writes: dict[tuple[str, str], Row | None]) -> None:
        """Apply the cleared groups, then the row writes (``None`` = delete), atomically."""

    @abstractmethod
    async def rollback(self) -> None:
        """Give up the transaction; nothing of it lands."""


class StateTransaction(StateOperations):
    """The object ``async with adapter.transaction() as tx`` yields: the same operations.

    Writes are kept in an overlay that reads see; the commit hands them to the backend at once.
    """

    __slots__ = (
        "_aborted",
        "_adapter",
        "_calls",
        "_cleared",
        "_clock",
        "_done",
        "_store",
        "_writes",
        "max_value_bytes",
    )

    def __init__(self, adapter: StateAdapter, store: TxStore) -> None:
        self._adapter = adapter
        self._store = store
        self._clock = adapter._clock
        self.max_value_bytes = adapter.max_value_bytes
        self._cleared: set[str] = set()
        self._writes: dict[tuple[str, str], Row | None] = {}
        self._done = False
        self._aborted = False  # rolled back by the adapter's close(), not by its block
        self._calls = 0  # calls on this transaction in flight

    def _check_open(self) -> None:
        if self._aborted:
            raise StateError(_ABORTED)
        if self._done:
            raise StateError("this transaction has ended; start a new one")

    def _enter(self) -> None:
        self._calls += 1
        self._adapter._enter()

    def _leave(self) -> None:
        self._calls -= 1
        self._adapter._leave()

    def _check_group(self, group_id: object) -> str:
        return self._adapter._check_group(group_id)

    def _check_write_support(self, write: Write) -> None:
        self._adapter._check_write_support(write)

    async def _read_row(self, group_id: str, key: str, now: float) -> Row | None:
        if (group_id, key) in self._writes:
            row = self._writes[group_id, key]
            return row if row is not None and row.live(now) else None
        if group_id in self._cleared:
            return None
        return await self._store.read_row(group_id, key, now)

    async def _read_rows(self, group_id: str | None, now: float, filters: list[Filter]) -> list[RowEntry]:
        merged: dict[tuple[str, str], Row | None] = {
            (g, k): row for g, k, row in await self._store.read_rows(group_id, now) if g not in self._cleared
        }
        for (g, k), row in self._writes.items():
            if group_id is None or g == group_id:
                merged[g, k] = row
        return [(g, k, row) for (g, k), row in sorted(merged.items()) if row is not None and row.live(now)]

    async def _write(self, write: Write, now: float) -> tuple[Plan, Row | None]:
        current = await self._read_row(write.group_id, write.key, now)
        plan = plan_write(write, current, now)
        if not isinstance(plan, Unchanged):
            self._writes[write.group_id, write.key] = plan
        return plan, current

    async def _clear(self, group_id: str, now: float) -> None:
        self._cleared.add(group_id)
        for g, k in list(self._writes):
            if g == group_id:
                del self._writes[g, k]

    async def _finish(self, commit: bool) -> None:
        if self._done:
            if self._aborted and commit:
                raise StateError(_ABORTED)
            return
        self._done = True
        self._adapter._enter()
        try:
            if commit:
                await self._store.commit(self._cleared, self._writes)
            else:
                await self._store.rollback()
        finally:
            self._adapter._open_txs.discard(self)
            self._adapter._leave()

    async def _abort(self) -> None:
        """Roll back for the adapter's ``close()``: the block's later calls and its end raise."""
        self._aborted = True
        await self._finish(commit=False)


_ABORTED: Final = (
    "the adapter was closed while this transaction was open: it was rolled back and nothing of it was written"
)


class _TransactionContext:
    __slots__ = ("_adapter", "_token", "_tx")

    def __init__(self, adapter: StateAdapter) -> None:
        self._adapter = adapter
        self._tx: StateTransaction | None = None
        self._token: contextvars.Token[tuple[object, ...]] | None = None

    async def __aenter__(self) -> StateTransaction:
        adapter = self._adapter
        adapter._check_open()
        adapter._check_writable()
        adapter._enter()  # close() waits for a transaction that is starting
        try:
            # Yield once, as every write does: a loop of transactions whose calls all complete
            # at once would otherwise never let another task (a WAL checkpoint, say) run.
            await asyncio.sleep(0)
            self._tx = StateTransaction(adapter, await adapter._begin())
        finally:
            adapter._leave()
        adapter._open_txs.add(self._tx)
        self._token = _OPEN_TRANSACTIONS.set((*_OPEN_TRANSACTIONS.get(), self._tx))
        return self._tx

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tx is not None
        assert self._token is not None
        _OPEN_TRANSACTIONS.reset(self._token)
        await self._tx._finish(commit=exc_type is None)


class StateAdapter(StateOperations):
    """The abstract base every backend implements; an async context manager."""

    __slots__ = (
        "__weakref__",
        "_active",
        "_clock",
        "_closed",
        "_drained",
        "_open_txs",
        "_pruner",
        "idle_group_ttl",
        "max_value_bytes",
        "read_only",
    )

    #: The backend's name, as ``store_info()`` reports it.
    kind: ClassVar[str] = "custom"

    def __init__(
        self,
        *,
        max_value_bytes: int = codec.DEFAULT_MAX_VALUE_BYTES,
        clock: Clock = time.time,
        read_only: bool = False,
        idle_group_ttl: float | None = None,
    ) -> None:
        self._closed = True  # until constructed: __del__ of a half-built adapter has nothing to say
        self.max_value_bytes = options.positive_int("max_value_bytes", max_value_bytes)
        if not callable(clock):
            raise ConfigError(f"clock must be a function returning seconds, got {clock!r}")
        self._clock = clock
        self.read_only = options.flag("read_only", read_only)
        #: Seconds after which a group nobody writes is pruned in the background (``None``: never).
        self.idle_group_ttl = (
            None if idle_group_ttl is None else options.idle_age("idle_group_ttl", idle_group_ttl)
        )
        # The background pruner: None until the first call (with idle_group_ttl).
        self._pruner: _BackgroundPrune | None = None
        # Calls in flight (transactions' calls included): close() waits for them.
        self._active = 0
        self._drained: asyncio.Future[None] | None = None
        # Open ``async with transaction()`` blocks: each may hold the write lock, so calls on
        # the adapter from inside one (its task, or tasks it started) would wait for it
        # forever; they are refused instead.
        self._open_txs: set[StateTransaction] = set()
        self._closed = False

    def _check_closed(self) -> None:
        if self._closed:
            raise StateError(f"{type(self).__name__} is closed")

    def _check_open(self) -> None:
        if self._closed:
            raise StateError(f"{type(self).__name__} is closed")
        if self._open_txs and not self._open_txs.isdisjoint(_OPEN_TRANSACTIONS.get()):
            raise StateError(
                "this call is inside a transaction of this adapter: call the transaction object "
                "(`async with adapter.transaction() as tx: await tx.get(...)`), not the adapter"
            )

    def _check_writable(self) -> None:
        if self.read_only:
            raise UnsupportedError(f"{self!r} was opened read-only: writes are refused")

    def _enter(self) -> None:
        self._active += 1
        if self.idle_group_ttl is not None and not self.read_only:
            pruner = self._pruner
            if pruner is None or pruner.loop is not asyncio.get_running_loop():
                # The first call, or the first in another loop (the old one's timer never fires).
                if pruner is not None:
                    pruner.cancel()
                self._pruner = _BackgroundPrune(self, self.idle_group_ttl)

    def _leave(self) -> None:
        self._active -= 1
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)  # close() looks again

    def _holds_resources(self) -> bool:
        """Whether the adapter holds connections, threads or files that ``close()`` releases."""
        return False

    def __del__(self) -> None:
        try:
            leaked = not self._closed and self._holds_resources()
            pruner = self._pruner
        except AttributeError:  # a half-built adapter
            return
        if pruner is not None:
            pruner.cancel()
        if leaked:
            warnings.warn(
                f"{self!r} was never closed: use `async with` or `await adapter.close()`",
                ResourceWarning,
                stacklevel=2,
                source=self,
            )
            self._release_now()

    def _release_now(self) -> None:
        """Release what can be released without an event loop (called from ``__del__``)."""

    @abstractmethod
    async def _begin(self) -> TxStore:
        """Start a transaction: take the backend's write lock and return its reads and commit."""

    async def _close(self) -> None:
        """Release what the adapter opened."""

    def transaction(self) -> _TransactionContext:
        """``async with adapter.transaction() as tx``: all-or-nothing; an exception rolls back."""
        return _TransactionContext(self)

    async def run_transaction(
        self, work: Callable[[StateTransaction], Awaitable[T]], *, attempts: int = 10
    ) -> T:
        """Run ``work(tx)`` in a transaction, again (with a short random pause) on ``ConflictError``.

        Only optimistic backends (Redis) raise conflicts at commit; locking ones run ``work``
        once. ``work`` may run several times, so it should only touch state through ``tx``.

        Raises:
            ConflictError: still conflicting after ``attempts`` tries.
        """
        for attempt in range(1, attempts + 1):
            try:
                async with self.transaction() as tx:
                    return await work(tx)
            except ConflictError:
                if attempt == attempts:
                    raise
                await asyncio.sleep(random.uniform(0, 0.002 * 2**attempt))
        raise AssertionError("unreachable")

    # -- operations on the whole store ---------------------------------------------------------

    async def store_info(self) -> StoreInfo:
        """Counts, sizes and times of the whole store, as cheaply as the backend can answer them.

        Raises:
            StoreUnavailableError: the store cannot be reached.
        """
        self._check_open()
        return await self._track(self._store_info(self._clock()))

    async def _store_info(self, now: float) -> StoreInfo:
        """By default: one pass over every live item, a batch at a time (backends answer cheaper)."""
        items = groups = 0
        last: str | None = None
        oldest: float | None = None
        newest: float | None = None
        async for batch in self._read_batches(None, 1000):
            for group_id, _, row in batch:
                items += 1
                if group_id != last:
                    groups += 1
                    last = group_id
                if row.updated_at is not None:
                    oldest = row.updated_at if oldest is None else min(oldest, row.updated_at)
                    newest = row.updated_at if newest is None else max(newest, row.updated_at)
        return StoreInfo(self.kind, items, groups, None, oldest, newest)

    async def prune_idle_groups(
        self,
        older_than: float,
        *,
        prefix: str | None = None,
        dry_run: bool = False,
        batch_size: int = 100,
    ) -> list[IdleGroup]:
        """Remove every group whose newest item was written more than ``older_than`` seconds ago.

        Groups are found ``batch_size`` at a time and each is removed atomically, whole or not at
        all, only if it is still idle when it is removed: a group written to meanwhile stays.
        Writers are never held for longer than one batch. ``prefix`` limits the prune to groups
        whose id starts with it; ``dry_run`` only lists what would be removed.

        Returns:
            The groups removed (or found idle, with ``dry_run``), in group order.

        Raises:
            InvalidOperationError: ``older_than``, ``prefix`` or ``batch_size`` is out of range.
            UnsupportedError: the store was opened read-only (unless ``dry_run``), or keeps no
                times to tell idle groups by.
        """
        self._check_open()
        try:
            age = options.idle_age("older_than", older_than)
            options.flag("dry_run", dry_run)
            size = options.positive_int("batch_size", batch_size, 100_000)
        except ConfigError as exc:
            raise InvalidOperationError(f"prune_idle_groups: {exc}") from None
        if prefix is not None:
            prefix = codec.check_name("group prefix", prefix)
        if not dry_run:
            self._check_writable()
        return await self._track(self._prune(age, prefix, dry_run, size))

    async def _prune(self, age: float, prefix: str | None, dry_run: bool, size: int) -> list[IdleGroup]:
        now = self._clock()
        cutoff = now - age
        found: list[IdleGroup] = []
        after: str | None = None
        while True:
            listed = await self._idle_groups(cutoff, prefix, after, size, self._clock())
            for start in range(0, len(listed), size):
                batch = listed[start : start + size]
                if dry_run:
                    found += batch
                else:
                    names = [idle.group_id for idle in batch]
                    found += await self._prune_groups(names, cutoff, self._clock())
            if len(listed) < size:
                return found
            after = listed[-1].group_id

    async def _idle_groups(
        self, cutoff: float, prefix: str | None, after: str | None, limit: int, now: float
    ) -> list[IdleGroup]:
        """Groups after ``after``, in order, whose newest live item predates ``cutoff``.

        Up to ``limit`` of them; a backend that cannot page cheaply may return them all (they are
        then removed ``limit`` at a time). Not atomic: ``_prune_groups`` checks each again. By
        default: the live groups, listed once, then each one's rows.
        """
        found: list[IdleGroup] = []
        for group_id in await self._read_groups(now):
            if (after is not None and group_id <= after) or not in_prefix(group_id, prefix):
                continue
            rows = await self._read_rows(group_id, now, [])
            if rows and (newest := newest_write(rows, self)) < cutoff:
                found.append(IdleGroup(group_id, len(rows), newest))
        return found

    async def _prune_groups(self, groups: list[str], cutoff: float, now: float) -> list[IdleGroup]:
        """Remove each group still idle at ``cutoff``, each atomically; the ones removed.

        By default: one backend transaction per group (a locking backend holds its lock for one
        group; an optimistic one finds a group written meanwhile at commit, and keeps it).
        """
        removed: list[IdleGroup] = []
        for group_id in groups:
            store = await self._begin()
            try:
                rows = await store.read_rows(group_id, now)
                newest = newest_write(rows, self) if rows else None
            except BaseException:
                await store.rollback()
                raise
            if newest is None or newest >= cutoff:
                await store.rollback()
                continue
            try:
                await store.commit({group_id}, {})
            except ConflictError:
                continue  # written meanwhile: it stays
            removed.append(IdleGroup(group_id, len(rows), newest))
        return removed

    async def close(self, *, grace: float = 10.0) -> None:
        """Drain, then release the adapter's resources; closing twice is harmless.

        Calls made after ``close()`` starts raise ``StateError``. Every call that started before
        it completes first (a write waiting for a lock waits up to its busy timeout, as always),
        and open transactions get ``grace`` seconds to end; one still open then is rolled back
        (nothing of it lands) and its block's later calls and its end raise ``StateError``.
        """
        if self._closed:
            return
        grace = options.seconds("grace", grace)
        self._closed = True
        if self._pruner is not None:
            await self._pruner.stop()
        try:
            loop = asyncio.get_running_loop()
            await self._settle(lambda: not (self._active or self._open_txs), loop.time() + grace)
            if self._open_txs:
                # Past the bound: let calls running inside the transactions end, roll them
                # back, then let the calls that waited for their lock end too.
                await self._settle(lambda: not any(tx._calls for tx in self._open_txs), None)
                for tx in list(self._open_txs):
                    await tx._abort()
                await self._settle(lambda: not self._active, None)
        finally:
            await self._close()

    async def _settle(self, done: Callable[[], bool], deadline: float | None) -> None:
        """Wait until ``done()`` holds (it is asked again whenever a call ends) or ``deadline``."""
        loop = asyncio.get_running_loop()
        while not done():
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return
            self._drained = loop.create_future()
            try:
                async with asyncio.timeout(remaining):
                    await self._drained
            except TimeoutError:
                return
            finally:
                self._drained = None

    async def cleanup(self) -> None:
        """Alias of ``close``, as in Motia."""
        await self.close()

    async def __aenter__(self) -> Self:
        self._check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class _BackgroundPrune:
    """Prunes an adapter's idle groups (``idle_group_ttl``) every ``ttl / 2`` s (at most hourly).

    Between rounds only a timer of the event loop is pending, not a task, so a loop that ends
    with the adapter still open drops it silently; and it holds the adapter by a weak reference,
    so an adapter nobody closes can still be collected (which cancels the timer).
    """

    __slots__ = ("_adapter", "_handle", "_stopped", "_task", "_ttl", "loop")

    def __init__(self, adapter: StateAdapter, ttl: float) -> None:
        self._adapter = weakref.ref(adapter)
        self._ttl = ttl
        self._task: asyncio.Task[None] | None = None
        self._stopped = False  # cancelled: a round still under way must not arm the next one
        self.loop = asyncio.get_running_loop()
        self._handle = self._arm()

    def _start(self) -> None:
        adapter = self._adapter()
        if adapter is not None and not adapter._closed:
            # A context of its own: one copied from a transaction block would refuse its calls.
            self._task = self.loop.create_task(self._round(adapter), context=contextvars.Context())

    async def _round(self, adapter: StateAdapter) -> None:
        try:
            removed = await adapter.prune_idle_groups(self._ttl)
        except StateError as exc:  # the store is down, say: the next round tries again
            log.warning("motia_state_sql: pruning idle groups of %r failed: %s", adapter, exc)
        else:
            if removed:
                log.info("motia_state_sql: pruned %d idle groups of %r", len(removed), adapter)
        finally:
            self._task = None
            if not (adapter._closed or self._stopped):
                self._handle = self._arm()

    def _arm(self) -> asyncio.TimerHandle:
        """The timer of the next round: in ``ttl / 2`` seconds, at most an hour."""
        return self.loop.call_later(min(self._ttl / 2, _PRUNE_EVERY_MAX), self._start)

    def cancel(self) -> None:
        """Stop the next rounds (no loop needed: from ``__del__`` too)."""
        self._stopped = True
        self._handle.cancel()

    async def stop(self) -> None:
        """Stop, and end a round under way (each group it removes is atomic: none is left half-removed)."""
        self.cancel()
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            if self.loop is asyncio.get_running_loop():
                await asyncio.wait([task])


async def acquire_within(lock: asyncio.Lock, seconds: float, store: str) -> None:
    """Take ``lock`` (held by a batch or a transaction in this process), waiting up to ``seconds``.

    Writers in this process get the same bound as writers in other processes (the busy timeout):
    a slow transaction makes them fail with ``StoreUnavailableError``, never wait forever.

    Raises:
        StoreUnavailableError: the lock stayed held for ``seconds``.
    """
    try:
        async with asyncio.timeout(seconds):
            await lock.acquire()
    except TimeoutError:
        raise StoreUnavailableError(
            f"{store} stayed locked by a transaction in this process for over {seconds:g}s; "
            "nothing was written"
        ) from None
