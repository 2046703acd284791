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
import contextlib
import hashlib
import math
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any, Final, Literal, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

import orjson
import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from .. import codec, options
from ..base import StateAdapter, TxStore
from ..errors import (
    ConfigError,
    ConflictError,
    InvalidValueError,
    SchemaError,
    StateError,
    StoreUnavailableError,
)
from ..ops import Filter
from ..rows import (
    UNCHANGED,
    Clock,
    Plan,
    Row,
    RowEntry,
    Write,
    WriteResult,
    new_version,
    plan_write,
)
from . import scripts

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


_QUERY_SECRET = re.compile(r"(?i)(^|[&;])([^=&;]*pass[^=&;]*)=([^&;]*)")


def redact(url: str) -> str:
    """``url`` with every password replaced by ``***`` (for repr, logs and messages).

    Covers the userinfo password (``redis://user:pw@host``) and query parameters naming one
    (``?password=pw``, ``ssl_password``), which redis-py accepts too. A URL without a password
    comes back as it was given (any scheme: the CLI shows every URL through this).
    """
    parts = urlsplit(url)
    secret = parts._replace(query=_QUERY_SECRET.sub(r"\1\2=***", parts.query))
    if parts.password is not None:
        # The netloc's text after "@" is kept as written (parts.port would raise for a bad port).
        user = parts.username or ""
        secret = secret._replace(netloc=f"{user}:***@{parts.netloc.rpartition('@')[2]}")
    return url if secret == parts else urlunsplit(secret)


def _pack(args: tuple[Any, ...]) -> bytes:
    """A command in the Redis protocol (RESP): an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if type(arg) is str else arg if type(arg) is bytes else str(arg).encode()
        parts += (b"$%d\r\n" % len(data), data, b"\r\n")
    return b"".join(parts)


#: The adapter's settings: keyword arguments of the constructor, never redis-py URL parameters.
_SETTINGS: Final = ("key_prefix", "layout", "cluster", "socket_timeout", "connect_timeout", "max_connections")


def _check_numbers(kwargs: dict[str, Any]) -> None:
    """Refuse numbers redis-py parsed from the URL (``db``, timeouts, intervals) that are < 0 or NaN."""
    for name, value in kwargs.items():
        if type(value) in (int, float) and not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"Redis URL parameter {name} must be a finite number >= 0, got {value!r}")


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


def _discard(conn: AbstractConnection) -> None:
    """Close a connection of an event loop that is gone, running nothing on that loop.

    ``disconnect()`` would await on the old loop, and ``transport.abort()`` schedules the
    socket's close there, which raises once that loop is closed; then the close it would have
    scheduled runs here instead (asyncio has no public call for this). Either way redis-py sees a
    disconnected connection and nothing warns about an unclosed socket.
    """
    writer = conn._writer
    conn._reader = conn._writer = None
    if writer is None:
        return
    transport = writer.transport
    try:
        transport.abort()  # its loop is open: the socket closes when that loop next runs
    except RuntimeError:  # its loop is closed
        getattr(transport, "_call_connection_lost")(None)  # noqa: B009 - a private asyncio call


def _secrets(url: str) -> tuple[str, ...]:
    """The passwords in ``url`` (as written and decoded), to scrub from driver messages."""
    parts = urlsplit(url)
    found = [parts.password or ""] + [m.group(3) for m in _QUERY_SECRET.finditer(parts.query)]
    every = {variant for text in found for variant in (text, unquote(text)) if text}
    return tuple(sorted(every, key=len, reverse=True))


class RedisStateAdapter(StateAdapter):
    """State on Redis; ``layout="native"`` (atomic, Cluster-safe) or ``"motia"`` (shares keys with Node)."""

    __slots__ = (
        "_client",
        "_connection",
        "_gate",
        "_idle",
        "_layout",
        "_loop",
        "_margin_ms",
        "_max_connections",
        "_owns_client",
        "_safe_url",
        "_scripts",
        "_secrets",
        "_socket_timeout",
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
        expiry_margin: float = 60.0,
        read_only: bool = False,
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
            expiry_margin: native layout: seconds Redis keeps a group whose every item has
                expired past the last expiry, before removing its keys (covers clocks of instances
                that disagree; expired items are invisible to reads meanwhile).
            read_only: refuse every write (``UnsupportedError``).
            clock: time source (seconds since the epoch); expiry is judged by it.
        """
        super().__init__(max_value_bytes=max_value_bytes, clock=clock, read_only=read_only)
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
        self._margin_ms = str(math.ceil(expiry_margin * 1000))
        self._owns_client = client is None
        self._gate: asyncio.Semaphore | None = None
        self._max_connections = max_connections
        #: The event loop the connections belong to (see _follow_loop).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: list[AbstractConnection] | None = None  # None: calls go through the client
        self._connection: Callable[[], AbstractConnection] | None = None
        self._socket_timeout: float | None = socket_timeout
        self._secrets: tuple[str, ...] = ()
        if client is None:
            client_options: dict[str, Any] = {
                "socket_timeout": socket_timeout,
                "socket_connect_timeout": connect_timeout,
                # No silent retries: a write whose reply was lost may have landed, and a retried
                # compare-and-set could apply an update twice. Reads retry once, below.
                "retry": Retry(NoBackoff(), 0),
                "max_connections": max_connections,
            }
            self._safe_url = redact(url)
            self._secrets = _secrets(url)
            try:
                if cluster:
                    client = RedisCluster.from_url(url, **client_options)
                else:
                    client = aioredis.Redis.from_url(url, **client_options)
                    # Standalone: our own connections, made as the client's pool makes them (TLS,
                    # unix socket, auth, db), but without redis-py's per-call timeout task: each
                    # call runs under one asyncio.timeout instead (see _direct).
                    pool = client.connection_pool
                    kwargs = {**pool.connection_kwargs, "socket_timeout": None}
                    self._connection = partial(pool.connection_class, **kwargs)
                    self._connection()  # an unknown URL parameter fails here, not at the first call
                    self._idle = []
                    _check_numbers(pool.connection_kwargs)
            except (ValueError, TypeError, rexc.RedisError) as exc:
                raise ConfigError(f"Redis URL {self._safe_url}: {self._scrub(str(exc))}") from None
            # Calls queue here for a connection, so a burst waits instead of failing with "too
            # many connections" (each call holds at most one connection at a time).
            self._gate = asyncio.Semaphore(max_connections)
        else:
            self._safe_url = f"<{type(client).__name__} given by the caller>"
        self.cluster = isinstance(client, RedisCluster)
        if self.cluster and layout == "motia":
            raise ConfigError("layout='motia' needs a standalone Redis (Motia's adapter scans one server)")
        self._client: Client = client
        self._scripts: dict[str, str] = {}  # Lua source -> SHA-1
        self._stripes = tuple(asyncio.Lock() for _ in range(64))
        self._layout: _Native | _Motia = _Native(self) if layout == "native" else _Motia(self)

    def __repr__(self) -> str:
        return (
            f"RedisStateAdapter(url={self._safe_url!r}, key_prefix={self.key_prefix!r}, "
            f"layout={self.layout!r})"
        )

    def _check_group(self, group_id: object) -> str:
        group = codec.check_name("group_id", group_id)
        if self.layout != "motia":
            return group
        return codec.check_motia_group(group, "Motia's Redis layout", "use layout='native' for such groups")

    # -- calls --------------------------------------------------------------------------------

    def _sha(self, source: str) -> str:
        sha = self._scripts.get(source)
        if sha is None:
            sha = self._scripts[source] = hashlib.sha1(source.encode()).hexdigest()
        return sha

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _unavailable(self, exc: BaseException) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"Redis at {self._safe_url} is unavailable: {type(exc).__name__}: {self._scrub(str(exc))}"
        )

    def _refused(self, exc: rexc.ResponseError) -> StateError:
        text = self._scrub(str(exc))
        if "CROSSSLOT" in text:
            return StateError(
                "this transaction spans groups in different Redis Cluster hash slots; on a "
                "cluster a transaction must stay within one group"
            )
        if text.startswith(("CLUSTERDOWN", "MASTERDOWN", "TRYAGAIN", "LOADING")):
            return self._unavailable(exc)
        if text.startswith(("WRONGTYPE", "BADRECORD")):
            found = re.search(r"key:([0-9a-f]*)", text)
            name = repr(bytes.fromhex(found.group(1)).decode(errors="backslashreplace")) if found else "a key"
            return SchemaError(
                f"Redis at {self._safe_url}: {name} under key_prefix {self.key_prefix!r} holds data "
                f"that layout={self.layout!r} cannot read: probably the other layout's (native and "
                "motia keep different kinds of keys) or another tool's. Give each layout its own "
                "key_prefix."
            )
        return StateError(f"Redis at {self._safe_url} refused the request: {text}")

    def _follow_loop(self) -> None:
        """Move to the running event loop when it is not the one the connections belong to.

        A second ``asyncio.run`` (pytest users make a loop per test) finds connections, locks and
        the semaphore of a loop that is gone. They are replaced; the old connections are closed
        without awaiting anything on their loop (see ``_discard``). One loop at a time: calls from
        two loops running at once are not supported. A client that redis-py pools (a cluster's,
        or one given by the caller) cannot move: that raises ``StateError`` instead.

        Raises:
            StateError: the adapter's client is redis-py's own and belongs to another loop.
        """
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return
        if self._loop is not None:
            if self._idle is None:
                raise StateError(
                    f"{self!r} was used from another event loop, and its "
                    f"{type(self._client).__name__} client's connections belong to that loop: use "
                    "and close an adapter with a Redis Cluster, or with a client you gave, within "
                    "one event loop (make one adapter per asyncio.run)"
                )
            old, self._idle = self._idle, []
            for conn in old:
                _discard(conn)
            if self._gate is not None:
                self._gate = asyncio.Semaphore(self._max_connections)
            self._stripes = tuple(asyncio.Lock() for _ in self._stripes)
        self._loop = loop

    async def _call(self, make: Callable[[], Awaitable[T]], *, idempotent: bool) -> T:
        """Run one request, mapping driver errors; idempotent reads get one retry on a dead connection."""
        self._follow_loop()
        gate = self._gate
        if gate is not None:
            if gate.locked():
                await self._queue(gate)
            else:
                await gate.acquire()  # free: returns at once
        try:
            for attempt in range(2 if idempotent else 1):
                try:
                    return await make()
                except (rexc.ConnectionError, rexc.TimeoutError, OSError) as exc:
                    if attempt == 0 and idempotent and not isinstance(exc, rexc.TimeoutError):
                        continue
                    raise self._unavailable(exc) from None
                except (rexc.RedisClusterException, rexc.ClusterError, rexc.TryAgainError) as exc:
                    if "same key slot" in str(exc):  # refused by the client before sending
                        raise self._refused(rexc.ResponseError(f"CROSSSLOT {exc}")) from None
                    if "No way to dispatch" in str(exc) or "Invalid args" in str(exc):
                        raise self._refused(rexc.ResponseError(str(exc))) from None
                    # no reachable node, CLUSTERDOWN, MASTERDOWN, slots not covered: an outage
                    raise self._unavailable(exc) from None
                except rexc.NoScriptError:
                    raise
                except rexc.ResponseError as exc:
                    raise self._refused(exc) from None
            raise AssertionError("unreachable")
        finally:
            if gate is not None:
                gate.release()

    async def _queue(self, gate: asyncio.Semaphore) -> None:
        """Wait for a free connection, up to ``socket_timeout``."""
        try:
            async with asyncio.timeout(self._socket_timeout):
                await gate.acquire()
        except TimeoutError:
            raise StoreUnavailableError(
                f"Redis at {self._safe_url}: no free connection within {self._socket_timeout} s "
                "(every one of max_connections is busy)"
            ) from None

    async def _command(self, *args: Any, idempotent: bool) -> Any:
        """Send one command and return its raw reply (``HGETALL``: a flat list or a dict)."""
        if self._idle is None:
            client = self._client
            return await self._call(lambda: client.execute_command(*args), idempotent=idempotent)
        return await self._call(lambda: self._direct(args), idempotent=idempotent)

    async def _direct(self, args: tuple[Any, ...]) -> Any:
        """One command on one of our own standalone connections, within ``socket_timeout``.

        redis-py's connection disconnects itself when a send or read fails or is cancelled, so a
        connection goes back to the idle list either in step or closed (it reconnects on use).
        """
        idle, make = self._idle, self._connection
        assert idle is not None
        assert make is not None
        conn = idle.pop() if idle else make()
        try:
            if not conn.is_connected:
                await conn.connect()  # type: ignore[no-untyped-call]
            elif await conn.can_read():  # closed by the server while idle (or out of step): afresh
                await conn.disconnect()
                await conn.connect()  # type: ignore[no-untyped-call]
            try:
                async with asyncio.timeout(self._socket_timeout):
                    await conn.send_packed_command(_pack(args), check_health=False)
                    return await conn.read_response()
            except TimeoutError:
                raise rexc.TimeoutError(f"no reply within socket_timeout={self._socket_timeout} s") from None
        finally:
            if self._closed:
                await conn.disconnect()
            else:
                idle.append(conn)

    async def _run(self, source: str, keys: list[str], args: list[Any], *, idempotent: bool = False) -> Any:
        """Run a script by its SHA-1 (EVALSHA), loading it first on a server that lacks it."""
        sha = self._sha(source)
        try:
            return await self._command("EVALSHA", sha, len(keys), *keys, *args, idempotent=idempotent)
        except rexc.NoScriptError:  # the script did not run: safe to run again, even a write
            if self._idle is None:
                client = self._client  # a cluster loads it on every primary
                await self._call(lambda: client.script_load(source), idempotent=True)
            else:
                await self._command("SCRIPT", "LOAD", source, idempotent=True)
            return await self._command("EVALSHA", sha, len(keys), *keys, *args, idempotent=idempotent)

    async def close(self, *, grace: float = 10.0) -> None:
        """Drain and release the connections (see ``StateAdapter.close``); closing twice is harmless.

        Raises:
            StateError: a cluster adapter (or one with a given client) is closed from an event
                loop other than its own; it stays open, to be closed from its own loop.
        """
        if not self._closed:
            self._follow_loop()  # before the adapter counts as closed
        await super().close(grace=grace)

    def _holds_resources(self) -> bool:
        return bool(self._idle)

    async def _close(self) -> None:
        if self._idle is not None:
            idle, self._idle = self._idle, []
            for conn in idle:
                await conn.disconnect()
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

    async def _read_keys(self, group_id: str, now: float) -> list[str]:
        if isinstance(self._layout, _Motia):
            return sorted(await self._layout.group_rows(group_id, now, names_only=True))
        return await super()._read_keys(group_id, now)

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

    async def _write(self, write: Write, now: float) -> WriteResult:
        if write.kind != "update":
            return await self._layout.write(write, now)
        self._follow_loop()  # before taking a stripe lock of another loop
        # Updates of one key from this process take turns (a striped lock), so they do not
        # fight each other's compare-and-set; other processes are handled by the retries.
        async with self._stripes[hash((write.group_id, write.key)) % len(self._stripes)]:
            return await self._update(write, now)

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

    async def _begin(self) -> TxStore:
        return _RedisTx(self)


class _Native:
    __slots__ = ("_adapter", "_names")

    def __init__(self, adapter: RedisStateAdapter) -> None:
        self._adapter = adapter
        self._names: dict[str, list[str]] = {}

    def keys(self, group_id: str) -> list[str]:
        """The group's data hash and expiry set (a fresh list: scripts take it as KEYS)."""
        names = self._names.get(group_id)
        if names is None:
            tag = hashlib.sha1(group_id.encode()).hexdigest()[:16]
            base = f"{self._adapter.key_prefix}{{{tag}}}"
            names = [f"{base}:d:{group_id}", f"{base}:e:{group_id}"]
            if len(self._names) >= 4096:
                self._names.clear()
            self._names[group_id] = names
        return names.copy()

    def group_of(self, name: str) -> str | None:
        """The group a data-hash key belongs to, or None for keys that are not ours."""
        prefix = self._adapter.key_prefix
        head = len(prefix) + 18  # "{" + 16 hex + "}"
        if not name.startswith(prefix) or name[head : head + 3] != ":d:":
            return None
        group = name[head + 3 :]
        return group if group and self.keys(group)[0] == name else None

    @staticmethod
    def parse(record: Any, group_id: str, key: str) -> Row:
        try:
            version, created, updated, expires, text = _text(record).split("|", 4)
            return Row(
                text, int(version), float(created), float(updated), float(expires) if expires else None
            )
        except ValueError:
            raise SchemaError(
                f"Redis native layout: item {group_id!r}/{key!r} holds {_text(record)[:60]!r}, which is "
                "not a record of this package (another tool wrote into our keys?)"
            ) from None

    async def reclaim(self, group_id: str, now: float) -> None:
        """Drop the group's expired fields now (reads call it when they meet one); best effort."""
        with contextlib.suppress(StoreUnavailableError):
            await self._adapter._run(
                scripts.NATIVE_RECLAIM,
                self.keys(group_id),
                [repr(now), self._adapter._margin_ms],
                idempotent=True,
            )

    async def read_row(self, group_id: str, key: str, now: float) -> Row | None:
        data = self.keys(group_id)[0]
        record = await self._adapter._command("HGET", data, key, idempotent=True)
        if record is None:
            return None
        row = self.parse(record, group_id, key)
        if row.live(now):
            return row
        await self.reclaim(group_id, now)
        return None

    async def group_rows(self, group_id: str, now: float) -> dict[str, Row]:
        data = self.keys(group_id)[0]
        found = await self._adapter._command("HGETALL", data, idempotent=True)
        pairs = found.items() if isinstance(found, dict) else zip(found[::2], found[1::2], strict=True)
        rows: dict[str, Row] = {}
        expired = False
        for field, record in pairs:
            key = _text(field)
            row = self.parse(record, group_id, key)
            if row.live(now):
                rows[key] = row
            else:
                expired = True
        if expired:
            await self.reclaim(group_id, now)
        return rows

    async def group_keys(self, group_id: str) -> list[str]:
        """The group's key names, live or not."""
        found = await self._adapter._command("HKEYS", self.keys(group_id)[0], idempotent=True)
        return [_text(key) for key in found]

    async def rows_of(self, group_id: str, keys: list[str], now: float) -> list[tuple[str, Row]]:
        """The live rows of ``keys`` (in that order) in one command."""
        records = await self._adapter._command("HMGET", self.keys(group_id)[0], *keys, idempotent=True)
        rows = [
            (key, self.parse(record, group_id, key))
            for key, record in zip(keys, records, strict=True)
            if record is not None
        ]
        return [(key, row) for key, row in rows if row.live(now)]

    def pattern(self) -> str:
        return _glob(self._adapter.key_prefix) + "{*}:d:*"

    async def groups(self, now: float) -> list[str]:
        adapter = self._adapter
        if not adapter.cluster:  # one atomic scan on the server
            found = await adapter._run(
                scripts.NATIVE_GROUPS, [], [adapter.key_prefix, self.pattern(), repr(now)], idempotent=True
            )
            return sorted(_text(g) for g in found)
        client = adapter._client
        pattern = self.pattern()

        async def scan() -> list[str]:
            return [_text(name) async for name in client.scan_iter(match=pattern, count=1000)]

        groups = sorted(
            {g for name in await adapter._call(scan, idempotent=True) if (g := self.group_of(name))}
        )
        live: list[str] = []
        for group in groups:  # one small script per group: each group is its own hash slot
            count = await adapter._run(
                scripts.NATIVE_LIVE_COUNT, self.keys(group), [repr(now), adapter._margin_ms], idempotent=True
            )
            if count > 0:
                live.append(group)
        return live

    async def write(self, write: Write, now: float) -> WriteResult:
        condition = _condition(write, str)
        tail = expires = ""
        expires_at = None
        if write.kind == "set":
            assert write.encoded is not None
            if write.ttl is not None:
                expires_at = now + write.ttl
                expires = repr(expires_at)
            tail = f"{now!r}|{expires}|{write.encoded}"
        adapter = self._adapter
        reply = await adapter._run(
            scripts.NATIVE_WRITE,
            self.keys(write.group_id),
            [
                write.key,
                condition,
                repr(now),
                tail,
                str(new_version(None)),
                expires,
                adapter._margin_ms,
                "1" if condition else "0",
            ],
        )
        if not condition and tail:
            return None  # an unconditional set: the reply is only the new version, nothing to read
        if reply[0] == 0:
            current = self.parse(reply[1], write.group_id, write.key) if reply[1] is not None else None
            plan_write(write, current, now)  # raises the ConflictError with its message
            raise ConflictError(f"{write.kind} of {write.group_id!r}/{write.key!r}: condition failed")
        if write.kind == "delete":
            current = self.parse(reply[1], write.group_id, write.key) if reply[1] is not None else None
            return (UNCHANGED if current is None else None), current
        assert write.encoded is not None
        current = self.parse(reply[1], write.group_id, write.key) if reply[1] is not None else None
        created = current.created_at if current is not None and current.created_at is not None else now
        return Row(write.encoded, int(reply[2]), created, now, expires_at), current

    async def put_if(self, group_id: str, key: str, current: Row | None, new: Row, now: float) -> bool:
        condition = f"={current.version if current is not None else ''}"
        expires = repr(new.expires_at) if new.expires_at is not None else ""
        reply = await self._adapter._run(
            scripts.NATIVE_WRITE,
            self.keys(group_id),
            [
                key,
                condition,
                repr(now),
                f"{new.updated_at!r}|{expires}|{new.value}",
                str(new.version),
                expires,
                self._adapter._margin_ms,
                "0",
            ],
        )
        return not isinstance(reply, list)  # the new version alone, or {0, current}

    async def clear(self, group_id: str) -> None:
        await self._adapter._command("DEL", *self.keys(group_id), idempotent=True)

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


#: The row ``group_rows(names_only=True)`` gives every key: its value was not read.
_UNREAD: Final = Row("null", None, None, None, None)


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

    def row(self, value: Any, expire_ms: int, name: Any, *, written: bool = False) -> Row:
        """The row of a value read from the key ``name``, under the policy for values Node wrote.

        ``codec.from_node`` gives the text to use (an integer beyond 64-bit is the double Node
        meant); the version stays the hash of the text as stored, which the scripts compare.
        A value that text cannot hold (not JSON, a lone surrogate) makes the read of this key
        raise ``SchemaError`` naming it. ``written``: the value was just replaced or deleted, so
        refusing it would fail a write that landed; it then comes back as its text (a JSON string).
        """
        try:
            stored = _text(value)
            group_id, _, key = _text(name)[len(self._adapter.key_prefix) :].partition(":")
            text = codec.from_node(stored, group_id or "?", key or "?", max_bytes=2**62)
        except (UnicodeDecodeError, InvalidValueError) as exc:
            if not written:
                raise SchemaError(
                    f"Redis key {_text(name)!r} (key_prefix {self._adapter.key_prefix!r}) holds "
                    f"{value[:60]!r}, which is not a JSON value this store can hold ({exc}); "
                    "rewrite or delete that key (another tool wrote it?)"
                ) from None
            stored = text = orjson.dumps(
                value.decode(errors="replace") if isinstance(value, bytes) else value
            ).decode()
        expires = expire_ms / 1000 if expire_ms > 0 else None
        return Row(text, _motia_version(stored), None, None, expires)

    async def read_row(self, group_id: str, key: str, now: float) -> Row | None:
        name = self.key(group_id, key)
        value, at = await self._adapter._run(scripts.MOTIA_GET, [name], [int(now * 1000)], idempotent=True)
        return None if value is None else self.row(value, at, name)

    async def group_rows(self, group_id: str, now: float, *, names_only: bool = False) -> dict[str, Row]:
        """The group's live items, in one atomic script (SCAN MATCH and GET on the server).

        ``names_only``: only the keys are wanted, so values are not checked (a key whose value
        cannot be read is still listed by ``keys``).
        """
        head = len(self.key(group_id, ""))
        flat = await self._adapter._run(
            scripts.MOTIA_GROUP, [], [self.pattern(group_id), int(now * 1000)], idempotent=True
        )
        rows: dict[str, Row] = {}
        for index in range(0, len(flat), 3):
            name = _text(flat[index])
            rows[name[head:]] = _UNREAD if names_only else self.row(flat[index + 1], flat[index + 2], name)
        return rows

    async def group_keys(self, group_id: str) -> list[str]:
        """The group's key names, listed with SCAN a page at a time (not atomic, not blocking)."""
        head, pattern, cursor = len(self.key(group_id, "")), self.pattern(group_id), "0"
        names: set[str] = set()  # SCAN may return a key twice
        while True:
            cursor, found = await self._adapter._command(
                "SCAN", cursor, "MATCH", pattern, "COUNT", 1000, idempotent=True
            )
            names.update(_text(name)[head:] for name in found)
            if _text(cursor) == "0":
                return list(names)

    async def rows_of(self, group_id: str, keys: list[str], now: float) -> list[tuple[str, Row]]:
        """The live rows of ``keys`` (in that order) in one script."""
        names = [self.key(group_id, key) for key in keys]
        flat = await self._adapter._run(scripts.MOTIA_MGET, names, [int(now * 1000)], idempotent=True)
        return [
            (key, self.row(value, at, name))
            for key, name, value, at in zip(keys, names, flat[::2], flat[1::2], strict=True)
            if value is not None
        ]

    def all_pattern(self) -> str:
        return _glob(self._adapter.key_prefix) + "*"

    async def groups(self, now: float) -> list[str]:
        prefix = self._adapter.key_prefix
        found = await self._adapter._run(
            scripts.MOTIA_GROUPS,
            [],
            [self.all_pattern(), len(prefix.encode()), int(now * 1000)],
            idempotent=True,
        )
        return sorted(_text(g) for g in found)

    async def write(self, write: Write, now: float) -> tuple[Plan, Row | None]:
        condition = _condition(write, "{:013x}".format)
        value, at = "", ""
        if write.kind == "set":
            assert write.encoded is not None
            value = write.encoded
            at = str(round((now + write.ttl) * 1000)) if write.ttl is not None else ""
        name = self.key(write.group_id, write.key)
        ok, old = await self._adapter._run(
            scripts.MOTIA_WRITE, [name], [condition, int(now * 1000), value, at, "0"]
        )
        current = self.row(old, -1, name, written=ok == 1) if old is not None else None
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

    __slots__ = ("_adapter", "_all_groups", "_group_reads", "_row_reads")

    def __init__(self, adapter: RedisStateAdapter) -> None:
        self._adapter = adapter
        self._row_reads: dict[tuple[str, str], int | None] = {}
        self._group_reads: dict[str, dict[str, int | None]] = {}
        #: The live groups seen by the first read across groups (list_groups, items()), if any.
        self._all_groups: list[str] | None = None

    async def read_row(self, group_id: str, key: str, now: float) -> Row | None:
        row = await self._adapter._layout.read_row(group_id, key, now)
        self._row_reads.setdefault((group_id, key), row.version if row is not None else None)
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
            if self._all_groups is None:
                self._all_groups = groups
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

        args: list[Any] = [repr(self._adapter._clock()), self._adapter._margin_ms]
        args.append(len(self._row_reads))
        for (g, k), version in self._row_reads.items():
            args += [group(g), k, "" if version is None else version]
        args.append(len(self._group_reads))
        for g, seen in self._group_reads.items():
            args += [group(g), len(seen)]
            for k, version in seen.items():
                args += [k, version]
        if self._all_groups is None:
            args.append("0")
        else:
            args += [
                "1",
                self._adapter.key_prefix,
                layout.pattern(),
                len(self._all_groups),
                *self._all_groups,
            ]
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
        if not keys and self._all_groups is None:
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
        if self._all_groups is None:
            args.append("0")
        else:
            prefix = len(self._adapter.key_prefix.encode())
            args += ["1", layout.all_pattern(), prefix, len(self._all_groups), *self._all_groups]
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
