"""Arrival patterns and the standard operations on a store.

An arrival pattern decides when each operation of a measurement starts, and from when its latency
counts:

- ``one``: one coroutine, one call after another; latency is the call.
- ``workers(n)``: ``n`` long-lived coroutines taking the next index in turn; latency is the call.
- ``gather``: one task per operation, all started at once (``asyncio.gather``), as a web server
  starting a task per request does; latency counts from the start of the burst.
- ``semaphore(n)``: the same tasks, each waiting for ``asyncio.Semaphore(n)`` first; latency
  counts from the start of the burst (the wait for the semaphore included).
- ``open_loop(rate)``: a new task every ``1 / rate`` seconds whatever the store's pace (arrivals
  do not wait for answers); latency counts from each task's scheduled arrival, so a store that
  falls behind shows it in p99 instead of hiding it (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from ..base import StateAdapter

__all__ = [
    "OPERATIONS",
    "VALUE",
    "ENCODED",
    "Arrival",
    "Op",
    "Timing",
    "fill",
    "gather",
    "one",
    "open_loop",
    "operation",
    "rng",
    "semaphore",
    "sync_op",
    "workers",
    "arrivals",
]

Op = Callable[[int], Awaitable[Any]]
#: A measurement's wall time and the latency of each operation, in seconds.
Timing = tuple[float, list[float]]

#: The value every workload writes: a small order.
VALUE: Final = {"id": "order-0", "status": "pending", "total": 99.99, "items": [{"sku": "A-1", "qty": 2}]}
#: ``VALUE`` as JSON text (what baselines store, and what ``fill`` writes verbatim).
ENCODED: Final = json.dumps(VALUE)


@dataclass(frozen=True)
class Arrival:
    """An arrival pattern: ``run(op, indexes)`` calls ``op`` once per index and times it."""

    name: str
    run: Callable[[Op, range], Awaitable[Timing]]


def one() -> Arrival:
    """One coroutine, one call after another."""
    return workers(1, "x1")


def workers(count: int, name: str | None = None) -> Arrival:
    """``count`` long-lived coroutines, each taking the next index when its call returns."""

    async def run(op: Op, indexes: range) -> Timing:
        latencies: list[float] = []
        todo = iter(indexes)

        async def worker() -> None:
            for index in todo:
                started = time.perf_counter()
                await op(index)
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(count)))
        return time.perf_counter() - started, latencies

    return Arrival(name or f"x{count}", run)


def _burst(op: Op, indexes: range, gate: asyncio.Semaphore | None) -> Awaitable[Timing]:
    async def run() -> Timing:
        latencies: list[float] = []
        started = time.perf_counter()

        async def call(index: int) -> None:
            if gate is None:
                await op(index)
            else:
                async with gate:
                    await op(index)
            latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(call(index) for index in indexes))
        return time.perf_counter() - started, latencies

    return run()


def gather() -> Arrival:
    """One task per operation, all started at once."""
    return Arrival("gather", lambda op, indexes: _burst(op, indexes, None))


def semaphore(count: int) -> Arrival:
    """One task per operation, all started at once, at most ``count`` inside the store."""
    return Arrival(f"sem{count} gather", lambda op, indexes: _burst(op, indexes, asyncio.Semaphore(count)))


def open_loop(rate: float) -> Arrival:
    """A new task every ``1 / rate`` seconds; latency from each task's scheduled arrival."""

    async def run(op: Op, indexes: range) -> Timing:
        latencies: list[float] = []
        started = time.perf_counter()

        async def call(index: int, due: float) -> None:
            await op(index)
            latencies.append(time.perf_counter() - due)

        tasks = []
        for position, index in enumerate(indexes):
            due = started + position / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(call(index, due)))
        await asyncio.gather(*tasks)
        return time.perf_counter() - started, latencies

    return Arrival(f"open {rate:,.0f}/s", run)


def arrivals(concurrency: int, rate: float) -> dict[str, Arrival]:
    """The arrival patterns by the name ``--workload`` uses (``set/gather``)."""
    return {
        "x1": one(),
        "workers": workers(concurrency),
        "gather": gather(),
        "semaphore": semaphore(concurrency),
        "open": open_loop(rate),
    }


def rng(*seed: object) -> random.Random:
    """A generator seeded by ``seed``: the same run draws the same keys."""
    return random.Random("/".join(map(str, seed)))


def sync_op(fn: Callable[[int], Any]) -> Op:
    """An async wrapper so synchronous baselines run through the same arrival patterns."""

    async def op(index: int) -> Any:
        return fn(index)

    return op


def operation(name: str, store: StateAdapter, group: str, stored: int, tag: int) -> Op:
    """The operation ``name`` on ``store``, whose ``group`` holds ``k0`` .. ``k<stored - 1>``.

    ``set`` writes new keys (``s<tag>-<i>``), ``overwrite`` the stored ones in turn, ``get``
    reads them in turn, ``update`` increments one hot item, ``mix`` is 90 % gets, 9 % sets and
    1 % deletes of random stored keys.
    """
    from ..ops import increment

    if name == "set":

        async def op(i: int) -> Any:
            return await store.set(group, f"s{tag}-{i}", VALUE)

    elif name == "overwrite":

        async def op(i: int) -> Any:
            return await store.set(group, f"k{i % stored}", VALUE)

    elif name == "get":

        async def op(i: int) -> Any:
            return await store.get(group, f"k{i % stored}")

    elif name == "update":
        ops = [increment("n")]

        async def op(i: int) -> Any:
            return await store.update(group, "hot", ops)

    elif name == "mix":
        draw = rng("mix", tag)

        async def op(i: int) -> Any:
            roll, key = draw.random(), f"k{draw.randrange(stored)}"
            if roll < 0.90:
                return await store.get(group, key)
            if roll < 0.99:
                return await store.set(group, key, VALUE)
            return await store.delete(group, key)

    else:
        raise ValueError(f"unknown operation {name!r}; known: {', '.join(OPERATIONS)}")
    return op


#: The operations ``operation`` knows, with what each does.
OPERATIONS: Final = {
    "set": "set new keys",
    "overwrite": "set stored keys in turn",
    "get": "get stored keys in turn",
    "update": "increment one hot item",
    "mix": "90% get, 9% set, 1% delete of random stored keys",
}


async def fill(store: StateAdapter, group: str, start: int, stop: int) -> None:
    """Store items ``k<start>`` .. ``k<stop - 1>`` in ``group`` quickly.

    Transactions of 5 000 writes, or 500 concurrent writes on Redis (a Redis transaction reads
    every key first).
    """
    from ..redis import RedisStateAdapter

    for at in range(start, stop, 5_000):
        keys = [f"k{i}" for i in range(at, min(stop, at + 5_000))]
        if isinstance(store, RedisStateAdapter):
            for part in range(0, len(keys), 500):
                await asyncio.gather(
                    *(store.set_json(group, key, ENCODED) for key in keys[part : part + 500])
                )
            continue
        async with store.transaction() as tx:
            for key in keys:
                await tx.set_json(group, key, ENCODED)
