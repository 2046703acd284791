"""Expired items are reclaimed later, without scanning the store on every call (Memory, SQLite).

The Redis native layout's reclaiming is tested in tests/test_redis.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

from motia_state_sql import MemoryStateAdapter, SqliteStateAdapter
from motia_state_sql.schema import TABLE

from .conftest import FakeClock


def _stored_rows(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as raw:
        (count,) = raw.execute(f"SELECT count(*) FROM {TABLE}").fetchone()
    return int(count)


async def test_sqlite_purges_expired_rows_in_bounded_sweeps(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    clock = FakeClock()
    async with SqliteStateAdapter(path, clock=clock, purge_interval=60) as store:
        await asyncio.gather(*(store.set("g", f"k{n:04d}", n, ttl=1) for n in range(2500)))
        await store.set("keep", "k", "forever")
        clock.advance(30)
        await store.set("keep", "k2", "forever")
        assert await store.keys("g") == []  # invisible at once...
        assert _stored_rows(path) == 2502  # ...but no sweep before purge_interval has passed
        for left in (1500, 500, 0):  # each sweep takes at most 1000 rows
            clock.advance(61)
            await store.set("keep", "k2", "forever")
            assert _stored_rows(path) == left + 2
        assert await store.get_group("keep") == ["forever", "forever"]


async def test_memory_reclaims_expired_rows() -> None:
    clock = FakeClock()
    store = MemoryStateAdapter(clock=clock)
    for n in range(100):
        await store.set("g", f"k{n}", n, ttl=1 + n % 3)
    await store.set("keep", "k", 1)
    clock.advance(10)
    assert await store.keys("g") == []
    await store.set("keep", "k", 2)  # a write reclaims what expired
    assert list(store._groups) == ["keep"]


async def test_memory_expiry_index_stays_bounded_by_live_items() -> None:
    clock = FakeClock()
    store = MemoryStateAdapter(clock=clock)
    for n in range(10_000):
        await store.set("g", "same", n, ttl=3600)  # rewrites one key: one entry is current
        if n % 100 == 0:
            await store.set("other", f"k{n}", n, ttl=3600)
            await store.clear("other")
    assert len(store._expiries) <= 128
    clock.advance(3601)
    await store.set("g", "fresh", 1)
    assert await store.get_group("g") == [1]
    assert store._expiries == []
