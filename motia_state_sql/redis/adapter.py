"""RedisStateAdapter: the contract on Redis, for several instances sharing one store.

Two layouts (``layouts``): ``native`` (default: atomic, Cluster-safe, a group costs what it
holds) and ``motia`` (exactly the keys of Motia's ``@motiadev/adapter-redis-state``, so Node and
Python instances share state; versions there identify the content, see the README). Every request
goes through the ``Transport`` (``transport``); this module checks the settings, runs updates and
keeps what a transaction read.

Values are never decoded in Lua; ``update`` reads, computes the new value in Python with the
shared ``ops`` module, and writes back with a compare-and-set script (retried on conflict).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from .. import codec, options
from ..base import IdleGroup, StateAdapter, StoreInfo, TxStore, in_prefix
from ..errors import ConfigError, ConflictError, StateError
from ..ops import Filter
from ..redact import redact
from ..rows import Clock, Plan, Row, RowEntry, Write, WriteResult, plan_write
from .layouts import Layout, MotiaLayout, NativeLayout, Reads
from .transport import Client, Transport, text

__all__ = ["DEFAULT_PREFIX", "RedisStateAdapter"]

DEFAULT_PREFIX: Final = "motia:state:"
#: update retries its compare-and-set this many times under contention before ConflictError.
UPDATE_ATTEMPTS: Final = 200
#: Updates of one key from this process take turns on one of this many locks.
_STRIPES: Final = 64
#: The adapter's settings: keyword arguments of the constructor, never redis-py URL parameters.
_SETTINGS: Final = ("key_prefix", "layout", "cluster", "socket_timeout", "connect_timeout", "max_connections")


def _check_url(url: object) -> None:
    """Refuse, before redis-py parses it, a URL whose mistakes redis-py would only meet later.

    Raises:
        ConfigError: not a str; a bad port; one of the adapter's settings in the query (they are
            keyword arguments here: open_state takes them in its URL and passes them so); an
            ``ssl_`` parameter without TLS; a database that is not an int >= 0.
    """
    if type(url) is not str:
        raise ConfigError(f"url must be a str, got {type(url).__name__}")
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises for a port that is not a number in 0-65535
    except ValueError as exc:
        raise ConfigError(f"Redis URL {redact(url)}: {exc}") from None
    for name, _ in parse_qsl(parts.query, keep_blank_values=True):
        if name.startswith("ssl_") and parts.scheme != "rediss":
            raise ConfigError(f"Redis URL {redact(url)}: {name} needs a rediss:// (TLS) URL")
        if name in _SETTINGS or name == "max_value_bytes":
            raise ConfigError(
                f"Redis URL {redact(url)}: {name} is a keyword argument of RedisStateAdapter "
                f"(RedisStateAdapter(url, {name}=...)); open_state() takes it in the URL"
            )
    path = unquote(parts.path).strip("/")
    if parts.scheme in ("redis", "rediss") and path and not path.isdigit():
        raise ConfigError(
            f"Redis URL {redact(url)}: the database (after the host) must be an int >= 0, got {path!r}"
        )


class RedisStateAdapter(StateAdapter):
    """State on Redis; ``layout="native"`` (atomic, Cluster-safe) or ``"motia"`` (shares keys with Node)."""

    kind = "redis"

    __slots__ = ("_layout", "_stripes", "_stripes_loop", "_transport", "cluster", "key_prefix", "layout")

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        *,
        key_prefix: str = DEFAULT_PREFIX,
        layout: Literal["native", "motia"] = "native",
        client: Client | None = None,
        cluster: bool = False,
        socket_timeout: float = 5.0,
        connect_timeout: float = 2.0,
        max_connections: int = 64,
        max_value_bytes: int = codec.DEFAULT_MAX_VALUE_BYTES,
        expiry_margin: float = 60.0,
        read_only: bool = False,
        idle_group_ttl: float | None = None,
        clock: Clock = time.time,
    ) -> None:
        """Describe the store; nothing connects until the first call.

        Args:
            url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS) or
                ``unix:///path/to/socket?db=0``. Ignored when ``client`` is given.
            key_prefix: prefix of every key this adapter writes.
            layout: ``"native"`` or ``"motia"`` (Motia's Node adapter's keys).
            client: an existing ``redis.asyncio`` client; the adapter never closes it.
            cluster: connect with ``RedisCluster`` (native layout only).
            socket_timeout: seconds before a call to an unresponsive server fails with
                ``StoreUnavailableError``.
            connect_timeout: seconds to wait for a connection.
            max_connections: a standalone server gets one connection per adapter, on which
                concurrent calls are pipelined; on a Cluster, what goes through the cluster
                client (redirects, SCAN, SCRIPT LOAD) uses at most this many connections per
                node, and calls wait for a free one (up to ``socket_timeout``).
            idle_group_ttl: seconds after which a group nobody wrote to is removed, whole, by a
                background prune (``prune_idle_groups``, run every ``idle_group_ttl / 2`` seconds,
                at most hourly); ``None`` (default): never.
            max_value_bytes: largest encoded value accepted.
            expiry_margin: native layout: seconds Redis keeps a group whose every item has
                expired past the last expiry, before removing its keys (covers clocks of instances
                that disagree; expired items are invisible to reads meanwhile).
            read_only: refuse every write (``UnsupportedError``).
            clock: time source (seconds since the epoch); expiry is judged by it.
        """
        super().__init__(
            max_value_bytes=max_value_bytes, clock=clock, read_only=read_only, idle_group_ttl=idle_group_ttl
        )
        # Every parameter is checked here, before any I/O (ConfigError is a ValueError too).
        if layout not in ("native", "motia"):
            raise ConfigError(f"layout must be 'native' or 'motia', got {layout!r}")
        if type(key_prefix) is not str:
            raise ConfigError(f"key_prefix must be a str, got {key_prefix!r}")
        options.flag("cluster", cluster)
        if cluster and layout == "motia":
            raise ConfigError("layout='motia' needs a standalone Redis (Motia's adapter scans one server)")
        options.seconds("socket_timeout", socket_timeout, zero=False)
        options.seconds("connect_timeout", connect_timeout, zero=False)
        options.seconds("expiry_margin", expiry_margin)
        options.positive_int("max_connections", max_connections)
        if client is not None and not isinstance(client, aioredis.Redis | RedisCluster):
            raise ConfigError(
                f"client must be a redis.asyncio Redis or RedisCluster, got {type(client).__name__}"
            )
        if client is None:
            _check_url(url)
        self.key_prefix = key_prefix
        self.layout = layout
        self._transport = Transport(
            url,
            owner=self,
            client=client,
            cluster=cluster,
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
            max_connections=max_connections,
        )
        self.cluster = self._transport.cluster
        if self.cluster and layout == "motia":
            raise ConfigError("layout='motia' needs a standalone Redis (Motia's adapter scans one server)")
        self._stripes: tuple[asyncio.Lock, ...] = ()
        self._stripes_loop: asyncio.AbstractEventLoop | None = None
        margin_ms = str(math.ceil(expiry_margin * 1000))
        self._layout: Layout = (
            NativeLayout(self._transport, key_prefix, margin_ms=margin_ms)
            if layout == "native"
            else MotiaLayout(self._transport, key_prefix)
        )

    def __repr__(self) -> str:
        return (
            f"RedisStateAdapter(url={self._transport.safe_url!r}, key_prefix={self.key_prefix!r}, "
            f"layout={self.layout!r})"
        )

    def _check_group(self, group_id: object) -> str:
        return self._layout.check_group(codec.check_name("group_id", group_id))

    async def close(self, *, grace: float = 10.0) -> None:
        """Drain and release the connections (see ``StateAdapter.close``); closing twice is harmless.

        Raises:
            StateError: a cluster adapter (or one with a given client) is closed from an event
                loop other than its own; it stays open, to be closed from its own loop.
        """
        if not self._closed:
            self._transport.begin_close()  # before the adapter counts as closed
        await super().close(grace=grace)

    def _holds_resources(self) -> bool:
        return self._transport.holds_connections

    async def _close(self) -> None:
        await self._transport.close()

    # -- primitives: delegated to the layout --------------------------------------------------

    # _read_row and _write hand back the layout's coroutine instead of awaiting it in one of
    # their own: a burst of pipelined calls keeps fewer objects alive (fewer GC passes).

    def _read_row(self, group_id: str, key: str, now: float) -> Coroutine[Any, Any, Row | None]:
        return self._layout.read_row(group_id, key, now)

    async def _read_rows(self, group_id: str | None, now: float, filters: list[Filter]) -> list[RowEntry]:
        groups = [group_id] if group_id is not None else await self._layout.groups(now)
        rows: list[RowEntry] = []
        for group in groups:
            found = await self._layout.group_rows(group, now)
            rows += [(group, key, row) for key, row in sorted(found.items())]
        return rows

    async def _read_keys(self, group_id: str, now: float) -> list[str]:
        return await self._layout.live_keys(group_id, now)

    async def _read_groups(self, now: float) -> list[str]:
        return await self._layout.groups(now)

    async def _read_batches(self, group_id: str | None, batch_size: int) -> AsyncIterator[list[RowEntry]]:
        """A group's key names first, then its values ``batch_size`` at a time, in key order.

        Memory is bounded by the names of the largest group, not by its values.
        """
        groups = [group_id] if group_id is not None else await self._layout.groups(self._clock())
        for group in groups:
            keys = sorted(await self._layout.group_keys(group))
            for start in range(0, len(keys), batch_size):
                rows = await self._layout.rows_of(group, keys[start : start + batch_size], self._clock())
                if rows:
                    yield [(group, key, row) for key, row in rows]

    def _write(self, write: Write, now: float) -> Coroutine[Any, Any, WriteResult]:
        if write.kind != "update":
            return self._layout.write(write, now)
        return self._update_in_turn(write, now)

    async def _update_in_turn(self, write: Write, now: float) -> WriteResult:
        # Updates of one key from this process take turns (a striped lock), so they do not
        # fight each other's compare-and-set; other processes are handled by the retries.
        async with self._stripe(write):
            return await self._update(write, now)

    def _stripe(self, write: Write) -> asyncio.Lock:
        """The lock updates of ``write``'s key take turns on (locks of the running event loop)."""
        loop = asyncio.get_running_loop()
        if loop is not self._stripes_loop:  # locks of a loop that is gone would refuse this one
            self._stripes = tuple(asyncio.Lock() for _ in range(_STRIPES))
            self._stripes_loop = loop
        return self._stripes[hash((write.group_id, write.key)) % _STRIPES]

    async def _update(self, write: Write, now: float) -> tuple[Plan, Row | None]:
        for attempt in range(UPDATE_ATTEMPTS):
            current = await self._layout.read_row(write.group_id, write.key, now)
            plan = plan_write(write, current, now)
            assert isinstance(plan, Row)
            if await self._layout.put_if(write.group_id, write.key, current, plan, now):
                return plan, current
            await asyncio.sleep(random.uniform(0, min(0.05, 0.001 * (attempt + 1))))
            now = self._clock()
        raise ConflictError(
            f"update of {write.group_id!r}/{write.key!r} gave up after {UPDATE_ATTEMPTS} conflicting writes"
        )

    async def _clear(self, group_id: str, now: float) -> None:
        await self._layout.clear(group_id)

    async def _store_info(self, now: float) -> StoreInfo:
        """Without reading values; the motia layout keeps no times (and reading would touch keys)."""
        layout = self._layout
        counts: tuple[int, int, int | None, float | None, float | None]
        if isinstance(layout, MotiaLayout):
            counts = *await layout.counts(), None, None, None
        else:
            assert isinstance(layout, NativeLayout)
            counts = await layout.counts(now)
        used = None
        if not self.cluster:  # a Cluster's memory is per node
            memory = await self._transport.command("INFO", "memory", idempotent=True)
            lines = text(memory).splitlines()
            used = next((int(line[12:]) for line in lines if line.startswith("used_memory:")), None)
        items, groups, expired, oldest, newest = counts
        return StoreInfo(self.kind, items, groups, expired, oldest, newest, memory_bytes=used)

    async def _idle_groups(
        self, cutoff: float, prefix: str | None, after: str | None, limit: int, now: float
    ) -> list[IdleGroup]:
        """Native: the default (records hold ``updated_at``). Motia: every idle group at once.

        Motia's keys hold no times: Redis's idle time of each key stands for them (one scan of the
        keyspace for all of them).
        """
        if not isinstance(self._layout, MotiaLayout):
            return await super()._idle_groups(cutoff, prefix, after, limit, now)
        age = now - cutoff
        return [
            IdleGroup(group, count, now - least)
            for group, (count, least) in sorted((await self._layout.idle_times(now)).items())
            if least > age and (after is None or group > after) and in_prefix(group, prefix)
        ]

    async def _prune_groups(self, groups: list[str], cutoff: float, now: float) -> list[IdleGroup]:
        """Native: the default (a transaction per group, checked at commit). Motia: one script per group."""
        layout = self._layout
        if not isinstance(layout, MotiaLayout):
            return await super()._prune_groups(groups, cutoff, now)
        removed: list[IdleGroup] = []
        for group in groups:
            now = self._clock()
            found = await layout.prune_group(group, now - cutoff, now)
            if found is not None:
                removed.append(IdleGroup(group, found[0], now - found[1]))
        return removed

    async def _begin(self) -> TxStore:
        return _RedisTx(self)


class _RedisTx(TxStore):
    """Optimistic: reads are remembered, and the commit script checks them before writing."""

    __slots__ = ("_adapter", "_reads")

    def __init__(self, adapter: RedisStateAdapter) -> None:
        self._adapter = adapter
        self._reads = Reads()

    async def read_row(self, group_id: str, key: str, now: float) -> Row | None:
        row = await self._adapter._layout.read_row(group_id, key, now)
        self._reads.rows.setdefault((group_id, key), row.version if row is not None else None)
        return row

    async def read_rows(self, group_id: str | None, now: float) -> list[RowEntry]:
        layout = self._adapter._layout
        if group_id is not None:
            groups = [group_id]
        else:
            if self._adapter.cluster:
                raise StateError(
                    "list_groups() and items() without a group read every group, in different Redis "
                    "Cluster hash slots, which no commit can check atomically; on a cluster a "
                    "transaction must stay within one group (read across groups outside the "
                    "transaction); nothing was applied"
                )
            groups = await layout.groups(now)
            if self._reads.all_groups is None:
                self._reads.all_groups = groups
        rows: list[RowEntry] = []
        for group in groups:
            found = await layout.group_rows(group, now)
            self._reads.groups.setdefault(group, {key: row.version for key, row in found.items()})
            rows += [(group, key, row) for key, row in sorted(found.items())]
        return rows

    async def commit(self, cleared: set[str], writes: dict[tuple[str, str], Row | None]) -> None:
        await self._adapter._layout.commit(self._reads, cleared, writes, self._adapter._clock())

    async def rollback(self) -> None:
        """Nothing was sent: the writes only lived in the transaction's overlay."""
