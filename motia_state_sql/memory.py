"""MemoryStateAdapter: the in-process reference for the contract's semantics."""

from __future__ import annotations

import asyncio
import heapq
import time

from . import codec, options
from .base import StateAdapter, StoreInfo, TxStore, acquire_within
from .ops import Filter
from .rows import (
    UNCHANGED,
    Clock,
    Plan,
    Row,
    RowEntry,
    Write,
    plan_write,
)

__all__ = ["MemoryStateAdapter"]

_MIN_EXPIRIES_LIMIT = 64


class MemoryStateAdapter(StateAdapter):
    """Keeps state in a dict of groups; values are stored encoded, so reads never alias.

    Writes and transactions take one ``asyncio.Lock``; reads see committed rows only.
    """

    kind = "memory"

    __slots__ = ("_expiries", "_expiries_limit", "_groups", "_lock", "lock_timeout")

    def __init__(
        self,
        *,
        lock_timeout: float = 5.0,
        read_only: bool = False,
        idle_group_ttl: float | None = None,
        max_value_bytes: int = codec.DEFAULT_MAX_VALUE_BYTES,
        clock: Clock = time.time,
    ) -> None:
        """An empty store.

        Args:
            lock_timeout: seconds a write waits behind a transaction before
                ``StoreUnavailableError`` (as SQLite's ``busy_timeout``).
            read_only: refuse every write (``UnsupportedError``).
            idle_group_ttl: seconds after which a group nobody wrote to is removed, whole, by a
                background prune (``prune_idle_groups``, run every ``idle_group_ttl / 2`` seconds,
                at most hourly); ``None`` (default): never.
            max_value_bytes: largest encoded value accepted.
            clock: time source (seconds since the epoch), injectable for tests.
        """
        super().__init__(
            max_value_bytes=max_value_bytes, clock=clock, read_only=read_only, idle_group_ttl=idle_group_ttl
        )
        self.lock_timeout = options.seconds("lock_timeout", lock_timeout)
        self._groups: dict[str, dict[str, Row]] = {}
        self._lock = asyncio.Lock()
        # (expires_at, group_id, key): popped as time passes, so expired rows are reclaimed
        # without scanning the store. Entries of rows since rewritten, deleted or cleared stay
        # until compacted, once the heap outgrows twice the entries still current.
        self._expiries: list[tuple[float, str, str]] = []
        self._expiries_limit = _MIN_EXPIRIES_LIMIT

    def __repr__(self) -> str:
        return f"MemoryStateAdapter(groups={len(self._groups)})"

    def _peek(self, group_id: str, key: str, now: float) -> Row | None:
        group = self._groups.get(group_id)
        row = group.get(key) if group is not None else None
        return row if row is not None and row.live(now) else None

    def _rows(self, group_id: str | None, now: float) -> list[RowEntry]:
        names = [group_id] if group_id is not None else sorted(self._groups)
        return [
            (name, key, row)
            for name in names
            for key, row in sorted(self._groups.get(name, {}).items())
            if row.live(now)
        ]

    def _put(self, group_id: str, key: str, row: Row | None) -> None:
        if row is None:
            group = self._groups.get(group_id)
            if group is not None:
                group.pop(key, None)
                if not group:
                    del self._groups[group_id]
            return
        self._groups.setdefault(group_id, {})[key] = row
        if row.expires_at is not None:
            heapq.heappush(self._expiries, (row.expires_at, group_id, key))
            if len(self._expiries) > self._expiries_limit:
                self._compact_expiries()

    def _compact_expiries(self) -> None:
        """Drop heap entries that no longer match their row: amortised O(1) per write."""
        current = {
            (expires_at, group_id, key)
            for expires_at, group_id, key in self._expiries
            if (row := self._groups.get(group_id, {}).get(key)) is not None and row.expires_at == expires_at
        }
        self._expiries = list(current)
        heapq.heapify(self._expiries)
        self._expiries_limit = max(_MIN_EXPIRIES_LIMIT, 2 * len(self._expiries))

    def _reclaim(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            _, group_id, key = heapq.heappop(self._expiries)
            row = self._groups.get(group_id, {}).get(key)
            if row is not None and not row.live(now):
                self._put(group_id, key, None)

    async def _read_row(self, group_id: str, key: str, now: float) -> Row | None:
        return self._peek(group_id, key, now)

    async def _read_rows(self, group_id: str | None, now: float, filters: list[Filter]) -> list[RowEntry]:
        return self._rows(group_id, now)

    async def _read_groups(self, now: float) -> list[str]:
        return [
            name for name in sorted(self._groups) if any(row.live(now) for row in self._groups[name].values())
        ]

    async def _store_info(self, now: float) -> StoreInfo:
        live = [row.updated_at for group in self._groups.values() for row in group.values() if row.live(now)]
        stored = sum(len(group) for group in self._groups.values())
        groups = sum(1 for group in self._groups.values() if any(row.live(now) for row in group.values()))
        times = [at for at in live if at is not None]
        oldest, newest = (min(times), max(times)) if times else (None, None)
        return StoreInfo(self.kind, len(live), groups, stored - len(live), oldest, newest)

    async def _write(self, write: Write, now: float) -> tuple[Plan, Row | None]:
        if not self._lock.locked():
            # No transaction holds the store, and nothing below awaits: the write is atomic
            # without taking the lock (and without arming a timeout per write).
            return self._apply(write, now)
        await acquire_within(self._lock, self.lock_timeout, "the memory store")
        try:
            return self._apply(write, now)
        finally:
            self._lock.release()

    def _apply(self, write: Write, now: float) -> tuple[Plan, Row | None]:
        self._reclaim(now)
        current = self._peek(write.group_id, write.key, now)
        plan = plan_write(write, current, now)
        if plan is not UNCHANGED:
            self._put(write.group_id, write.key, plan)  # type: ignore[arg-type]
        return plan, current

    async def _clear(self, group_id: str, now: float) -> None:
        if self._lock.locked():
            await acquire_within(self._lock, self.lock_timeout, "the memory store")
            self._lock.release()
        self._groups.pop(group_id, None)

    async def _begin(self) -> TxStore:
        await acquire_within(self._lock, self.lock_timeout, "the memory store")
        return _MemoryTx(self)

    async def _close(self) -> None:
        self._groups.clear()
        self._expiries.clear()


class _MemoryTx(TxStore):
    __slots__ = ("_adapter",)

    def __init__(self, adapter: MemoryStateAdapter) -> None:
        self._adapter = adapter

    async def read_row(self, group_id: str, key: str, now: float) -> Row | None:
        return self._adapter._peek(group_id, key, now)

    async def read_rows(self, group_id: str | None, now: float) -> list[RowEntry]:
        return self._adapter._rows(group_id, now)

    async def commit(self, cleared: set[str], writes: dict[tuple[str, str], Row | None]) -> None:
        try:
            for group_id in cleared:
                self._adapter._groups.pop(group_id, None)
            for (group_id, key), row in writes.items():
                self._adapter._put(group_id, key, row)
        finally:
            self._adapter._lock.release()

    async def rollback(self) -> None:
        self._adapter._lock.release()
