"""RedisStateAdapter: the contract on Redis, for several instances sharing one store.

Two layouts:

* ``native`` (default): a group is one hash plus one sorted set of expiries, both under a hash
  tag derived from the group, so every single-group operation is one atomic script that also
  runs on Redis Cluster, and ``get_group``/``keys``/``clear`` cost grows with the group only.
* ``motia``: exactly the keys of Motia's ``@motiadev/adapter-redis-state`` (one string per item,
  ``<prefix><group>:<key>``), so Node and Python instances share state. Versions there identify
  the content (see the README), and it needs a standalone Redis, as Motia's adapter does.

Values are never decoded in Lua; ``update`` reads, computes the new value in Python with the
shared ``ops`` module, and writes back with a compare-and-set script (retried on conflict).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio import BlockingConnectionPool
from redis.asyncio.cluster import RedisCluster
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from .. import codec
from ..base import (
    UNCHANGED,
    Clock,
    Row,
    RowEntry,
    StateAdapter,
    TxStore,
    Write,
    _Unchanged,
    new_version,
    plan_write,
)
from ..errors import ConflictError, InvalidKeyError, StateError, StoreUnavailableError
from ..ops import Filter
from . import scripts

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

__all__ = ["DEFAULT_PREFIX", "RedisStateAdapter"]

DEFAULT_PREFIX: Final = "motia:state:"
T = TypeVar("T")
Client = aioredis.Redis | RedisCluster
_GLOB = str.maketrans({c: "\\" + c for c in "*?[]\\"})
#: update retries its compare-and-set this many times under contention before ConflictError.
UPDATE_ATTEMPTS: Final = 200


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _glob(text: str) -> str:
    """Escape glob characters so SCAN MATCH takes ``text`` literally."""
    return text.translate(_GLOB)


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for repr, logs and messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


class RedisStateAdapter(StateAdapter):
    """State on Redis; ``layout="native"`` (atomic, Cluster-safe) or ``"motia"`` (shares keys with Node)."""

    __slots__ = (
        "_client",
        "_layout",
        "_owns_client",
        "_safe_url",
        "_scripts",
        "_stripes",
        "cluster",
        "key_prefix",
        "layout",
    )

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
            max_connections: connections to Redis at most; more concurrent calls wait for a free
                one (up to ``socket_timeout``) instead of failing.
            max_value_bytes: largest encoded value accepted.
            clock: time source (seconds since the epoch); expiry is judged by it.
        """
        super().__init__(max_value_bytes=max_value_bytes, clock=clock)
        if layout not in ("native", "motia"):
            raise ValueError(f"layout must be 'native' or 'motia', got {layout!r}")
        if type(key_prefix) is not str:
            raise ValueError(f"key_prefix must be a str, got {key_prefix!r}")
        self.key_prefix = key_prefix
        self.layout = layout
        self._owns_client = client is None
        if client is None:
            options: dict[str, Any] = {
                "socket_timeout": socket_timeout,
                "socket_connect_timeout": connect_timeout,
                # No silent retries: a write whose reply was lost may have landed, and a retried
                # compare-and-set could apply an update twice. Reads retry once, below.
                "retry": Retry(NoBackoff(), 0),
            }
            if type(max_connections) is not int or max_connections <= 0:
                raise ValueError(f"max_connections must be a positive int, got {max_connections!r}")
            if cluster:
                client = RedisCluster.from_url(url, max_connections=max_connections, **options)
            else:
                # A blocking pool: a burst of calls queues for a connection instead of failing.
                pool = BlockingConnectionPool.from_url(
                    url, max_connections=max_connections, timeout=socket_timeout, **options
                )
                client = aioredis.Redis.from_pool(pool)
            self._safe_url = redact(url)
        else:
            self._safe_url = f"<{type(client).__name__} given by the caller>"
        self.cluster = isinstance(client, RedisCluster)
        if self.cluster and layout == "motia":
            raise ValueError("layout='motia' needs a standalone Redis (Motia's adapter scans one server)")
        self._client: Client = client
        self._scripts: dict[str, AsyncScript] = {}
        self._stripes = tuple(asyncio.Lock() for _ in range(64))
        self._layout: _Native | _Motia = _Native(self) if layout == "native" else _Motia(self)

    def __repr__(self) -> str:
        return (
            f"RedisStateAdapter(url={self._safe_url!r}, key_prefix={self.key_prefix!r}, "
            f"layout={self.layout!r})"
        )

    def _check_group(self, group_id: object) -> str:
        group = codec.check_name("group_id", group_id)
        if self.layout == "motia" and ":" in group:
            raise InvalidKeyError(
                f"group_id {group!r} holds ':', which Motia's Redis layout cannot tell apart from the "
                "key; use layout='native' for such groups"
            )
        return group

    # -- calls --------------------------------------------------------------------------------

    def _script(self, source: str) -> AsyncScript:
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self._client.register_script(source)
        return script

    def _unavailable(self, exc: BaseException) -> StoreUnavailableError:
        return StoreUnavailableError(f"Redis at {self._safe_url} is unavailable: {type(exc).__name__}: {exc}")

    async def _call(self, make: Callable[[], Awaitable[T]], *, idempotent: bool) -> T:
        """Run one request, mapping driver errors; idempotent reads get one retry on a dead connection."""
        for attempt in range(2 if idempotent else 1):
            try:
                return await make()
            except (rexc.ConnectionError, rexc.TimeoutError, OSError) as exc:
                if attempt == 0 and idempotent and not isinstance(exc, rexc.TimeoutError):
                    continue
                raise self._unavailable(exc) from None
            except rexc.ResponseError as exc:
                if "CROSSSLOT" in str(exc):
                    raise StateError(
                        "this transaction spans groups in different Redis Cluster hash slots; on a "
                        "cluster a transaction must stay within one group"
                    ) from None
                raise StateError(f"Redis at {self._safe_url} refused the request: {exc}") from None
        raise AssertionError("unreachable")

    async def _run(self, source: str, keys: list[str], args: list[Any], *, idempotent: bool = False) -> Any:
        script = self._script(source)
        return await self._call(lambda: script(keys=keys, args=args), idempotent=idempotent)

    async def _close(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    # -- primitives: delegated to the layout --------------------------------------------------

    async def _read_row(self, group_id: str, key: str, now: float) -> Row | None:
        return await self._layout.read_row(group_id, key, now)

    async def _read_rows(self, group_id: str | None, now: float, filters: list[Filter]) -> list[RowEntry]:
        groups = [group_id] if group_id is not None else await self._layout.groups(now)
        rows: list[RowEntry] = []
        for group in groups:
            found = await self._layout.group_rows(group, now)
            rows += [(group, key, row) for key, row in sorted(found.items())]
        return rows

    async def _read_groups(self, now: float) -> list[str]:
        return await self._layout.groups(now)

    async def _write(self, write: Write, now: float) -> tuple[Row | None | _Unchanged, Row | None]:
        if write.kind != "update":
            return await self._layout.write(write, now)
        # Updates of one key from this process take turns (a striped lock), so they do not
        # fight each other's compare-and-set; other processes are handled by the retries.
        async with self._stripes[hash((write.group_id, write.key)) % len(self._stripes)]:
            return await self._update(write, now)

    async def _update(self, write: Write, now: float) -> tuple[Row | None | _Unchanged, Row | None]:
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

    async def _begin(self) -> TxStore:
        return _RedisTx(self)


class _Native:
    __slots__ = ("_adapter",)

    def __init__(self, adapter: RedisStateAdapter) -> None:
        self._adapter = adapter

    def keys(self, group_id: str) -> tuple[str, str]:
        tag = hashlib.sha1(group_id.encode()).hexdigest()[:16]
        base = f"{self._adapter.key_prefix}{{{tag}}}"
        return f"{base}:d:{group_id}", f"{base}:e:{group_id}"

    def group_of(self, name: str) -> str | None:
        """The group a data-hash key belongs to, or None for keys that are not ours."""
        prefix = self._adapter.key_prefix
        head = len(prefix) + 18  # "{" + 16 hex + "}"
        if not name.startswith(prefix) or name[head : head + 3] != ":d:":
            return None
        group = name[head + 3 :]
        return group if group and self.keys(group)[0] == name else None

    @staticmethod
    def parse(record: Any) -> Row:
        version, created, updated, expires, text = _text(record).split("|", 4)
        return Row(text, int(version), float(created), float(updated), float(expires) if expires else None)

    async def read_row(self, group_id: str, key: str, now: float) -> Row | None:
        data, _ = self.keys(group_id)
        client = self._adapter._client
        record = await self._adapter._call(lambda: client.hget(data, key), idempotent=True)
        if record is None:
            return None
        row = self.parse(record)
        return row if row.live(now) else None

    async def group_rows(self, group_id: str, now: float) -> dict[str, Row]:
        data, _ = self.keys(group_id)
        client = self._adapter._client
        found = await self._adapter._call(lambda: client.hgetall(data), idempotent=True)
        rows = {_text(key): self.parse(record) for key, record in found.items()}
        return {key: row for key, row in rows.items() if row.live(now)}

    async def groups(self, now: float) -> list[str]:
        client = self._adapter._client
        pattern = _glob(self._adapter.key_prefix) + "{*}:d:*"

        async def scan() -> list[str]:
            return [_text(name) async for name in client.scan_iter(match=pattern, count=1000)]

        groups = sorted(
            {g for name in await self._adapter._call(scan, idempotent=True) if (g := self.group_of(name))}
        )
        live: list[str] = []
        for group in groups:  # one small script per group: each group is its own hash slot
            counts = await self._adapter._run(
                scripts.NATIVE_LIVE_COUNTS, list(self.keys(group)), [repr(now)], idempotent=True
            )
            if counts[0] > 0:
                live.append(group)
        return live

    async def write(self, write: Write, now: float) -> tuple[Row | None | _Unchanged, Row | None]:
        condition = _condition(write, str)
        tail, expires = "", ""
        if write.kind == "set":
            assert write.encoded is not None
            expires = repr(now + write.ttl) if write.ttl is not None else ""
            tail = f"{now!r}|{expires}|{write.encoded}"
        reply = await self._adapter._run(
            scripts.NATIVE_WRITE,
            list(self.keys(write.group_id)),
            [write.key, condition, repr(now), tail, str(new_version(None)), expires],
        )
        current = self.parse(reply[1]) if reply[1] is not None else None
        if reply[0] == 0:
            plan_write(write, current, now)  # raises the ConflictError with its message
            raise ConflictError(f"{write.kind} of {write.group_id!r}/{write.key!r}: condition failed")
        if write.kind == "delete":
            return (UNCHANGED if current is None else None), current
        return self.parse(reply[2]), current

    async def put_if(self, group_id: str, key: str, current: Row | None, new: Row, now: float) -> bool:
        condition = f"={current.version if current is not None else ''}"
        expires = repr(new.expires_at) if new.expires_at is not None else ""
        reply = await self._adapter._run(
            scripts.NATIVE_WRITE,
            list(self.keys(group_id)),
            [
                key,
                condition,
                repr(now),
                f"{new.updated_at!r}|{expires}|{new.value}",
                str(new.version),
                expires,
            ],
        )
        return bool(reply[0] == 1)

    async def clear(self, group_id: str) -> None:
        client = self._adapter._client
        keys = self.keys(group_id)
        await self._adapter._call(lambda: client.delete(*keys), idempotent=True)

    def record(self, row: Row) -> str:
        expires = repr(row.expires_at) if row.expires_at is not None else ""
        return f"{row.version}|{row.created_at!r}|{row.updated_at!r}|{expires}|{row.value}"


def _condition(write: Write, version: Callable[[int], str]) -> str:
    """The write scripts' condition argument: '' (none), 'absent', or '=' and the version as stored."""
    if write.if_absent:
        return "absent"
    if write.if_version is not None:
        return f"={version(write.if_version)}"
    return ""


def _motia_version(text: str) -> int:
    return int(hashlib.sha1(text.encode()).hexdigest()[:13], 16)


class _Motia:
    __slots__ = ("_adapter",)

    def __init__(self, adapter: RedisStateAdapter) -> None:
        self._adapter = adapter

    def key(self, group_id: str, key: str) -> str:
        return f"{self._adapter.key_prefix}{group_id}:{key}"

    def pattern(self, group_id: str) -> str:
        return _glob(f"{self._adapter.key_prefix}{group_id}:") + "*"

    @staticmethod
    def row(value: Any, expire_ms: int) -> Row:
        text = _text(value)
        expires = expire_ms / 1000 if expire_ms > 0 else None
        return Row(text, _motia_version(text), None, None, expires)

    async def read_row(self, group_id: str, key: str, now: float) -> Row | None:
        value, at = await self._adapter._run(
            scripts.MOTIA_GET, [self.key(group_id, key)], [int(now * 1000)], idempotent=True
        )
        return None if value is None else self.row(value, at)

    async def _scan(self, pattern: str) -> list[bytes]:
        client = self._adapter._client

        async def scan() -> list[bytes]:
            return [name async for name in client.scan_iter(match=pattern, count=1000)]

        return await self._adapter._call(scan, idempotent=True)

    async def _fetch(self, names: list[bytes], now: float) -> list[tuple[bytes, Row]]:
        """Values and expiries of ``names`` in one round trip; expired or vanished ones left out."""
        if not names:
            return []
        client = self._adapter._client

        async def fetch() -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for name in names:
                pipe.get(name)
                pipe.pexpiretime(name)  # type: ignore[arg-type]  # keys are bytes: binary-safe
            return list(await pipe.execute())

        replies = await self._adapter._call(fetch, idempotent=True)
        now_ms = now * 1000
        found = []
        for index, name in enumerate(names):
            value, at = replies[2 * index], replies[2 * index + 1]
            if value is not None and not (0 < at <= now_ms):
                found.append((name, self.row(value, at)))
        return found

    async def group_rows(self, group_id: str, now: float) -> dict[str, Row]:
        head = len(self.key(group_id, "").encode())
        rows = await self._fetch(await self._scan(self.pattern(group_id)), now)
        return {name[head:].decode(): row for name, row in rows}

    async def groups(self, now: float) -> list[str]:
        prefix = self._adapter.key_prefix.encode()
        names = [
            n for n in await self._scan(_glob(self._adapter.key_prefix) + "*") if b":" in n[len(prefix) :]
        ]
        groups = set()
        for name, _ in await self._fetch(names, now):
            group = name[len(prefix) :].split(b":", 1)[0].decode()
            if group:
                groups.add(group)
        return sorted(groups)

    async def write(self, write: Write, now: float) -> tuple[Row | None | _Unchanged, Row | None]:
        condition = _condition(write, "{:013x}".format)
        value, at = "", ""
        if write.kind == "set":
            assert write.encoded is not None
            value = write.encoded
            at = str(round((now + write.ttl) * 1000)) if write.ttl is not None else ""
        ok, old = await self._adapter._run(
            scripts.MOTIA_WRITE,
            [self.key(write.group_id, write.key)],
            [condition, int(now * 1000), value, at, "0"],
        )
        current = self.row(old, -1) if old is not None else None
        if ok == 0:
            plan_write(write, current, now)  # raises the ConflictError with its message
            raise ConflictError(f"{write.kind} of {write.group_id!r}/{write.key!r}: condition failed")
        if write.kind == "delete":
            return (UNCHANGED if current is None else None), current
        expires = int(at) / 1000 if at else None
        return Row(value, _motia_version(value), None, None, expires), current

    async def put_if(self, group_id: str, key: str, current: Row | None, new: Row, now: float) -> bool:
        condition = f"={current.version:013x}" if current is not None else "="
        ok, _ = await self._adapter._run(
            scripts.MOTIA_WRITE, [self.key(group_id, key)], [condition, int(now * 1000), new.value, "", "1"]
        )
        return bool(ok == 1)

    async def clear(self, group_id: str) -> None:
        await self._adapter._run(scripts.MOTIA_CLEAR, [], [self.pattern(group_id)])


class _RedisTx(TxStore):
    """Optimistic: reads are remembered, and the commit script checks them before writing."""

    __slots__ = ("_adapter", "_group_reads", "_row_reads")

    def __init__(self, adapter: RedisStateAdapter) -> None:
        self._adapter = adapter
        self._row_reads: dict[tuple[str, str], int | None] = {}
        self._group_reads: dict[str, dict[str, int | None]] = {}

    async def read_row(self, group_id: str, key: str, now: float) -> Row | None:
        row = await self._adapter._layout.read_row(group_id, key, now)
        self._row_reads.setdefault((group_id, key), row.version if row is not None else None)
        return row

    async def read_rows(self, group_id: str | None, now: float) -> list[RowEntry]:
        layout = self._adapter._layout
        groups = [group_id] if group_id is not None else await layout.groups(now)
        rows: list[RowEntry] = []
        for group in groups:
            found = await layout.group_rows(group, now)
            self._group_reads.setdefault(group, {key: row.version for key, row in found.items()})
            rows += [(group, key, row) for key, row in sorted(found.items())]
        return rows

    async def commit(self, cleared: set[str], writes: dict[tuple[str, str], Row | None]) -> None:
        if self._adapter.layout == "native":
            reply = await self._commit_native(cleared, writes)
        else:
            reply = await self._commit_motia(cleared, writes)
        if reply != 1:
            raise ConflictError(
                f"transaction not committed: a concurrent write changed what it read ({_text(reply[1])}); "
                "nothing of it was applied"
            )

    async def _commit_native(self, cleared: set[str], writes: dict[tuple[str, str], Row | None]) -> Any:
        layout = self._adapter._layout
        assert isinstance(layout, _Native)
        index: dict[str, int] = {}
        keys: list[str] = []

        def group(name: str) -> int:
            if name not in index:
                index[name] = len(index) + 1
                keys.extend(layout.keys(name))
            return index[name]

        args: list[Any] = [repr(self._adapter._clock())]
        args.append(len(self._row_reads))
        for (g, k), version in self._row_reads.items():
            args += [group(g), k, "" if version is None else version]
        args.append(len(self._group_reads))
        for g, seen in self._group_reads.items():
            args += [group(g), len(seen)]
            for k, version in seen.items():
                args += [k, version]
        args.append(len(cleared))
        args += [group(g) for g in sorted(cleared)]
        args.append(len(writes))
        for (g, k), row in writes.items():
            if row is None:
                args += [group(g), k, "", ""]
            else:
                args += [
                    group(g),
                    k,
                    layout.record(row),
                    repr(row.expires_at) if row.expires_at is not None else "",
                ]
        if not keys:
            return 1
        if self._adapter.cluster and len({key_slot(name.encode()) for name in keys}) > 1:
            raise StateError(
                f"this transaction spans groups in different Redis Cluster hash slots ({sorted(index)}); "
                "on a cluster a transaction must stay within one group; nothing was applied"
            )
        return await self._adapter._run(scripts.NATIVE_COMMIT, keys, args)

    async def _commit_motia(self, cleared: set[str], writes: dict[tuple[str, str], Row | None]) -> Any:
        layout = self._adapter._layout
        assert isinstance(layout, _Motia)
        index: dict[str, int] = {}

        def key(g: str, k: str) -> int:
            name = layout.key(g, k)
            if name not in index:
                index[name] = len(index) + 1
            return index[name]

        args: list[Any] = [int(self._adapter._clock() * 1000)]
        args.append(len(self._row_reads))
        for (g, k), version in self._row_reads.items():
            args += [key(g, k), "" if version is None else f"{version:013x}"]
        args.append(len(self._group_reads))
        for g, seen in self._group_reads.items():
            args += [layout.pattern(g), len(seen)]
            for k, version in seen.items():
                args += [key(g, k), f"{version:013x}"]
        args.append(len(cleared))
        args += [layout.pattern(g) for g in sorted(cleared)]
        args.append(len(writes))
        for (g, k), row in writes.items():
            if row is None:
                args += [key(g, k), "", "", "0"]
            else:
                at = str(round(row.expires_at * 1000)) if row.expires_at is not None else ""
                args += [key(g, k), row.value, at, "0"]
        return await self._adapter._run(scripts.MOTIA_COMMIT, list(index), args)

    async def rollback(self) -> None:
        """Nothing was sent: the writes only lived in the transaction's overlay."""
