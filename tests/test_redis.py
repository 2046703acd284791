"""Redis backend: URLs and ownership, layouts, outages, cancellation, processes."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.crc import key_slot

from motia_state_sql import (
    ConflictError,
    InvalidKeyError,
    RedisStateAdapter,
    StoreUnavailableError,
    increment,
    open_state,
)
from motia_state_sql.redis.adapter import _text

from .redis_server import RedisServer

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
    with pytest.raises(InvalidKeyError, match="native or motia"):
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


async def test_password_never_shows(caplog: pytest.LogCaptureFixture) -> None:
    secret = "s3cret-" + uuid.uuid4().hex
    own = RedisServer(None, "--requirepass", secret)
    own.start()
    url = f"redis://:{secret}@127.0.0.1:{own.port}/0"
    caplog.set_level(logging.DEBUG)
    try:
        async with open_state(f"{url}?key_prefix={_prefix()}") as store:
            await store.set("g", "k", 1)
            assert await store.get("g", "k") == 1
            assert secret not in repr(store)
            assert "***" in repr(store)
            own.stop()
            with pytest.raises(StoreUnavailableError) as info:
                await store.get("g", "k")
            assert secret not in str(info.value)
        with pytest.raises(InvalidKeyError) as bad:
            open_state(f"{url}?nope=1")
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
            names = [_text(n) for n in await store._client.keys(f"{store.key_prefix}*")]
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
