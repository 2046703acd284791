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
does not answer within ``socket_timeout``), ``SchemaError`` (a script met a key of another
layout or tool), ``StateError`` (Redis refused the request). Passwords never appear in a
message. ``idempotent=True`` requests may be sent a second time when the connection died under
the first; other requests are sent once, so a write whose reply was lost is reported, never
repeated.

Auto-pipelining. Requests to a server (each node of a Cluster) share one connection, a ``_Link``:
a request is packed (RESP) and queued, and the link's writer task, which runs in the next turn
of the event loop, sends everything queued by then in one write; its reader task matches
replies to requests in order (Redis answers a connection's requests in the order they came).
So the calls that concurrent tasks make in one loop turn (``asyncio.gather`` of 10 000 sets)
cost one write and a few reads instead of 10 000 round trips, and a lone call costs one round
trip, as before. What stays exact:

* A cancelled caller leaves a cancelled future: a request not yet written is dropped (it never
  runs), one already written is answered and its reply dropped, so the replies after it stay
  matched to their own requests.
* Each write has a deadline ``socket_timeout`` away; when a reply of that write is still missing
  then, or the connection drops, or a reply comes that nobody asked for, the link breaks:
  every request written on it fails (``StoreUnavailableError``; reads are sent once more on a
  new link, writes never), requests it had not written yet go out on a new link (they never
  left), and its connection is closed.
* Connections are redis-py's own classes, made with the client's settings (TLS, unix sockets,
  AUTH, ``db``, RESP3), used through their public calls (``connect``, ``send_packed_command``,
  ``read_response``, ``disconnect``); replies are parsed by redis-py (with hiredis).
* A Cluster's requests are routed by their first key through the cluster client's slot table;
  a MOVED or ASK (nothing ran), and a read sent again after its node's connection died, go
  through the cluster client, which follows the redirect and learns the new layout. SCAN and
  SCRIPT LOAD (every node) and a client given by the caller go through that client as well.
* A link's tasks belong to its event loop: when ``asyncio.run`` ends it cancels them, which
  closes the connection; the next loop gets a new link (see ``Transport._follow_loop``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import re
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import hiredis
import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..errors import ConfigError, SchemaError, StateError, StoreUnavailableError
from ..redact import redact, scrub, secrets_in

if TYPE_CHECKING:
    from .adapter import RedisStateAdapter

__all__ = ["Client", "Transport", "text"]

T = TypeVar("T")
Client = aioredis.Redis | RedisCluster

#: Packed requests not written yet, and the futures their replies resolve (two lists, not a
#: list of pairs: a burst keeps one object fewer alive per request).
_Queue = tuple[list[bytes], list["asyncio.Future[Any]"]]


def text(value: Any) -> str:
    """A reply's bulk string (bytes, or str from a client that decodes) as ``str``."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _check_numbers(kwargs: dict[str, Any]) -> None:
    """Refuse numbers redis-py parsed from the URL (``db``, timeouts, intervals) that are < 0 or NaN."""
    for name, value in kwargs.items():
        if type(value) in (int, float) and not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"Redis URL parameter {name} must be a finite number >= 0, got {value!r}")


def _resendable(exc: Exception) -> bool:
    """Whether a request that failed so may be sent again: its connection died (not a timeout)."""
    return isinstance(exc, rexc.ConnectionError | OSError)


def _first_key(args: tuple[Any, ...]) -> Any:
    """The first key a request names (what a cluster routes it by), or None."""
    if args[0] == "EVALSHA":
        return args[3] if args[2] else None
    return args[1] if len(args) > 1 else None


class _Link:
    """One connection carrying pipelined requests, its replies matched to them in order.

    ``submit`` queues a request; the writer task, which runs in the next loop turn, sends every
    request queued by then in one write and moves their futures to ``sent``; the reader task
    resolves the oldest future in ``sent`` with each reply. A caller that was cancelled leaves a
    cancelled future behind: its request is dropped if it was not sent yet, else its reply is read
    and dropped, so the connection stays in step. Each write has a deadline ``timeout`` away (one
    timer runs, for the oldest write still awaiting replies): when a reply of that write is still
    missing then, the link breaks. A link breaks on a timeout, a
    dropped connection or a reply nobody asked for: every request sent on it fails, its
    connection is closed, and requests it had not sent go to the next link (they never left).
    """

    __slots__ = (
        "_loop",
        "_requeue",
        "conn",
        "deadlines",
        "error",
        "queued",
        "read",
        "reader",
        "sent",
        "timeout",
        "timer",
        "waiting",
        "wake",
        "writer",
        "written",
    )

    def __init__(
        self, conn: AbstractConnection, timeout: float | None, requeue: Callable[[_Queue], None]
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._requeue = requeue
        self.conn = conn
        self.timeout = timeout
        self.queued: list[bytes] = []
        self.waiting: list[asyncio.Future[Any]] = []
        self.sent: deque[asyncio.Future[Any]] = deque()
        self.written = 0  # requests sent, and replies read: the timer compares them
        self.read = 0
        #: (deadline, requests sent by then) of each write still awaiting replies, oldest first;
        #: one timer, for the oldest, at a time.
        self.deadlines: deque[tuple[float, int]] = deque()
        self.timer: asyncio.TimerHandle | None = None
        self.error: Exception | None = None
        self.wake: asyncio.Future[None] | None = None
        self.reader: asyncio.Task[None] | None = None
        self.writer = self._loop.create_task(self._write())

    def submit(self, packed: bytes) -> asyncio.Future[Any]:
        """Queue one packed request for the next write; its future resolves with the reply."""
        future = self._loop.create_future()
        self.queued.append(packed)
        self.waiting.append(future)
        self.wake_writer()
        return future

    def take(self, requests: _Queue) -> None:
        """Queue requests another link never wrote."""
        self.queued += requests[0]
        self.waiting += requests[1]
        self.wake_writer()

    def wake_writer(self) -> None:
        wake = self.wake
        if wake is not None:
            self.wake = None
            wake.set_result(None)

    def break_(self, exc: Exception, *, requeue: bool = True) -> None:
        """Fail every request sent, hand the unsent ones on (or fail them too), close the connection."""
        if self.error is not None:
            return
        self.error = exc
        if self.timer is not None:
            self.timer.cancel()
        sent, self.sent = self.sent, deque()
        for future in sent:
            if not future.done():
                future.set_exception(exc)
        queue = self.queued, self.waiting
        self.queued, self.waiting = [], []
        if requeue:
            self._requeue(queue)
        else:
            for future in queue[1]:
                if not future.done():
                    future.set_exception(exc)
        if self.writer is not asyncio.current_task():
            self.writer.cancel()  # its finally closes the connection

    def abandon(self) -> None:
        """Stop a link of an event loop that is no longer running (see ``Transport._follow_loop``)."""
        for task in (self.reader, self.writer):
            if task is not None and not task.done():
                with contextlib.suppress(RuntimeError):  # its loop is closed: nothing can run there
                    task.cancel()

    async def _write(self) -> None:
        conn, loop = self.conn, self._loop
        connected = False
        try:
            await conn.connect()  # type: ignore[no-untyped-call]
            connected = True
            self.reader = loop.create_task(self._read())
            while True:
                if not self.queued:
                    self.wake = loop.create_future()
                    await self.wake
                queued, waiting = self.queued, self.waiting
                self.queued, self.waiting = [], []
                packed: list[bytes] = []
                for data, future in zip(queued, waiting, strict=True):
                    if not future.done():  # else cancelled before it went out: never sent
                        packed.append(data)
                        self.sent.append(future)
                if packed:
                    self.written += len(packed)
                    if self.timeout is not None:
                        self.deadlines.append((loop.time() + self.timeout, self.written))
                        if self.timer is None:
                            self.timer = loop.call_at(self.deadlines[0][0], self._overdue)
                    await conn.send_packed_command(packed, check_health=False)
        except (rexc.RedisError, OSError) as exc:
            self.break_(exc, requeue=connected)
        finally:
            # Cancelled: by break_, by close(), or by the event loop's end (asyncio.run cancels
            # every task), which is how a link never outlives its loop. Nothing is sent again then.
            self.break_(rexc.ConnectionError("the connection was closed"), requeue=False)
            if self.reader is not None:
                self.reader.cancel()
            with contextlib.suppress(rexc.RedisError, OSError):
                await conn.disconnect(nowait=True)

    async def _read(self) -> None:
        conn = self.conn
        try:
            while True:
                try:
                    reply = await conn.read_response()
                    failed = False
                except rexc.ResponseError as exc:  # an error reply: that request's alone
                    reply, failed = exc, True
                if not self.sent:
                    raise rexc.ConnectionError("Redis sent a reply to no request: connection out of step")
                future = self.sent.popleft()
                self.read += 1
                if future.done():  # its caller was cancelled: the reply is dropped
                    continue
                if failed:
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        except (rexc.RedisError, OSError) as exc:
            self.break_(exc)

    def _overdue(self) -> None:
        """The oldest write's deadline: break the link if a reply of it is missing, else re-arm."""
        self.timer = None
        deadlines = self.deadlines
        while deadlines and deadlines[0][1] <= self.read:  # answered in full
            deadlines.popleft()
        if self.error is not None or not deadlines:
            return
        when = deadlines[0][0]
        if when - self._loop.time() < 0.001:  # timers may fire a hair early
            self.break_(rexc.TimeoutError(f"no reply within socket_timeout={self.timeout} s"))
        else:
            self.timer = self._loop.call_at(when, self._overdue)


class Transport:
    """Requests to one Redis (standalone or Cluster) for one adapter; see the module docstring.

    Built from a URL, it owns its connections: one pipelined connection to a standalone server,
    one to each node of a Cluster (made as redis-py's pools make them), plus the connections of
    the ``RedisCluster`` client for what goes through it (at most ``max_connections`` per node; a
    request waits up to ``socket_timeout`` for a free one). Given a client, it sends through that
    client, unpipelined, and never closes it.
    """

    __slots__ = (
        "_client",
        "_connection",
        "_gate",
        "_links",
        "_loading",
        "_loop",
        "_max_connections",
        "_nodes",
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
            max_connections: connections of the cluster client (or a client given), per node.

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
        #: Standalone: makes our own connection; None: requests go through the client, or are
        #: pipelined per node of a cluster (``_nodes``).
        self._connection: Callable[[], AbstractConnection] | None = None
        self._nodes = False  # our own cluster client: requests pipelined on a link per node
        #: The connections requests are pipelined on: one per node ("" for a standalone server).
        self._links: dict[str, _Link] = {}
        self._socket_timeout: float | None = socket_timeout
        self._secrets: tuple[str, ...] = ()
        self._scripts: dict[str, str] = {}  # Lua source -> SHA-1
        self._loading: dict[str, asyncio.Future[Any]] = {}  # SHA-1 -> its SCRIPT LOAD under way
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
                    self._nodes = True
                else:
                    client = aioredis.Redis.from_url(url, **client_options)
                    # Standalone: our own pipelined connection, made as the client's pool makes
                    # them (TLS, unix socket, auth, db), but with no read timeout: its reader waits
                    # for replies while idle, and each write arms its own timer (see _Link).
                    pool = client.connection_pool
                    kwargs = {**pool.connection_kwargs, "socket_timeout": None}
                    self._connection = partial(pool.connection_class, **kwargs)
                    self._connection()  # an unknown URL parameter fails here, not at the first call
                    _check_numbers(pool.connection_kwargs)
            except (ValueError, TypeError, rexc.RedisError) as exc:
                raise ConfigError(f"Redis URL {self.safe_url}: {self._scrub(str(exc))}") from None
            if cluster:
                # Requests queue here for one of the cluster client's connections, so a burst waits
                # instead of failing with "too many connections" (each holds one at a time).
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
        return any(link.error is None for link in self._links.values())

    # -- requests -----------------------------------------------------------------------------

    def command(self, *args: Any, idempotent: bool) -> Awaitable[Any]:
        """Send one command; await its raw reply (``HGETALL``: a flat list or a dict).

        Scripts go through ``script``: an EVALSHA sent here that the server lacks raises
        redis-py's ``NoScriptError``.

        Raises:
            StoreUnavailableError: the server is unreachable, slow or every connection is busy.
            SchemaError: the command met a key of another kind.
            StateError: Redis refused the command, or the transport is used from another loop.
        """
        if self._connection is None and not self._nodes:
            return self._through_client(args, idempotent)
        return self._pipelined(args, idempotent, None)

    def script(self, source: str, keys: list[str], args: list[Any], *, idempotent: bool) -> Awaitable[Any]:
        """Run a Lua script by its SHA-1 (EVALSHA), loading it first on a server that lacks it.

        Each of these returns the awaitable of one coroutine (no frame of its own per request:
        a burst of pipelined requests keeps fewer objects alive, so the garbage collector runs
        less often).

        Raises:
            StoreUnavailableError, SchemaError, StateError: as ``command``.
        """
        request = ("EVALSHA", self._sha(source), len(keys), *keys, *args)
        if self._connection is None and not self._nodes:
            return self._client_script(source, request, idempotent)
        return self._pipelined(request, idempotent, source)

    async def scan(self, pattern: str, *, count: int = 1000) -> list[str]:
        """Every key name matching the glob ``pattern``, on every node; a name may repeat.

        SCAN a page (about ``count`` keys looked at) at a time: not atomic, and it does not block
        the server for longer than one page.

        Raises:
            StoreUnavailableError, SchemaError, StateError: as ``command``.
        """
        if self.cluster:
            client = self._client

            async def every_node() -> list[str]:
                return [text(name) async for name in client.scan_iter(match=pattern, count=count)]

            return await self._call(every_node, idempotent=True)
        names: list[str] = []
        cursor: Any = "0"
        while True:
            cursor, found = await self.command(
                "SCAN", cursor, "MATCH", pattern, "COUNT", count, idempotent=True
            )
            names += (text(name) for name in found)
            if text(cursor) == "0":
                return names

    # -- closing ------------------------------------------------------------------------------

    def begin_close(self) -> None:
        """Check, before the adapter drains and counts as closed, that it can close from this loop.

        Requests still in flight finish on their links; ``close()`` then closes the links.

        Raises:
            StateError: as ``_follow_loop`` (nothing changes then: close from the client's loop).
        """
        self._follow_loop()

    async def close(self) -> None:
        """Close the connections of its own, and the client if it made it."""
        links, self._links = self._links, {}
        for link in links.values():
            link.writer.cancel()  # it fails what is left and closes the connection
        await asyncio.gather(*(link.writer for link in links.values()), return_exceptions=True)
        if self._owns_client:
            await self._client.aclose()

    # -- insides ------------------------------------------------------------------------------

    def _follow_loop(self) -> None:
        """Move to the running event loop when it is not the one the connections belong to.

        A second ``asyncio.run`` (pytest users make a loop per test) finds the link of a loop that
        is gone: its tasks were cancelled when that loop ended (``asyncio.run`` and
        ``asyncio.Runner`` cancel every task), which closed its connection; a new link is made on
        first use. A loop closed with tasks still pending leaves its socket to the garbage
        collector (which warns, as for any socket left open). One loop at a time: requests from
        two loops running at once are not supported. A client that redis-py pools (a cluster's,
        or one given by the caller) cannot move: that raises ``StateError`` instead.

        Raises:
            StateError: the client is redis-py's own and belongs to another loop.
        """
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return
        if self._loop is not None:
            if self._connection is None:
                raise StateError(
                    f"{self._owner!r} was used from another event loop, and its "
                    f"{type(self._client).__name__} client's connections belong to that loop: use "
                    "and close an adapter with a Redis Cluster, or with a client you gave, within "
                    "one event loop (make one adapter per asyncio.run)"
                )
            old, self._links = self._links, {}
            for link in old.values():
                link.abandon()
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
        """Run one request through the client, mapping driver errors (see ``_translated``)."""
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
                except Exception as exc:
                    if attempt == 0 and idempotent and _resendable(exc):
                        continue
                    ours = self._translated(exc)
                    if ours is exc:
                        raise
                    raise ours from None
            raise AssertionError("unreachable")
        finally:
            if gate is not None:
                gate.release()

    async def _client_script(self, source: str, request: tuple[Any, ...], idempotent: bool) -> Any:
        """``script`` through the client (a cluster's, or one given by the caller)."""
        try:
            return await self.command(*request, idempotent=idempotent)
        except rexc.NoScriptError:  # the script did not run: safe to run again, even a write
            await self._load(source, request[1])
            return await self.command(*request, idempotent=idempotent)

    async def _pipelined(self, args: tuple[Any, ...], idempotent: bool, source: str | None) -> Any:
        """One request on our pipelined standalone connection (see ``_Link``), its raw reply.

        ``args`` is an EVALSHA of ``source`` when ``source`` is given: a server that lacks the
        script gets it loaded, and the request is sent again (it did not run: safe, even a write).
        Idempotent requests are sent again once when their connection died under them.
        """
        if asyncio.get_running_loop() is not self._loop:
            self._follow_loop()
        packed: bytes = hiredis.pack_command(args)  # RESP, packed in C (names were checked: UTF-8 holds them)
        loaded = resent = False
        while True:
            try:
                link = await self._link_for(args) if self._nodes else self._standalone_link()
                if link is None or (resent and self._nodes):
                    # No key to route by, or sent again after a node's connection died: through
                    # the cluster client, which finds the node (and a failed-over one) itself.
                    return await self._through_client(args, idempotent)
                return await link.submit(packed)
            except rexc.NoScriptError:
                if source is None or loaded:
                    raise
                await self._load(source, args[1])
                loaded = True
            except rexc.AskError:  # MOVED or ASK: the node does not serve the slot, nothing ran
                return await self._through_client(args, idempotent)
            except Exception as exc:
                if resent or not idempotent or not _resendable(exc):
                    ours = self._translated(exc)
                    if ours is exc:
                        raise
                    raise ours from None
                resent = True

    def _through_client(self, args: tuple[Any, ...], idempotent: bool) -> Awaitable[Any]:
        client = self._client
        return self._call(lambda: client.execute_command(*args), idempotent=idempotent)

    def _standalone_link(self) -> _Link:
        link = self._links.get("")
        if link is None or link.error is not None:
            make = self._connection
            assert make is not None
            link = self._new_link("", make)
        return link

    async def _link_for(self, args: tuple[Any, ...]) -> _Link | None:
        """The link of the cluster node serving the request's first key; None for no key.

        Following a MOVED or ASK (through the client) teaches the client the new slot's node.

        Raises:
            redis-py's errors: the cluster cannot be reached, or the key's slot is not served.
        """
        client = self._client
        assert isinstance(client, RedisCluster)
        await client.initialize()  # at once, unless new or reset after an outage: then it learns the slots
        key = _first_key(args)
        if key is None:
            return None
        node = client.get_node_from_key(key)
        if node is None:
            return None
        link = self._links.get(node.name)
        if link is None or link.error is not None:
            kwargs = {**node.connection_kwargs, "socket_timeout": None}
            link = self._new_link(node.name, partial(node.connection_class, **kwargs))
        return link

    def _translated(self, exc: Exception) -> Exception:
        """Our error for a driver's: an outage, a refusal, or a key of another layout.

        ``NoScriptError`` passes through (``script`` loads the script and runs it again), as does
        anything that is not the driver's.
        """
        if isinstance(exc, rexc.ConnectionError | rexc.TimeoutError | OSError):
            return self._unavailable(exc)
        if isinstance(exc, rexc.RedisClusterException | rexc.ClusterError | rexc.TryAgainError):
            if "same key slot" in str(exc):  # refused by the client before sending
                return self._refused(rexc.ResponseError(f"CROSSSLOT {exc}"))
            if "No way to dispatch" in str(exc) or "Invalid args" in str(exc):
                return self._refused(rexc.ResponseError(str(exc)))
            # no reachable node, CLUSTERDOWN, MASTERDOWN, slots not covered: an outage
            return self._unavailable(exc)
        if isinstance(exc, rexc.ResponseError) and not isinstance(exc, rexc.NoScriptError):
            return self._refused(exc)
        return exc

    async def _load(self, source: str, sha: str) -> None:
        """SCRIPT LOAD ``source`` once for every request that met NOSCRIPT meanwhile.

        A burst of pipelined EVALSHAs on a server that lacks the script all fail with NOSCRIPT;
        the first starts the load, the others wait for that same load (shielded: a waiter that is
        cancelled does not cancel it for the rest).
        """
        loading = self._loading.get(sha)
        if loading is None or loading.get_loop() is not asyncio.get_running_loop():
            if self._connection is None:
                client = self._client  # a cluster loads it on every primary
                load = self._call(lambda: client.script_load(source), idempotent=True)
            else:
                load = self._pipelined(("SCRIPT", "LOAD", source), True, None)
            loading = self._loading[sha] = asyncio.ensure_future(load)

            def forget(done: asyncio.Future[Any]) -> None:
                if self._loading.get(sha) is done:
                    del self._loading[sha]

            loading.add_done_callback(forget)
        await asyncio.shield(loading)

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

    def _new_link(self, name: str, make: Callable[[], AbstractConnection]) -> _Link:
        """A new link to the node ``name``, replacing its broken one."""

        def requeue(requests: _Queue) -> None:
            """Requests a broken link never sent go out on a new one (sending them once is safe)."""
            if requests[0]:
                link = self._links.get(name)
                if link is None or link.error is not None:
                    link = self._new_link(name, make)
                link.take(requests)

        link = self._links[name] = _Link(make(), self._socket_timeout, requeue)
        return link
