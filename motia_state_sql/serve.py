"""``motia-state serve --stdio``: the store behind the Node adapter (``node/``), as a line-delimited JSON RPC.

The Node package ``motia-state-sql`` (``SqlStateAdapter``) starts one long-lived process running
this module and forwards every call of Motia's ``StateAdapter`` to it, so the semantics live once,
in Python. Protocol, one request per line on stdin, one answer per line on stdout:

- request: a JSON object ``{"id": int, "m": method, "a": [args...], "tx": tx id?}``, then, for
  ``set`` only, a TAB and the value as the JSON text ``JSON.stringify`` made. ``JSON.stringify``
  escapes every TAB and newline inside strings, so the first TAB of a line ends the header.
- answer: ``{"id": int, "ok": result}`` or ``{"id": int, "error": {"name": ..., "message": ...}}``
  where ``name`` is the class of one of our errors (``InvalidValueError``, ``SchemaError``...).
- the first line out, id 0, says the store is open (``{"url": ..., "version": ...}``) or why not.

Requests run concurrently and are answered as they finish, in any order, so the writes of
concurrent Motia steps share the SQLite group commit. A transaction is a task holding
``adapter.transaction()`` open: ``begin`` answers its id, calls carrying that ``tx`` run in it in
arrival order, and ``commit`` or ``rollback`` ends it. On stdin EOF (the Node process exited or
closed us) the server finishes what is in flight, rolls back open transactions and closes the store.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import stat
import sys
import traceback
from collections.abc import Callable
from typing import Any, Final

import orjson

from . import __version__, codec
from .base import StateAdapter, StateOperations, StateTransaction
from .errors import InvalidOperationError, InvalidValueError, StateError
from .places import store_url
from .redact import redact
from .rows import StateItem
from .url import open_state

__all__ = ["node_json", "serve", "serve_stdio"]

#: The longest request line read (a 16 MiB value escaped by JSON.stringify stays far below).
MAX_LINE: Final = 1 << 30
_LONG_DIGITS: Final = re.compile(rb"\d{19}")
#: Number.MAX_SAFE_INTEGER: the largest integer every JS number up to it holds exactly.
_MAX_SAFE_INTEGER: Final = 2**53 - 1


def _node_int(text: str) -> int | float:
    """An integer literal from Node: exact when it fits signed 64-bit, else the double JS meant.

    JS numbers are doubles, so ``JSON.stringify(1e19)`` writes ``10000000000000000000``: beyond
    signed 64-bit such a literal can only have been a double, and it is stored as that double.
    """
    value = int(text)
    return value if codec.INT64_MIN <= value <= codec.INT64_MAX else float(text)


def node_json(text: str | bytes) -> Any:
    r"""Parse JSON text written by Node's ``JSON.stringify`` with this project's number policy.

    orjson reads most lines; it refuses lone surrogates (``JSON.stringify('\\ud83d')``) and reads
    literals beyond 64 bits as floats but 2**63..2**64-1 as ints, so lines it refuses or that
    hold a 19-digit run go through the standard parser with ``_node_int``. A lone surrogate comes
    out as a Python ``str`` holding it, which ``codec`` refuses as a value or key afterwards.

    Raises:
        ValueError: not JSON text.
    """
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if _LONG_DIGITS.search(raw) is None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    text = raw.decode("utf-8", "surrogatepass")
    return json.loads(text, parse_int=_node_int, parse_constant=codec.refuse_constant)


def _version(value: object, what: str) -> int | None:
    """A version from Node: a decimal string (versions exceed 2**53) or a safe integer.

    A JS number beyond 2**53 (``Number(item.version)``) was rounded before it was sent: it could
    name another version of the key, so it is refused, never compared.
    """
    if value is None:
        return None
    if type(value) is str and re.fullmatch(r"-?\d{1,20}", value):
        return int(value)
    if type(value) is int and abs(value) <= _MAX_SAFE_INTEGER:
        return value
    if isinstance(value, int | float) and type(value) is not bool and abs(value) > _MAX_SAFE_INTEGER:
        raise InvalidOperationError(
            f"{what} {value!r} is a JS number beyond 2**53, rounded before it was sent: "
            "pass the version as the decimal string getItem returned"
        )
    raise InvalidOperationError(f"{what} must be a version as a decimal string (from getItem), got {value!r}")


def _type(value: Any) -> str:
    """The ``type`` Motia's own adapters report for a value (their ``inferType``)."""
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def _item(item: StateItem) -> dict[str, Any]:
    return {
        "groupId": item.group_id,
        "key": item.key,
        "value": item.value,
        "version": None if item.version is None else str(item.version),
        "createdAt": _ms(item.created_at),
        "updatedAt": _ms(item.updated_at),
        "expiresAt": _ms(item.expires_at),
    }


def _options(args: list[Any], at: int) -> dict[str, Any]:
    given = args[at] if len(args) > at and args[at] is not None else {}
    if not isinstance(given, dict):
        raise InvalidOperationError(f"options must be an object, got {given!r}")
    unknown = set(given) - {"ttl", "ifVersion", "ifAbsent"}
    if unknown:
        raise InvalidOperationError(
            f"unknown option(s) {sorted(unknown)}; accepted: ttl, ifVersion, ifAbsent"
        )
    return given


def _arg(args: list[Any], at: int) -> Any:
    return args[at] if len(args) > at else None


async def _call(ops: StateOperations, method: str, args: list[Any], value_text: str | None) -> Any:
    """Run one method of the Node adapter's API on ``ops`` (the adapter or a transaction)."""
    group, key = _arg(args, 0), _arg(args, 1)
    if method == "get":
        return await ops.get(group, key)
    if method == "set":
        options = _options(args, 2)
        group = codec.check_name("group_id", group)
        key = codec.check_name("key", key, group)
        if value_text is None:
            raise InvalidValueError(f"value of {group!r}/{key!r} is missing (undefined cannot be stored)")
        text = codec.from_node(value_text, group, key, ops.max_value_bytes)
        await ops.set_json(
            group,
            key,
            text,
            ttl=options.get("ttl"),
            if_version=_version(options.get("ifVersion"), "ifVersion"),
            if_absent=options.get("ifAbsent", False),
        )
        return None
    if method == "delete":
        options = _options(args, 2)
        return await ops.delete(
            group,
            key,
            if_version=_version(options.get("ifVersion"), "ifVersion"),
            if_absent=options.get("ifAbsent", False),
        )
    if method == "update":
        options = _options(args, 3)
        result = await ops.update(
            group,
            key,
            _arg(args, 2),
            if_version=_version(options.get("ifVersion"), "ifVersion"),
            if_absent=options.get("ifAbsent", False),
        )
        return {"oldValue": result.old_value, "newValue": result.new_value}
    if method == "getItem":
        item = await ops.get_item(group, key)
        return None if item is None else _item(item)
    if method == "getGroup":
        return await ops.get_group(group)
    if method == "clear":
        await ops.clear(group)
        return None
    if method == "keys":
        return await ops.keys(group)
    if method == "traceIds":
        return await ops.list_groups()
    if method == "items":
        query = group if group is not None else {}
        if not isinstance(query, dict):
            raise InvalidOperationError(f"items() takes {{groupId?, filter?}}, got {query!r}")
        found = await ops.items(query.get("groupId"), query.get("filter"))
        return [
            {"groupId": i.group_id, "key": i.key, "type": _type(i.value), "value": i.value} for i in found
        ]
    raise InvalidOperationError(f"unknown method {method!r}")


class _Rollback(Exception):
    """Raised inside a transaction's block to roll it back."""


class _Transaction:
    """A task holding ``adapter.transaction()`` open; its calls run one at a time, in order."""

    def __init__(self, adapter: StateAdapter) -> None:
        self.queue: asyncio.Queue[tuple[str, list[Any], str | None, asyncio.Future[Any]]] = asyncio.Queue()
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.task = asyncio.create_task(self._run(adapter))

    async def _run(self, adapter: StateAdapter) -> None:
        try:
            async with adapter.transaction() as tx:
                self.opened.set_result(None)
                await self._serve(tx)
        except _Rollback:
            pass
        except BaseException as exc:
            if not self.opened.done():
                self.opened.set_exception(exc)
                return
            raise

    async def _serve(self, tx: StateTransaction) -> None:
        while True:
            method, args, value_text, answer = await self.queue.get()
            if method in ("commit", "rollback"):
                if method == "rollback":
                    raise _Rollback
                return
            try:
                answer.set_result(await _call(tx, method, args, value_text))
            except Exception as exc:
                answer.set_exception(exc)

    async def submit(self, method: str, args: list[Any], value_text: str | None) -> Any:
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.task.done():
            raise StateError("this transaction has ended; start a new one")
        await self.queue.put((method, args, value_text, answer))
        if method in ("commit", "rollback"):
            await self.task  # raises the commit's error (ConflictError on Redis...)
            return None
        return await answer


class Server:
    """Runs each request in its own task and sends each answer when it is ready.

    A request alone in flight is answered at once; answers finishing together (many requests in
    flight) leave in one write at the end of the loop turn, not one write each.
    """

    def __init__(self, adapter: StateAdapter, out: _Output) -> None:
        self.adapter = adapter
        self.out = out
        self.transactions: dict[str, _Transaction] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._answers: list[bytes] | None = None  # gathered for one write this loop turn

    def handle(self, line: bytes) -> None:
        """Start answering one request line."""
        task = asyncio.create_task(self._answer(line))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, line: bytes) -> None:
        header, tab, tail = line.rstrip(b"\r\n").partition(b"\t")
        request_id: Any = None
        try:
            try:
                request = node_json(header)
            except (ValueError, RecursionError) as exc:
                raise InvalidOperationError(f"request is not JSON: {exc}") from None
            if not isinstance(request, dict):
                raise InvalidOperationError(f"request must be an object, got {request!r}")
            request_id = request.get("id")
            args = request.get("a") or []
            if not isinstance(args, list):
                raise InvalidOperationError(f"request args must be a list, got {args!r}")
            value_text = tail.decode("utf-8", "surrogatepass") if tab else None
            result = await self._dispatch(str(request.get("m")), args, value_text, request.get("tx"))
            out = {"id": request_id, "ok": result}
        except Exception as exc:
            out = {"id": request_id, "error": error_payload(exc)}
        data = _dumps(out)
        if self._answers is not None:
            self._answers.append(data)
        elif len(self.tasks) <= 1:  # this request alone: nothing to wait for
            self.out.write(data)
        else:
            self._answers = [data]
            asyncio.get_running_loop().call_soon(self._send_answers)
        await self.out.pressure()

    def _send_answers(self) -> None:
        if self._answers is not None:
            self.out.write(b"".join(self._answers))
            self._answers = None

    async def _dispatch(self, method: str, args: list[Any], value_text: str | None, tx_id: object) -> Any:
        if method == "begin":
            tx = _Transaction(self.adapter)
            await tx.opened
            name = str(next(self._ids))
            self.transactions[name] = tx
            return name
        if tx_id is not None:
            held = self.transactions.get(str(tx_id))
            if held is None:
                raise StateError(f"transaction {tx_id!r} has ended (or never began); start a new one")
            if method in ("commit", "rollback"):
                del self.transactions[str(tx_id)]
            return await held.submit(method, args, value_text)
        if method in ("commit", "rollback"):
            raise InvalidOperationError(f"{method} needs a transaction id")
        if method == "ping":
            return None
        return await _call(self.adapter, method, args, value_text)

    async def finish(self) -> None:
        """Wait for the requests in flight, then roll back what is still open."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)
        self._send_answers()
        for name, tx in list(self.transactions.items()):
            del self.transactions[name]
            await asyncio.gather(tx.submit("rollback", [], None), return_exceptions=True)


def error_payload(exc: BaseException) -> dict[str, str]:
    """The ``error`` of an answer: our error's class name and message; anything else is a bug."""
    if isinstance(exc, StateError):
        return {"name": type(exc).__name__, "message": str(exc)}
    detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return {
        "name": "StateError",
        "message": f"internal error in motia-state-sql (please report it): {detail}",
    }


def _dumps(answer: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(answer) + b"\n"
    except orjson.JSONEncodeError:  # a message quoting a lone surrogate: json escapes it
        return json.dumps(answer).encode() + b"\n"


class _Output:
    """Answers out on ``fd``: an asyncio pipe when it is one, else plain blocking writes."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.transport: asyncio.WriteTransport | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        mode = os.fstat(self.fd).st_mode
        if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            loop = asyncio.get_running_loop()
            self.transport, protocol = await loop.connect_write_pipe(
                asyncio.streams.FlowControlMixin, os.fdopen(self.fd, "wb", buffering=0, closefd=False)
            )
            self.writer = asyncio.StreamWriter(self.transport, protocol, None, loop)

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)
            return
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]

    async def pressure(self) -> None:
        """Wait while more than 1 MiB is waiting to be written (a reader far behind)."""
        too_much = self.transport is not None and self.transport.get_write_buffer_size() > 1 << 20
        if too_much and self.writer is not None:
            await self.writer.drain()

    async def flush(self) -> None:
        if self.writer is not None:
            await self.writer.drain()


class _Lines(asyncio.Protocol):
    """stdin as request lines, each handed on as soon as its bytes arrive.

    No task, future or wait per line; lines arriving before ``start`` are kept for it.
    """

    def __init__(self) -> None:
        self.handle: Callable[[bytes], None] | None = None
        self.early: list[bytes] = []
        self.partial = bytearray()
        self.dropping = False  # inside a line over MAX_LINE
        self.stopped = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def start(self, handle: Callable[[bytes], None]) -> None:
        self.handle = handle
        for line in self.early:
            handle(line)
        self.early.clear()

    def data_received(self, data: bytes) -> None:
        end = data.find(b"\n")
        if end < 0:
            self._keep(data)
            return
        if self.partial or self.dropping:
            first = bytes(self.partial) + data[: end + 1]
            self.partial.clear()
            if self.dropping:
                self.dropping = False
            else:
                self._line(first)
        else:
            self._line(data[: end + 1])
        start = end + 1
        while (end := data.find(b"\n", start)) >= 0:
            self._line(data[start : end + 1])
            start = end + 1
        self._keep(data[start:])

    def _keep(self, data: bytes) -> None:
        if self.dropping or not data:
            return
        self.partial += data
        if len(self.partial) > MAX_LINE:  # its id is unknown, so the caller times out
            print(f"motia-state serve: a request over {MAX_LINE} bytes was dropped", file=sys.stderr)
            self.partial.clear()
            self.dropping = True

    def _line(self, line: bytes) -> None:
        if self.stopped or not line.strip():
            return
        if self.handle is None:
            self.early.append(line)
        else:
            self.handle(line)

    def eof_received(self) -> bool:
        if self.partial and not self.dropping:  # a last line without its newline
            self._line(bytes(self.partial))
        self.partial.clear()
        self._close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._close()

    def _close(self) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def serve(url: str | None, stdin: int = 0, stdout: int = 1) -> int:
    """Serve the store at ``url`` on the file descriptors ``stdin``/``stdout`` until EOF.

    Returns:
        The exit status: 0 after EOF, 1 when the store could not be opened.
    """
    loop = asyncio.get_running_loop()
    lines = _Lines()
    await loop.connect_read_pipe(lambda: lines, os.fdopen(stdin, "rb", buffering=0, closefd=False))
    out = _Output(stdout)
    await out.open()

    shown = redact(store_url(url))
    try:
        adapter = open_state(url)
        # Open the store now (schema check, connection): a broken store fails the first call.
        await adapter.get("motia-state-sql", "serve")
    except Exception as exc:
        out.write(_dumps({"id": 0, "error": error_payload(exc)}))
        await out.flush()
        return 1
    out.write(_dumps({"id": 0, "ok": {"url": shown, "version": __version__, "pid": os.getpid()}}))
    server = Server(adapter, out)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    try:
        lines.start(server.handle)
        await asyncio.wait({lines.closed, stopping}, return_when=asyncio.FIRST_COMPLETED)
        lines.stopped = True  # after SIGTERM or EOF: no new requests
        await server.finish()
    finally:
        stopping.cancel()
        await adapter.close()
        await out.flush()
    return 0


def serve_stdio(url: str | None) -> int:
    """Serve ``url`` on stdin/stdout until stdin closes (``motia-state serve --stdio``); the exit code."""
    # Ctrl-C in a terminal reaches the whole process group: the Node side decides when we stop
    # (it closes our stdin), so an interrupt never cuts a write short here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    profile_to = os.environ.get(PROFILE_VAR)
    return _profiled(url, profile_to) if profile_to else asyncio.run(serve(url))


#: Set to a file path, the serve process runs under pyinstrument (a dev dependency) and writes its
#: text profile there on exit: how ``benchmarks/node_bench.mjs`` profiles the Python side of a miss.
PROFILE_VAR: Final = "MOTIA_STATE_SQL_PROFILE"


def _profiled(url: str | None, path: str) -> int:
    """:func:`serve` under pyinstrument (wall clock, the whole process); the profile to ``path``."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0002, async_mode="disabled")
    profiler.start()
    try:
        return asyncio.run(serve(url))
    finally:
        profiler.stop()
        with open(path, "w", encoding="utf-8") as out:
            out.write(profiler.output_text(unicode=False, color=False, show_all=False))

