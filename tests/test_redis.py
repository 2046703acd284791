"""Redis backend: URLs and ownership, layouts, outages, cancellation, processes."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import random
import signal
import threading
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Coroutine
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.crc import key_slot

from benchmarks.redis_server import RedisServer, free_port
from motia_state_sql import (
    ConfigError,
    ConflictError,
    InvalidKeyError,
    RedisStateAdapter,
    SchemaError,
    SqliteStateAdapter,
    StateError,
    StateTransaction,
    StoreUnavailableError,
    increment,
    open_state,
)
from motia_state_sql.cli_io import copy_items
from motia_state_sql.redact import redact
from motia_state_sql.redis.layouts import NativeLayout
from motia_state_sql.redis.transport import text

LAYOUTS = ["native", "motia"]


def _prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}:"


@pytest.fixture
async def server() -> AsyncIterator[RedisServer]:
    """A redis-server of this test's own, which the test may stop and restart."""
    own = RedisServer(None, "--appendonly", "yes", "--appendfsync", "always")
    own.start()
    try:
        yield own
    finally:
        own.close()


def _commandstats(url: str, command: str) -> int:
    with redis.Redis.from_url(url) as client:
        stats = client.info("commandstats")
        return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


# -- construction ------------------------------------------------------------------------------


async def test_url_options_and_database(redis_url: str) -> None:
    prefix = _prefix()
    base = redis_url.rsplit("/", 1)[0]
    async with open_state(f"{base}/3?layout=motia&key_prefix={prefix}&socket_timeout=2") as store:
        assert isinstance(store, RedisStateAdapter)
        assert (store.layout, store.key_prefix) == ("motia", prefix)
        await store.set("orders", "o:1", {"id": 1})
    with redis.Redis.from_url(f"{base}/3") as client:
        assert client.get(f"{prefix}orders:o:1") == b'{"id":1}'
        client.delete(f"{prefix}orders:o:1")
    with pytest.raises(InvalidKeyError, match="key_prefix"):
        open_state(f"{redis_url}?prefix=x")
    with pytest.raises(ConfigError, match="native or motia"):
        open_state(f"{redis_url}?layout=other")


async def test_unix_socket(tmp_path: Path) -> None:
    sock = tmp_path / "redis.sock"
    own = RedisServer(None, "--unixsocket", str(sock), "--unixsocketperm", "700")
    own.start()
    try:
        async with open_state(f"unix://{sock}?db=2&key_prefix={_prefix()}") as store:
            await store.set("g", "k", [1])
            assert await store.get("g", "k") == [1]
    finally:
        own.close()


@pytest.mark.parametrize("where", ["userinfo", "query"])
async def test_password_never_shows(where: str, caplog: pytest.LogCaptureFixture) -> None:
    secret = "s3cret-" + uuid.uuid4().hex
    own = RedisServer(None, "--requirepass", secret)
    own.start()
    url = (
        f"redis://:{secret}@127.0.0.1:{own.port}/0?"
        if where == "userinfo"
        else f"redis://127.0.0.1:{own.port}/0?password={secret}&"
    )
    caplog.set_level(logging.DEBUG)
    try:
        async with open_state(f"{url}key_prefix={_prefix()}") as store:
            await store.set("g", "k", 1)
            assert await store.get("g", "k") == 1
            assert secret not in repr(store)
            assert "***" in repr(store)
            own.stop()
            with pytest.raises(StoreUnavailableError) as info:
                await store.get("g", "k")
            assert secret not in str(info.value)
        with pytest.raises(InvalidKeyError) as bad:
            open_state(f"{url}nope=1")
        assert secret not in str(bad.value)
        assert secret not in caplog.text
    finally:
        own.close()


async def test_injected_client_is_never_closed(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        async with RedisStateAdapter(client=client, key_prefix=_prefix()) as store:
            await store.set("g", "k", 1)
            assert "given by the caller" in repr(store)
        assert await client.ping()
    finally:
        await client.aclose()


async def test_bursts_wait_for_a_connection(redis_url: str) -> None:
    async with RedisStateAdapter(redis_url, key_prefix=_prefix(), max_connections=4) as store:
        await asyncio.gather(*(store.set("g", f"k{n}", n) for n in range(300)))
        got = await asyncio.gather(*(store.get("g", f"k{n}") for n in range(300)))
        assert got == list(range(300))


def test_bad_construction() -> None:
    with pytest.raises(ValueError, match="layout"):
        RedisStateAdapter(layout="flat")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_connections"):
        RedisStateAdapter(max_connections=0)
    with pytest.raises(ValueError, match="standalone"):
        RedisStateAdapter("redis://127.0.0.1:1/0", layout="motia", cluster=True)


# -- layouts -----------------------------------------------------------------------------------


async def test_native_group_lives_in_one_slot_and_is_never_scanned(redis_url: str) -> None:
    async with RedisStateAdapter(redis_url, key_prefix=_prefix()) as store:
        for group in ["orders", "a{b}c", "}{", "{", "é:x"]:
            await store.set(group, "k1", 1, ttl=100)
            await store.set(group, "k2", 2)
            names = [text(n) for n in await store._transport.client.keys(f"{store.key_prefix}*")]
            mine = [n for n in names if n.endswith(f":{group}")]
            assert len(mine) == 2
            assert len({key_slot(n.encode()) for n in mine}) == 1
            scans = _commandstats(redis_url, "scan")
            assert await store.get_group(group) == [1, 2]
            assert await store.keys(group) == ["k1", "k2"]
            assert len(await store.items(group)) == 2
            await store.clear(group)
            assert _commandstats(redis_url, "scan") == scans
            assert await store.get_group(group) == []


async def test_motia_layout_escapes_glob_characters(redis_url: str) -> None:
    groups = ["a*", "ab", "a?", "a[b]", "a\\", "a", "abc"]
    async with RedisStateAdapter(redis_url, key_prefix=_prefix() + "*[", layout="motia") as store:
        for group in groups:
            await store.set(group, "k", group)
        for group in groups:
            assert await store.get_group(group) == [group]
            assert await store.keys(group) == ["k"]
        await store.clear("a*")
        assert await store.list_groups() == sorted(set(groups) - {"a*"})


@pytest.mark.parametrize("layout", LAYOUTS)
async def test_values_lua_would_bend_survive_every_path(redis_url: str, layout: Any) -> None:
    tricky = {
        "empty_list": [],
        "empty_obj": {},
        "no": False,
        "big": 2**63 - 1,
        "small": -(2**63),
        "nested": [[], {}, [False, None]],
        "text": "",
        "zero": 0,
        "float": 0.1,
    }
    async with RedisStateAdapter(redis_url, key_prefix=_prefix(), layout=layout) as store:
        await store.set("g", "k", tricky)
        result = await store.update("g", "k", [increment("counter")])
        assert result.new_value == {**tricky, "counter": 1}
        async with store.transaction() as tx:
            value = await tx.get("g", "k")
            await tx.set("g", "copy", value)
        assert await store.get("g", "copy") == {**tricky, "counter": 1}
        assert await store.get_group("g") == [{**tricky, "counter": 1}] * 2


# -- failure behaviour -------------------------------------------------------------------------


async def test_outage_fails_fast_and_recovers(server: RedisServer) -> None:
    async with RedisStateAdapter(
        server.url, key_prefix=_prefix(), socket_timeout=1, connect_timeout=1
    ) as store:
        await store.set("g", "before", 1)
        server.stop()
        for call in (
            store.get("g", "before"),
            store.set("g", "k", 2),
            store.get_group("g"),
            store.update("g", "k", [increment("n")]),
            store.list_groups(),
        ):
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError, match="unavailable"):
                await call
            assert time.monotonic() - started < 3
        server.start()
        assert await store.get("g", "before") == 1  # appendonly: the data survived the restart
        await store.set("g", "after", 2)
        assert await store.get_group("g") == [2, 1]


async def test_unresponsive_server_times_out(server: RedisServer) -> None:
    async with RedisStateAdapter(
        server.url, key_prefix=_prefix(), socket_timeout=0.5, connect_timeout=0.5
    ) as store:
        await store.set("g", "k", 1)
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError):
                await store.get("g", "k")
            assert time.monotonic() - started < 2.5
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        assert await store.get("g", "k") == 1


@pytest.mark.parametrize("layout", LAYOUTS)
async def test_outage_mid_load_leaves_no_half_written_group(server: RedisServer, layout: Any) -> None:
    prefix = _prefix()
    size = 5
    async with RedisStateAdapter(
        server.url, key_prefix=prefix, layout=layout, socket_timeout=1, connect_timeout=1
    ) as store:

        async def load() -> None:
            for n in range(10_000):
                try:
                    async with store.transaction() as tx:
                        for k in range(size):
                            await tx.set(f"batch{n}", f"k{k}", n)
                    await store.clear(f"batch{n - 1}") if n % 3 == 0 else None
                except StoreUnavailableError:
                    return

        task = asyncio.create_task(load())
        await asyncio.sleep(random.uniform(0.2, 0.5))
        server.stop()
        await asyncio.wait_for(task, 10)
        server.start()
        groups = await store.list_groups()
        assert groups
        for group in groups:
            assert len(await store.keys(group)) == size, group


@pytest.mark.parametrize("layout", LAYOUTS)
async def test_cancelled_calls_leave_connections_in_step(redis_url: str, layout: Any) -> None:
    rng = random.Random(7)
    async with RedisStateAdapter(redis_url, key_prefix=_prefix(), layout=layout) as store:
        for n in range(50):
            await store.set("g", f"k{n}", n)

        def call(kind: int, n: int) -> Coroutine[Any, Any, Any]:
            if kind == 0:
                return store.get("g", f"k{n}")
            if kind == 1:
                return store.set("g", f"k{n}", n)
            if kind == 2:
                return store.update("g", f"k{n}", [{"type": "set", "path": None, "value": n}])
            return store.get_group("g")

        for round_ in range(300):
            task = asyncio.create_task(call(rng.randrange(4), rng.randrange(50)))
            await asyncio.sleep(rng.uniform(0, 0.002))
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            probe = rng.randrange(50)
            assert await store.get("g", f"k{probe}") == probe, round_
        assert await store.get_group("g") == sorted(range(50), key=lambda n: f"k{n}")


# -- real processes ----------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
async def test_commit_checks_every_read(redis_url: str, layout: Any) -> None:
    prefix = _prefix()
    async with (
        RedisStateAdapter(redis_url, key_prefix=prefix, layout=layout) as store,
        RedisStateAdapter(redis_url, key_prefix=prefix, layout=layout) as other,
    ):
        await store.set("g", "a", 1)
        changes = [
            other.set("g", "new", 1),  # a key appears in a group the transaction listed
            other.delete("g", "new"),  # ... or disappears from it
            other.set("g", "a", 2),  # a listed value changes
            other.set("absent", "k", 1),  # a key read as absent appears
        ]

        async def interfered(change: Coroutine[Any, Any, Any]) -> None:
            async with store.transaction() as tx:
                await tx.get_group("g")
                await tx.get("absent", "k")
                await tx.set("out", "k", "written")
                await tx.clear("g2")
                await change

        for change in changes:
            with pytest.raises(ConflictError, match="nothing of it was applied"):
                await interfered(change)
            assert await store.get("out", "k") is None
            await store.delete("absent", "k")
        # without interference the same transaction commits
        async with store.transaction() as tx:
            await tx.get_group("g")
            await tx.set("out", "k", "written")
        assert await store.get("out", "k") == "written"


# -- transactions across groups ----------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
async def test_commit_checks_the_set_of_groups(redis_url: str, layout: Any) -> None:
    prefix = _prefix()
    async with (
        RedisStateAdapter(redis_url, key_prefix=prefix, layout=layout) as store,
        RedisStateAdapter(redis_url, key_prefix=prefix, layout=layout) as other,
    ):

        async def count_groups(read: str, change: Coroutine[Any, Any, Any] | None) -> None:
            async with store.transaction() as tx:
                seen = await tx.list_groups() if read == "list_groups" else await tx.items()
                if change is not None:
                    await change
                await tx.set("summary", "groups", len(seen))

        for read in ("list_groups", "items"):
            for change in ("new group", "group gone", "new row"):
                await store.set("g1", "k", 1)
                if change == "new group":
                    interference = other.set("g2", "k", 1)
                elif change == "group gone":
                    interference = other.clear("g1")
                else:
                    interference = other.set("g1", "k2", 2)  # items() returned the group's rows
                with pytest.raises(ConflictError, match="nothing of it was applied"):
                    await count_groups(read, interference)
                assert await store.get("summary", "groups") is None
                await other.clear("g2")
                await other.delete("g1", "k2")
            # without interference the same transaction commits, its own new group notwithstanding
            await count_groups(read, None)
            assert await store.get("summary", "groups") == 1
            await store.clear("summary")


async def _cross_group_read(store: RedisStateAdapter, read: str) -> None:
    async with store.transaction() as tx:
        await tx.set("g1", "k", 2)
        await (tx.list_groups() if read == "list_groups" else tx.items())


async def test_cluster_refuses_reads_across_groups_in_a_transaction(redis_cluster_url: str) -> None:
    async with RedisStateAdapter(redis_cluster_url, key_prefix=_prefix(), cluster=True) as store:
        await store.set("g1", "k", 1)
        for read in ("list_groups", "items"):
            with pytest.raises(StateError, match="hash slots"):
                await _cross_group_read(store, read)
            assert await store.get("g1", "k") == 1
        async with store.transaction() as tx:  # one group is fine
            assert await tx.items("g1") != []
            await tx.set("g1", "k", 3)
        assert await store.get("g1", "k") == 3


# -- motia layout: atomic group reads, foreign data ----------------------------------------------


async def _move(source: str, target: str, fresh: str, tx: StateTransaction) -> None:
    """Move one unit from ``source`` to ``target``, renaming ``source`` to ``fresh``."""
    x, y = await tx.get("bank", source), await tx.get("bank", target)
    await tx.delete("bank", source)
    await tx.set("bank", fresh, x - 1)
    await tx.set("bank", target, y + 1)


def _mover(url: str, prefix: str, names: list[str], stop: threading.Event) -> None:
    """In its own thread and loop: move one unit between items, renaming one, until stopped."""

    async def run() -> None:
        rng = random.Random(3)
        async with RedisStateAdapter(url, key_prefix=prefix, layout="motia") as mover:
            serial = 0
            while not stop.is_set():
                a, b = rng.sample(range(len(names)), 2)
                serial += 1
                fresh = f"m{serial:06}"
                await mover.run_transaction(partial(_move, names[a], names[b], fresh))
                names[a] = fresh

    asyncio.run(run())


async def test_motia_group_reads_are_atomic_snapshots(redis_url: str) -> None:
    prefix = _prefix()
    names = [f"a{n:03}" for n in range(300)]
    async with RedisStateAdapter(redis_url, key_prefix=prefix, layout="motia") as store:
        async with store.transaction() as tx:
            for name in names:
                await tx.set("bank", name, 10)
        stop = threading.Event()
        thread = threading.Thread(target=_mover, args=(redis_url, prefix, names, stop))
        thread.start()
        torn = 0
        try:
            for _ in range(60):
                values = await store.get_group("bank")
                items = await store.items("bank")
                keys = await store.keys("bank")
                torn += sum(values) != 3000 or len(values) != 300
                torn += sum(i.value for i in items) != 3000 or len(items) != 300
                torn += len(keys) != 300
        finally:
            stop.set()
            await asyncio.to_thread(thread.join)
        assert torn == 0
        assert sum(await store.get_group("bank")) == 3000


async def test_motia_value_that_is_not_json_is_a_schema_error(redis_url: str) -> None:
    prefix = _prefix()
    async with RedisStateAdapter(redis_url, key_prefix=prefix, layout="motia") as store:
        await store.set("g", "ok", 1)
        await store._transport.client.set(f"{prefix}g:bad", "hello")  # another tool wrote it
        for call in (store.get("g", "bad"), store.get_group("g"), store.items(), store.items("g")):
            with pytest.raises(SchemaError, match=f"{prefix}g:bad.*not a JSON value"):
                await call
        assert await store.get("g", "ok") == 1
        assert await store.list_groups() == ["g"]
        assert await store.delete("g", "bad") == "hello"  # removing it works, and says what it held
        assert await store.get_group("g") == [1]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_one_adapter_serves_one_event_loop_after_another(layout: Any) -> None:
    """pytest users run asyncio.run (or a fresh loop per test) many times with one adapter."""
    own = RedisServer()
    own.start()
    try:
        prefix = _prefix()
        store = RedisStateAdapter(own.url, key_prefix=prefix, layout=layout, max_connections=2)
        client = redis.Redis.from_url(own.url)

        async def first() -> None:
            await asyncio.gather(*(store.set("g", f"k{i}", i) for i in range(6)))
            await store.update("g", "n", [increment("v")])
            assert len(client.client_list()) == 2  # the adapter's one pipelined connection, and ours

        async def second() -> list[Any]:
            await asyncio.gather(*(store.update("g", "n", [increment("v")]) for _ in range(4)))
            async with store.transaction() as tx:
                await tx.set("g", "t", await tx.get("g", "k1"))
            return await store.get_group("g")

        with client:
            asyncio.run(first())
            # the loop's end cancelled the connection's tasks, which closed it: nothing is left open
            assert len(client.client_list()) == 1
            assert asyncio.run(second()) == [0, 1, 2, 3, 4, 5, {"v": 5}, 1]
            assert asyncio.run(store.keys("g")) == [*(f"k{i}" for i in range(6)), "n", "t"]
            asyncio.run(store.close())  # from yet another loop
            gc.collect()  # a socket left unclosed would warn (an error in this suite) here
            assert len(client.client_list()) == 1  # every connection of the adapter was closed
        with pytest.raises(StateError, match="closed"):
            asyncio.run(store.get("g", "k1"))
    finally:
        own.close()


def test_a_cluster_adapter_in_another_event_loop_is_a_clear_error(redis_cluster_url: str) -> None:
    store = RedisStateAdapter(redis_cluster_url, key_prefix=_prefix(), cluster=True)

    async def use() -> None:
        await store.set("g", "k", 1)

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(use())
        for call in (use, store.close):
            with pytest.raises(StateError, match=r"another event loop.*one adapter per asyncio\.run"):
                asyncio.run(call())
        loop.run_until_complete(store.close())  # its own loop closes it
        gc.collect()  # a socket left unclosed would warn (an error in this suite) here
    finally:
        loop.close()


async def test_motia_values_node_wrote_follow_the_node_policy(redis_url: str, tmp_path: Path) -> None:
    """Numbers beyond 64-bit are the doubles Node meant; a lone surrogate fails alone, naming its key."""
    prefix = _prefix()
    async with RedisStateAdapter(redis_url, key_prefix=prefix, layout="motia") as store:
        client = store._transport.client
        await client.set(f"{prefix}g:big", '{"n":10000000000000000000}')  # JSON.stringify({n: 1e19})
        await client.set(f"{prefix}g:huge", '{"n":36893488147419103232}')  # 2**65, beyond u64 too
        await client.set(f"{prefix}h:ok", "1")
        for key, number in (("big", 1e19), ("huge", 2.0**65)):
            value = await store.get("g", key)
            assert value == {"n": number}
            assert type(value["n"]) is float
        assert (await store.update("g", "big", [increment("n", 4096)])).new_value == {"n": 1e19 + 4096}
        assert await store.get("g", "big") == {"n": 1e19 + 4096}
        async with store.transaction() as tx:  # the version is the stored text's: commits
            await tx.update("g", "huge", [increment("n", -(2.0**64))])
        assert await store.get("g", "huge") == {"n": 2.0**64}
        await client.set(f"{prefix}g:huge", '{"n":36893488147419103232}')
        # copy (motia-state copy's code) takes them all, as doubles
        async with SqliteStateAdapter(tmp_path / "copy.db") as target:
            assert await copy_items(store.iter_entries(), target, 1000) == (3, 2)
            assert await target.get("g", "huge") == {"n": 2.0**65}

        await client.set(f"{prefix}g:cut", '{"t":"\\ud83d"}')  # JSON.stringify({t: "😀".substring(0, 1)})
        for call in (store.get("g", "cut"), store.get_item("g", "cut"), store.get_group("g"), store.items()):
            with pytest.raises(SchemaError, match=f"{prefix}g:cut.*lone surrogate"):
                await call
        with pytest.raises(SchemaError, match=f"{prefix}g:cut.*lone surrogate"):
            await store.update("g", "cut", [increment("n")])
        # every other key stays readable
        assert await store.get("g", "big") == {"n": 1e19 + 4096}
        assert await store.get_group("h") == [1]
        assert sorted(await store.keys("g")) == ["big", "cut", "huge"]
        assert await store.list_groups() == ["g", "h"]
        async with SqliteStateAdapter(tmp_path / "refused.db") as target:
            # copy refuses, naming the key (each batch is a transaction: batches before it stay)
            with pytest.raises(SchemaError, match=f"{prefix}g:cut"):
                await copy_items(store.iter_entries(), target, 1000)
        assert await store.delete("g", "cut") == '{"t":"\\ud83d"}'  # removing it works
        assert await store.get_group("g") == [{"n": 1e19 + 4096}, {"n": 2.0**65}]


async def test_other_layout_under_the_same_prefix_is_a_clear_error(redis_url: str) -> None:
    prefix = _prefix()
    async with (
        RedisStateAdapter(redis_url, key_prefix=prefix) as native,
        RedisStateAdapter(redis_url, key_prefix=prefix, layout="motia") as motia,
    ):
        await native.set("orders", "o1", 1)
        data = text(next(iter(await native._transport.client.keys(f"{prefix}*:d:orders"))))
        group, key = data[len(prefix) :].split(":", 1)
        for call in (
            motia.list_groups(),
            motia.items(),
            motia.get_group(group),
            motia.get(group, key),
            motia.set(group, key, 1),
        ):
            with pytest.raises(SchemaError, match="other layout") as info:
                await call
            assert "key_prefix" in str(info.value)
        assert await native.get("orders", "o1") == 1


# -- native layout: expiry, versions, write costs ------------------------------------------------


async def test_native_expired_groups_are_reclaimed(redis_url: str) -> None:
    async with RedisStateAdapter(redis_url, key_prefix=_prefix(), expiry_margin=0.05) as store:
        raw = store._transport.client
        layout = store._layout
        assert isinstance(layout, NativeLayout)
        short, mixed, later = (layout.redis_keys(group) for group in ("short", "mixed", "later"))
        await store.set("short", "a", 1, ttl=0.2)
        await store.set("short", "b", 2, ttl=0.1)
        for name in short:  # every item expires: the keys expire with the last one, plus the margin
            assert 150 < await raw.pttl(name) <= 250
        await store.set("mixed", "keep", 1)
        await store.set("mixed", "gone", 2, ttl=0.1)
        assert await raw.pttl(mixed[0]) == -1
        await store.set("later", "a", 1, ttl=30)
        assert await raw.pttl(later[0]) > 29_000
        await store.set("later", "b", 2)  # an item without expiry keeps the group
        assert [await raw.pttl(name) for name in later] == [-1, -1]
        await store.delete("later", "b")
        assert await raw.pttl(later[0]) > 29_000
        async with store.transaction() as tx:
            await tx.set("later", "b", 2)
        assert await raw.pttl(later[0]) == -1

        await asyncio.sleep(0.35)  # nobody writes to the groups again
        assert await raw.exists(*short) == 0
        assert await raw.hlen(mixed[0]) == 2  # its expired field is invisible, not yet reclaimed
        assert await store.keys("mixed") == ["keep"]  # a read meeting it reclaims it
        assert (await raw.hlen(mixed[0]), await raw.exists(mixed[1])) == (1, 0)
        await store.set("mixed", "gone", 2, ttl=0.1)
        await asyncio.sleep(0.15)
        assert await store.get("mixed", "gone") is None
        assert (await raw.hlen(mixed[0]), await raw.exists(mixed[1])) == (1, 0)


async def test_native_versions_beyond_double_precision_still_advance(redis_url: str) -> None:
    async with RedisStateAdapter(redis_url, key_prefix=_prefix()) as store:
        await store.set("g", "k", 1)
        data = NativeLayout(store._transport, store.key_prefix, margin_ms="0").redis_keys("g")[0]
        big = 2**62 + 8
        await store._transport.client.hset(data, "k", f"{big}|1.0|1.0||1")
        await store.set("g", "k", 2)
        item = await store.get_item("g", "k")
        assert item is not None
        assert item.version == big + 1
        await store.update("g", "k", [increment(None, 1)])
        item = await store.get_item("g", "k")
        assert item is not None
        assert (item.version, item.value) == (big + 2, 3)


async def test_native_set_skips_reclaim_in_groups_without_expiring_items(redis_url: str) -> None:
    async with RedisStateAdapter(redis_url, key_prefix=_prefix()) as store:
        before = _commandstats(redis_url, "zrangebyscore")
        for n in range(50):
            await store.set("plain", f"k{n}", n)
        assert _commandstats(redis_url, "zrangebyscore") == before
        await store.set("plain", "t", 1, ttl=100)
        await store.set("plain", "k0", 0)
        assert _commandstats(redis_url, "zrangebyscore") > before


# -- cluster outages, passwords in the query ---------------------------------------------------


async def test_cluster_outage_is_store_unavailable() -> None:
    port = free_port(cluster=True)
    closed = RedisStateAdapter(
        f"redis://127.0.0.1:{port}/0", cluster=True, connect_timeout=1, socket_timeout=1
    )
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="unavailable"):
        await closed.get("g", "k")
    assert time.monotonic() - started < 3
    await closed.close()
    node = RedisServer(port, "--cluster-enabled", "yes")  # a node serving no slots: CLUSTERDOWN
    node.extra += ["--cluster-config-file", str(node.folder / "nodes.conf")]
    node.start()
    try:
        for cluster in (True, False):
            async with RedisStateAdapter(
                node.url, cluster=cluster, connect_timeout=1, socket_timeout=1
            ) as store:
                with pytest.raises(StoreUnavailableError, match="unavailable"):
                    await store.set("g", "k", 1)
    finally:
        node.close()


async def test_password_in_the_query_never_shows() -> None:
    assert redact("redis://u:pw@h:1/0?password=topsecret&db=2") == "redis://u:***@h:1/0?password=***&db=2"
    assert redact("rediss://h/0?ssl_password=topsecret") == "rediss://h/0?ssl_password=***"
    own = RedisServer(None, "--requirepass", "topsecret")
    own.start()
    url = f"redis://127.0.0.1:{own.port}/0?password=topsecret"
    try:
        async with RedisStateAdapter(url, key_prefix=_prefix(), socket_timeout=1, connect_timeout=1) as store:
            await store.set("g", "k", 1)
            assert "topsecret" not in repr(store)
            assert "password=***" in repr(store)
            own.stop()
            with pytest.raises(StoreUnavailableError) as info:
                await store.get("g", "k")
            assert "topsecret" not in str(info.value)
            assert "password=***" in str(info.value)
    finally:
        own.close()


async def test_idle_connections_survive_a_restart(server: RedisServer) -> None:
    async with RedisStateAdapter(
        server.url, key_prefix=_prefix(), socket_timeout=1, connect_timeout=1
    ) as store:
        await asyncio.gather(*(store.set("g", f"k{n}", n) for n in range(20)))  # 20 connections
        server.stop()
        server.start()
        await asyncio.sleep(0.05)  # the loop sees the old server close them (a restart takes time)
        # every idle connection was closed by the old server: writes (never retried) still land
        await asyncio.gather(*(store.set("g", f"k{n}", -n) for n in range(20)))
        assert await store.get_group("g") == [-n for n in sorted(range(20), key=lambda n: f"k{n}")]


# -- streaming a large group -------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
async def test_a_group_streams_in_batches_without_holding_its_values(redis_url: str, layout: Any) -> None:
    """``iter_entries`` (export, copy) lists a group's key names, then reads its values a batch at
    a time: peak memory follows the batch, not the group."""
    async with RedisStateAdapter(redis_url, key_prefix=_prefix(), layout=layout) as store:
        big = "x" * 4000
        async with store.transaction() as tx:
            for n in range(2000):  # 8 MB of values in one group
                await tx.set("g", f"k{n:05d}", big)
        await store.set("g", "gone", 1, ttl=0.05)
        await store.set("g2", "k", 2)
        await asyncio.sleep(0.1)
        tracemalloc.start()
        try:
            seen = [(entry.group_id, entry.key) async for entry in store.iter_entries(batch_size=100)]
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert seen == [("g", f"k{n:05d}") for n in range(2000)] + [("g2", "k")]  # expired skipped
        assert peak < 3 * 1024 * 1024, peak  # 100 values of 4 KB at a time, never the 8 MB
        assert [e.text async for e in store.iter_entries("g2", batch_size=1)] == ["2"]
