"""Redis auto-pipelining: a loop turn's calls share one write, replies stay matched, failures stay exact.

Each test has a redis-server of its own: the server's counters (connections, reads, writes) then
count this test's traffic alone.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.crc import key_slot

from benchmarks.redis_server import RedisServer
from motia_state_sql import RedisStateAdapter, StateItem, StoreUnavailableError
from motia_state_sql.redis.layouts import NativeLayout
from motia_state_sql.redis.transport import text

LAYOUTS = ["native", "motia"]
BURST = 10_000


@pytest.fixture
async def server() -> AsyncIterator[RedisServer]:
    own = RedisServer()
    own.start()
    try:
        yield own
    finally:
        own.close()


class Stats:
    """The server's counters, read over one connection of its own (each read adds one read and
    one write to them, and no connection)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def __call__(self) -> dict[str, int]:
        info = self.client.info("stats")
        names = ("total_connections_received", "total_reads_processed", "total_writes_processed")
        return {name: int(info[name]) for name in names}


@pytest.fixture
def stats(server: RedisServer) -> Iterator[Stats]:
    with redis.Redis.from_url(server.url) as client:
        client.ping()
        yield Stats(client)


def _value(n: int) -> dict[str, Any]:
    """A value no other call of a test writes or expects."""
    return {"n": n, "tag": f"v{n}", "items": [n, -n]}


@pytest.mark.parametrize("layout", LAYOUTS)
async def test_random_cancellations_in_a_burst_leave_every_reply_its_own(
    server: RedisServer, stats: Stats, layout: Any
) -> None:
    rng = random.Random(13)
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    async with RedisStateAdapter(server.url, key_prefix=prefix, layout=layout) as store:
        await asyncio.gather(*(store.set("stored", f"k{n}", _value(n)) for n in range(BURST)))
        before = stats()

        def call(n: int) -> Coroutine[Any, Any, Any]:
            kind = n % 3
            if kind == 0:
                return store.get("stored", f"k{n}")
            if kind == 1:
                return store.get_item("stored", f"k{n}")
            return store.set("written", f"k{n}", _value(n))

        tasks = [asyncio.create_task(call(n)) for n in range(BURST)]
        loop = asyncio.get_running_loop()
        for task in tasks:
            moment = rng.random()
            if moment < 0.1:
                task.cancel()  # before it runs at all
            elif moment < 0.2:
                loop.call_soon(task.cancel)  # queued for the next write, not sent yet
            elif moment < 0.4:
                loop.call_later(rng.uniform(0, 0.05), task.cancel)  # sent, or even answered
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)

        cancelled = {n for n, got in enumerate(outcomes) if isinstance(got, asyncio.CancelledError)}
        assert 0.1 * BURST < len(cancelled) < 0.5 * BURST
        for n, got in enumerate(outcomes):
            if isinstance(got, asyncio.CancelledError):
                continue
            if n % 3 == 1:
                assert isinstance(got, StateItem), (n, got)
                assert (got.group_id, got.key, got.value) == ("stored", f"k{n}", _value(n)), n
            else:
                assert got == _value(n), (n, got)
        # every reply a cancelled caller left was read and dropped on the same connection
        assert stats()["total_connections_received"] == before["total_connections_received"]
        written = dict(zip(await store.keys("written"), await store.get_group("written"), strict=True))
        for n in range(2, BURST, 3):
            if n in cancelled:
                assert written.get(f"k{n}", _value(n)) == _value(n), n  # landed whole or not at all
            else:
                assert written[f"k{n}"] == _value(n), n
        assert await store.get("stored", "k1") == _value(1)


@pytest.mark.parametrize("layout", LAYOUTS)
async def test_a_connection_killed_mid_burst_fails_exactly_the_calls_in_flight(
    server: RedisServer, layout: Any
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    killer = aioredis.Redis.from_url(server.url)
    try:
        async with RedisStateAdapter(server.url, key_prefix=prefix, layout=layout) as store:
            await asyncio.gather(*(store.set("stored", f"k{n}", _value(n)) for n in range(100)))
            mine = await killer.client_id()
            (theirs,) = [c["id"] for c in await killer.client_list() if int(c["id"]) != mine]

            sets = [asyncio.create_task(store.set("g", f"k{n}", _value(n))) for n in range(BURST)]
            reads = [asyncio.create_task(store.get("stored", f"k{n % 100}")) for n in range(1000)]
            await asyncio.sleep(0)  # every call queued
            await asyncio.sleep(0)  # the write went out: all of them are in flight
            assert await killer.client_kill_filter(_id=theirs) == 1
            outcomes = await asyncio.gather(*sets, return_exceptions=True)

            failed = {n for n, got in enumerate(outcomes) if isinstance(got, StoreUnavailableError)}
            for n, got in enumerate(outcomes):
                assert got == _value(n) or isinstance(got, StoreUnavailableError), (n, got)
            assert failed, "the kill came after every reply: nothing was in flight"
            assert "unavailable" in str(outcomes[min(failed)])
            # reads are sent again once on a new connection; writes never are
            assert await asyncio.gather(*reads) == [_value(n % 100) for n in range(1000)]
            landed = dict(zip(await store.keys("g"), await store.get_group("g"), strict=True))
            for n in range(BURST):
                if n in failed:  # it may have run before the kill; then it landed whole
                    assert landed.get(f"k{n}", _value(n)) == _value(n), n
                else:
                    assert landed[f"k{n}"] == _value(n), n
            # the adapter works after: a new connection, and every call of a new burst lands
            again = await asyncio.gather(*(store.set("g", f"k{n}", _value(-n)) for n in range(BURST)))
            assert again == [_value(-n) for n in range(BURST)]
            assert await store.get("g", "k7") == _value(-7)
    finally:
        await killer.aclose()


async def test_a_burst_to_a_frozen_server_times_out_together(server: RedisServer) -> None:
    """Replies that stop coming fail every call waiting on the connection, once, within the timeout."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    async with RedisStateAdapter(server.url, key_prefix=prefix, socket_timeout=0.5) as store:
        await store.set("g", "k", 1)
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            first = [asyncio.create_task(store.set("g", f"k{n}", n)) for n in range(1000)]
            await asyncio.sleep(0.2)  # a second write, 0.2 s later: its own deadline is later
            second = [asyncio.create_task(store.get("g", "k")) for _ in range(1000)]
            outcomes = await asyncio.gather(*first, *second, return_exceptions=True)
            assert all(isinstance(got, StoreUnavailableError) for got in outcomes), set(map(type, outcomes))
            assert "socket_timeout=0.5" in str(outcomes[0])
            assert time.monotonic() - started < 2.5
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        assert await store.get("g", "k") == 1
        await asyncio.gather(*(store.set("g", f"k{n}", -n) for n in range(1000)))
        assert await store.get("g", "k999") == -999


@pytest.mark.parametrize("layout", LAYOUTS)
async def test_a_burst_from_one_loop_turn_takes_few_round_trips(
    server: RedisServer, stats: Stats, layout: Any
) -> None:
    """Counted by the server (reads and writes it made on its sockets), not by timing."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    calls = 2000
    async with RedisStateAdapter(server.url, key_prefix=prefix, layout=layout) as store:
        await store.set("g", "warm", 0)  # connected, scripts loaded
        await store.get("g", "warm")

        before = stats()
        for n in range(200):  # one at a time: each call is a round trip of its own
            await store.get("g", f"k{n}")
        one_by_one = stats()
        assert one_by_one["total_reads_processed"] - before["total_reads_processed"] >= 200

        got = await asyncio.gather(
            *(store.set("g", f"k{n}", _value(n)) for n in range(calls)),
            *(store.get("g", "warm") for _ in range(calls)),
        )
        after = stats()
        assert got == [*(_value(n) for n in range(calls)), *([0] * calls)]
        # 4000 calls: the server read their requests in a few 16 KiB chunks and answered in a few
        # writes
        reads = after["total_reads_processed"] - one_by_one["total_reads_processed"]
        writes = after["total_writes_processed"] - one_by_one["total_writes_processed"]
        assert reads <= 2 * calls // 20, reads
        assert writes <= 2 * calls // 20, writes
        assert after["total_connections_received"] == before["total_connections_received"]


# -- Redis Cluster: a link per node ------------------------------------------------------------


def _cluster(node: redis.Redis, *args: Any) -> Any:
    """``CLUSTER <args>`` on one node."""
    return node.execute_command("CLUSTER", *args)  # type: ignore[no-untyped-call]


def _primaries(url: str) -> dict[int, redis.Redis]:
    """A client of each primary of the cluster that ``url`` names a node of, by port."""
    with redis.Redis.from_url(url) as first:
        shards = _cluster(first, "SLOTS")
    return {int(shard[2][1]): redis.Redis(host="127.0.0.1", port=int(shard[2][1])) for shard in shards}


def _owner(node: redis.Redis, slot: int) -> int:
    """The port of the primary serving ``slot``, as ``node`` sees it."""
    return next(int(s[2][1]) for s in _cluster(node, "SLOTS") if s[0] <= slot <= s[1])


def _reads(node: redis.Redis) -> int:
    return int(node.info("stats")["total_reads_processed"])


def _moved(node: redis.Redis) -> int:
    """How many MOVED redirections ``node`` answered."""
    return int(node.info("errorstats").get("errorstat_MOVED", {}).get("count", 0))


async def test_a_cluster_burst_is_pipelined_per_node(redis_cluster_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    nodes = list(_primaries(redis_cluster_url).values())
    groups = [f"g{n}" for n in range(300)]
    try:
        async with RedisStateAdapter(redis_cluster_url, key_prefix=prefix, cluster=True) as store:
            for group in groups:  # every node has its connection and scripts
                await store.set(group, "warm", 0)
            before = [_reads(node) for node in nodes]
            got = await asyncio.gather(
                *(store.set(groups[n % 300], f"k{n}", _value(n)) for n in range(3000)),
                *(store.get(groups[n % 300], "warm") for n in range(3000)),
            )
            reads = [_reads(node) - old for node, old in zip(nodes, before, strict=True)]
            assert got == [*(_value(n) for n in range(3000)), *([0] * 3000)]
            # about 2000 calls per node, read by each node in a few chunks (+1 for our INFO)
            assert all(2 <= r <= 100 for r in reads), reads
            for n in range(5):
                numbers = sorted(range(n, 3000, 300), key=lambda m: f"k{m}")
                assert await store.get_group(groups[n]) == [*(_value(m) for m in numbers), 0]
            await asyncio.gather(*(store.clear(group) for group in groups))
    finally:
        for node in nodes:
            node.close()


async def test_a_cluster_slot_that_moved_is_followed(redis_cluster_url: str) -> None:
    """A node answers MOVED for a slot it gave away: the call lands, once, on the new node, and
    the next calls go there directly."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    nodes = _primaries(redis_cluster_url)
    async with RedisStateAdapter(redis_cluster_url, key_prefix=prefix, cluster=True) as store:
        assert isinstance(store._layout, NativeLayout)
        slot = key_slot(store._layout.redis_keys("moving")[0].encode())
        owner = nodes[_owner(nodes[min(nodes)], slot)]
        target = next(node for node in nodes.values() if node is not owner)
        ids = {port: text(_cluster(node, "MYID")) for port, node in nodes.items()}

        def move(to: redis.Redis) -> None:
            """Give the (empty) slot to ``to``: the new owner hears it first, as redis-cli does."""
            port = next(p for p, node in nodes.items() if node is to)
            for node in sorted(nodes.values(), key=lambda node: node is not to):
                _cluster(node, "SETSLOT", slot, "NODE", ids[port])

        try:
            assert await store.get("moving", "k") is None  # the slot's node learnt: the owner
            move(target)
            moved = _moved(owner)
            assert await store.set("moving", "k", 1) == 1
            assert _moved(owner) > moved
            assert _cluster(target, "COUNTKEYSINSLOT", slot) == 1
            moved = _moved(owner)
            assert await store.set("moving", "k", 2) == 2
            assert await store.get("moving", "k") == 2
            assert _moved(owner) == moved  # straight to the new node
            await store.clear("moving")
        finally:
            move(owner)
            for node in nodes.values():
                node.close()
