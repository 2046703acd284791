"""The Redis transport: connections, requests, timeouts, scripts and the errors they raise.

``Transport`` is the only code that sends anything to Redis. Its public surface is what the
layouts and the adapter use, and the whole contract a rewrite must keep:

* ``await command(*args, idempotent=...)``: one Redis command, its raw reply.
* ``await script(source, keys, args, idempotent=...)``: one Lua script (EVALSHA, loaded on a
  server that lacks it), its raw reply.
* ``await scan(pattern)``: every key name matching a glob, on every node (not atomic).
* ``cluster``, ``safe_url``, ``client`` (redis-py's, for tests and tools), ``holds_connections``,
  ``begin_close()``, ``await close()``.

Each call is one request and its reply; calls may run concurrently. A call that fails raises
one of our errors, never redis-py's: ``StoreUnavailableError`` (the server cannot be reached or
does not answer within ``socket_timeout``, or no connection is free within it), ``SchemaError``
(a script met a key of another layout or tool), ``StateError`` (Redis refused the request).
Passwords never appear in a message. ``idempotent=True`` requests may be sent a second time when
the connection died under the first; other requests are sent once, so a write whose reply was
lost is reported, never repeated.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..errors import ConfigError, SchemaError, StateError, StoreUnavailableError
from ..redact import redact, scrub, secrets_in

if TYPE_CHECKING:
    from .adapter import RedisStateAdapter

__all__ = ["Client", "Transport", "text"]

T = TypeVar("T")
Client = aioredis.Redis | RedisCluster

def text(value: Any) -> str:
    """A reply's bulk string (bytes, or str from a client that decodes) as ``str``."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _check_numbers(kwargs: dict[str, Any]) -> None:
    """Refuse numbers redis-py parsed from the URL (``db``, timeouts, intervals) that are < 0 or NaN."""
    for name, value in kwargs.items():
        if type(value) in (int, float) and not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"Redis URL parameter {name} must be a finite number >= 0, got {value!r}")


def _pack(args: tuple[Any, ...]) -> bytes:
    """A command in the Redis protocol (RESP): an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if type(arg) is str else arg if type(arg) is bytes else str(arg).encode()
        parts += (b"$%d\r\n" % len(data), data, b"\r\n")
    return b"".join(parts)


def _discard(conn: AbstractConnection) -> None:
    """Close a connection of an event loop that is gone, running nothing on that loop.

    ``disconnect()`` would await on the old loop, and ``transport.abort()`` schedules the
    socket's close there, which raises once that loop is closed; then the close it would have
    scheduled runs here instead. Either way redis-py sees a disconnected connection and nothing
    warns about an unclosed socket. Neither library has a public call for this: redis-py does
    not expose a connection's stream, and asyncio cannot close a transport of a closed loop.
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


class Transport:
    """Requests to one Redis (standalone or Cluster) for one adapter; see the module docstring.

    Built from a URL, it owns its connections: on a standalone server they are its own (made as
    redis-py's pool makes them, each request under one ``asyncio.timeout``), at most
    ``max_connections``, and a request waits up to ``socket_timeout`` for a free one; on a
    Cluster they are ``RedisCluster``'s. Given a client, it sends through that client and never
    closes it.
    """

    __slots__ = (
        "_client",
        "_closing",
        "_connection",
        "_gate",
        "_idle",
        "_loop",
        "_max_connections",
        "_owner",
        "_owns_client",
        "_scripts",
        "_secrets",
        "_socket_timeout",
        "cluster",
        "safe_url",
    )

    def __init__(
        self,
        url: str,
        *,
        owner: RedisStateAdapter,
        client: Client | None = None,
        cluster: bool = False,
        socket_timeout: float = 5.0,
        connect_timeout: float = 2.0,
        max_connections: int = 64,
    ) -> None:
        """Describe the connections; nothing connects until the first request.

        Args:
            url: the server, as ``RedisStateAdapter`` takes it (already checked there); ignored
                when ``client`` is given.
            owner: the adapter, named in error messages (its repr, ``key_prefix`` and ``layout``).
            client: an existing ``redis.asyncio`` client to send through; never closed here.
            cluster: connect with ``RedisCluster``.
            socket_timeout: seconds a request (or its wait for a free connection) may take.
            connect_timeout: seconds to wait for a connection.
            max_connections: connections to Redis at most.

        Raises:
            ConfigError: redis-py cannot make a client or a connection of ``url``, or a number in
                it is negative or NaN.
        """
        self._owner = owner
        self._owns_client = client is None
        self._gate: asyncio.Semaphore | None = None
        self._max_connections = max_connections
        #: The event loop the connections belong to (see _follow_loop).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: list[AbstractConnection] | None = None  # None: requests go through the client
        self._connection: Callable[[], AbstractConnection] | None = None
        self._socket_timeout: float | None = socket_timeout
        self._secrets: tuple[str, ...] = ()
        self._closing = False
        self._scripts: dict[str, str] = {}  # Lua source -> SHA-1
        if client is None:
            client_options: dict[str, Any] = {
                "socket_timeout": socket_timeout,
                "socket_connect_timeout": connect_timeout,
                # No silent retries: a write whose reply was lost may have landed, and a retried
                # compare-and-set could apply an update twice. Reads retry once, in _call.
                "retry": Retry(NoBackoff(), 0),
                "max_connections": max_connections,
            }
            self.safe_url = redact(url)
            self._secrets = secrets_in(url)
            try:
                if cluster:
                    client = RedisCluster.from_url(url, **client_options)
                else:
                    client = aioredis.Redis.from_url(url, **client_options)
                    # Standalone: our own connections, made as the client's pool makes them (TLS,
                    # unix socket, auth, db), but without redis-py's per-call timeout task: each
                    # request runs under one asyncio.timeout instead (see _direct).
                    pool = client.connection_pool
                    kwargs = {**pool.connection_kwargs, "socket_timeout": None}
                    self._connection = partial(pool.connection_class, **kwargs)
                    self._connection()  # an unknown URL parameter fails here, not at the first call
                    self._idle = []
                    _check_numbers(pool.connection_kwargs)
            except (ValueError, TypeError, rexc.RedisError) as exc:
                raise ConfigError(f"Redis URL {self.safe_url}: {self._scrub(str(exc))}") from None
            # Requests queue here for a connection, so a burst waits instead of failing with "too
            # many connections" (each request holds at most one connection at a time).
            self._gate = asyncio.Semaphore(max_connections)
        else:
            self.safe_url = f"<{type(client).__name__} given by the caller>"
        self.cluster = isinstance(client, RedisCluster)
        self._client: Client = client

    @property
    def client(self) -> Client:
        """The redis-py client (for tests and tools that look at the keys themselves)."""
        return self._client

    @property
    def holds_connections(self) -> bool:
        """Whether connections of its own are open (``close()`` releases them)."""
        return bool(self._idle)

    # -- requests -----------------------------------------------------------------------------

    async def command(self, *args: Any, idempotent: bool) -> Any:
        """Send one command and return its raw reply (``HGETALL``: a flat list or a dict).

        Scripts go through ``script``: an EVALSHA sent here that the server lacks raises
        redis-py's ``NoScriptError``.

        Raises:
            StoreUnavailableError: the server is unreachable, slow or every connection is busy.
            SchemaError: the command met a key of another kind.
            StateError: Redis refused the command, or the transport is used from another loop.
        """
        if self._idle is None:
            client = self._client
            return await self._call(lambda: client.execute_command(*args), idempotent=idempotent)
        return await self._call(lambda: self._direct(args), idempotent=idempotent)

    async def script(self, source: str, keys: list[str], args: list[Any], *, idempotent: bool) -> Any:
        """Run a Lua script by its SHA-1 (EVALSHA), loading it first on a server that lacks it.

        Raises:
            StoreUnavailableError, SchemaError, StateError: as ``command``.
        """
        sha = self._sha(source)
        try:
            return await self.command("EVALSHA", sha, len(keys), *keys, *args, idempotent=idempotent)
        except rexc.NoScriptError:  # the script did not run: safe to run again, even a write
            if self._idle is None:
                client = self._client  # a cluster loads it on every primary
                await self._call(lambda: client.script_load(source), idempotent=True)
            else:
                await self.command("SCRIPT", "LOAD", source, idempotent=True)
            return await self.command("EVALSHA", sha, len(keys), *keys, *args, idempotent=idempotent)

    async def scan(self, pattern: str) -> list[str]:
        """Every key name matching the glob ``pattern``, on every node; a name may repeat.

        SCAN a page at a time: not atomic, and it does not block the server.

        Raises:
            StoreUnavailableError, SchemaError, StateError: as ``command``.
        """
        if self.cluster:
            client = self._client

            async def every_node() -> list[str]:
                return [text(name) async for name in client.scan_iter(match=pattern, count=1000)]

            return await self._call(every_node, idempotent=True)
        names: list[str] = []
        cursor: Any = "0"
        while True:
            cursor, found = await self.command(
                "SCAN", cursor, "MATCH", pattern, "COUNT", 1000, idempotent=True
            )
            names += (text(name) for name in found)
            if text(cursor) == "0":
                return names

    # -- closing ------------------------------------------------------------------------------

    def begin_close(self) -> None:
        """From now on a connection a finished request gives back is closed, not kept.

        Raises:
            StateError: as ``_follow_loop`` (nothing changes then: close from the client's loop).
        """
        self._follow_loop()
        self._closing = True

    async def close(self) -> None:
        """Close the connections of its own, and the client if it made it."""
        self._closing = True
        if self._idle is not None:
            idle, self._idle = self._idle, []
            for conn in idle:
                await conn.disconnect()
        if self._owns_client:
            await self._client.aclose()

    # -- insides ------------------------------------------------------------------------------

    def _follow_loop(self) -> None:
        """Move to the running event loop when it is not the one the connections belong to.

        A second ``asyncio.run`` (pytest users make a loop per test) finds connections and the
        semaphore of a loop that is gone. They are replaced; the old connections are closed
        without awaiting anything on their loop (see ``_discard``). One loop at a time: requests
        from two loops running at once are not supported. A client that redis-py pools (a
        cluster's, or one given by the caller) cannot move: that raises ``StateError`` instead.

        Raises:
            StateError: the client is redis-py's own and belongs to another loop.
        """
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return
        if self._loop is not None:
            if self._idle is None:
                raise StateError(
                    f"{self._owner!r} was used from another event loop, and its "
                    f"{type(self._client).__name__} client's connections belong to that loop: use "
                    "and close an adapter with a Redis Cluster, or with a client you gave, within "
                    "one event loop (make one adapter per asyncio.run)"
                )
            old, self._idle = self._idle, []
            for conn in old:
                _discard(conn)
            if self._gate is not None:
                self._gate = asyncio.Semaphore(self._max_connections)
        self._loop = loop

    def _sha(self, source: str) -> str:
        sha = self._scripts.get(source)
        if sha is None:
            sha = self._scripts[source] = hashlib.sha1(source.encode()).hexdigest()
        return sha

    def _scrub(self, text: str) -> str:
        return scrub(text, self._secrets)

    def _unavailable(self, exc: BaseException) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"Redis at {self.safe_url} is unavailable: {type(exc).__name__}: {self._scrub(str(exc))}"
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
                f"Redis at {self.safe_url}: {name} under key_prefix {self._owner.key_prefix!r} holds "
                f"data that layout={self._owner.layout!r} cannot read: probably the other layout's "
                "(native and motia keep different kinds of keys) or another tool's. Give each layout "
                "its own key_prefix."
            )
        return StateError(f"Redis at {self.safe_url} refused the request: {text}")

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
                    raise  # script() loads the script and runs it again
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
                f"Redis at {self.safe_url}: no free connection within {self._socket_timeout} s "
                "(every one of max_connections is busy)"
            ) from None

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
            if self._closing:
                await conn.disconnect()
            else:
                idle.append(conn)
