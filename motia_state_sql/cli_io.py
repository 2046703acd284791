"""The work behind ``motia-state``: exit codes, import, export and copy, JSON Lines, progress bars.

``cli.py`` holds the click command tree and opens stores from URLs; the functions here take
adapters, so they serve (and are tested with) any backend, ``memory://`` included.

The JSON Lines format (``--format jsonl``) holds one item per line::

    {"group":"orders","key":"order-1","value":{"id":"order-1","total":9.5}}

``value`` is the item's JSON text exactly as stored, so a value written by Node keeps its
spelling (``1e+21``, key order, escapes) through an export and an import.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Final, NoReturn, TypeVar

import click

from . import codec
from .errors import InvalidKeyError, InvalidValueError, StateError, StoreUnavailableError

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from .base import JsonEntry, StateAdapter

__all__ = [
    "BIG_INTS",
    "EXIT_BAD_INPUT",
    "EXIT_CODES",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "FORMATS",
    "JSONL_FIELDS",
    "BadLineError",
    "CliError",
    "Entry",
    "NotFoundError",
    "ProgressBar",
    "UnavailableError",
    "atomic_output",
    "big_ints",
    "check_import",
    "copy_items",
    "count_items",
    "export_items",
    "format_of",
    "from_state_error",
    "import_items",
    "jsonl_line",
    "not_found",
    "parse_json",
    "parse_jsonl_line",
    "peek",
    "plural",
    "read_import_file",
    "stderr_is_terminal",
]

Entry = tuple[str, str, str]  # (group_id, key, json_text)
E = TypeVar("E")
Numbered = list[tuple[int, Entry]]  # with the line of the import file (0: no line numbers)

EXIT_OK: Final = 0
#: A group, key or database that is not there; a declined confirmation; ``db check`` failing.
EXIT_NOT_FOUND: Final = 1
#: Bad input: usage, malformed JSON, a corrupt import file, invalid keys/values/ops, conflicts.
EXIT_BAD_INPUT: Final = 2
#: The store could not be reached in time (locked past its busy timeout, disk full, server down).
EXIT_UNAVAILABLE: Final = 3
EXIT_CODES: Final = {
    EXIT_OK: "success",
    EXIT_NOT_FOUND: "not found (group, key, database); declined; db check failed",
    EXIT_BAD_INPUT: "bad input (usage, JSON, import file, key, value, conflict)",
    EXIT_UNAVAILABLE: "store unavailable (locked past its timeout, disk full)",
}

#: ``--format`` choices: Motia's ``motia.state.json``, or JSON Lines.
FORMATS: Final = ("motia", "jsonl")
#: ``import --big-ints`` choices for integers beyond signed 64-bit (see ``big_ints``).
BIG_INTS: Final = ("refuse", "double")
#: The fields of one JSON Lines item, all required, no others allowed.
JSONL_FIELDS: Final = ("group", "key", "value")
_WHITESPACE: Final = " \t\n\r"
_PROGRESS_STEP: Final = 1000


class CliError(click.ClickException):
    """Bad input, shown as one line on stderr (``Error: ...``); exit code 2."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class NotFoundError(CliError):
    """A group, key or database that is not there, or a failed check; exit code 1."""

    exit_code = EXIT_NOT_FOUND


class UnavailableError(CliError):
    """The store could not be reached in time; exit code 3."""

    exit_code = EXIT_UNAVAILABLE


def not_found(message: str) -> NoReturn:
    """Stop with ``message`` and exit code 1.

    Raises:
        NotFoundError: always.
    """
    raise NotFoundError(message)


def from_state_error(exc: StateError, context: str = "") -> CliError:
    """The command line error for one of the package's errors, its message prefixed by ``context``."""
    kind = UnavailableError if isinstance(exc, StoreUnavailableError) else CliError
    return kind(f"{context}{exc}")


def plural(count: int, word: str) -> str:
    """``"1 item"``, ``"2 items"``."""
    return f"{count} {word}{'' if count == 1 else 's'}"


class BadLineError(ValueError):
    """A line of a JSON Lines file is not one item; the message says what is wrong (no location)."""


# Python's decoder gives positions (``raw_decode``), which keeps values verbatim; ``parse_constant``
# refuses the NaN/Infinity extension it would otherwise accept.
_DECODER: Final = json.JSONDecoder(parse_constant=codec.refuse_constant)


# A JSON Lines item spread over several lines is the usual cause of a line ending too early.
_UNFINISHED: Final = "the line ends before the item does (JSON Lines holds one whole item per line)"


def _explain(exc: ValueError | RecursionError, line: str) -> str:
    if isinstance(exc, json.JSONDecodeError):
        if exc.pos >= len(line.rstrip(_WHITESPACE)):
            return _UNFINISHED
        return f"{exc.msg} at column {exc.pos + 1}"  # colno counts from the line's own \n
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)


def parse_json(text: str) -> Any:
    """Parse strict JSON text (no ``NaN``/``Infinity``, no trailing data).

    Raises:
        ValueError: the text is not one JSON value; the message gives line and column.
    """
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _skip(line: str, pos: int) -> int:
    while pos < len(line) and line[pos] in _WHITESPACE:
        pos += 1
    return pos


def _expect(line: str, pos: int, chars: str, what: str) -> int:
    if pos >= len(line) or line[pos] not in chars:
        if pos >= len(line):
            raise BadLineError(f"{_UNFINISHED}: {what} was expected next")
        found = repr(line[pos])
        raise BadLineError(f"expected {what} at column {pos + 1}, found {found}")
    return pos


def parse_jsonl_line(line: str) -> tuple[str, str, str]:
    """Read one JSON Lines item as ``(group, key, value_json_text)``; the value text is verbatim.

    Raises:
        BadLineError: not a JSON object with exactly the fields ``group`` (string), ``key``
            (string) and ``value`` (any JSON value), each once.
    """
    fields: dict[str, tuple[Any, str]] = {}
    pos = _skip(line, _expect(line, _skip(line, 0), "{", "'{'") + 1)
    try:
        if line.startswith("}", pos):
            pos += 1
        else:
            while True:
                _expect(line, pos, '"', "a field name")
                name, pos = _DECODER.raw_decode(line, pos)
                pos = _skip(line, _expect(line, _skip(line, pos), ":", "':'") + 1)
                start = pos
                value, pos = _DECODER.raw_decode(line, pos)
                if name in fields:
                    raise BadLineError(f"field {name!r} appears twice")
                if name not in JSONL_FIELDS:
                    raise BadLineError(
                        f"unknown field {name!r}; an item has exactly the fields {', '.join(JSONL_FIELDS)}"
                    )
                fields[name] = (value, line[start:pos])
                pos = _expect(line, _skip(line, pos), ",}", "',' or '}'") + 1
                if line[pos - 1] == "}":
                    break
                pos = _skip(line, pos)
    except BadLineError:
        raise
    except (ValueError, RecursionError) as exc:
        raise BadLineError(_explain(exc, line)) from None
    pos = _skip(line, pos)
    if pos != len(line):
        raise BadLineError(f"unexpected text after the object at column {pos + 1}")
    missing = [name for name in JSONL_FIELDS if name not in fields]
    if missing:
        raise BadLineError(f"missing field(s) {', '.join(missing)}")
    group, key = fields["group"][0], fields["key"][0]
    for name, given in (("group", group), ("key", key)):
        if type(given) is not str:
            raise BadLineError(f"{name} must be a string, got {json.dumps(given)}")
    return group, key, fields["value"][1]


def big_ints(group_id: str, key: str, text: str, mode: str) -> str:
    """Deal with integers beyond signed 64-bit in the JSON ``text`` of an imported value.

    Node writes every number as a double, and ``JSON.stringify(2**64)`` is
    ``18446744073709552000``: valid JSON, but an integer the store refuses (``set`` would too).

    Args:
        group_id: the item's group, for messages.
        key: the item's key, for messages.
        text: the value's JSON text (returned unchanged when it holds no such integer, or is
            not JSON at all: the value checks report that).
        mode: ``"refuse"``: raise, naming the item, the JSON path and the way on;
            ``"double"``: spell each such integer as the double it means in JavaScript
            (``1.8446744073709552e+19``), leaving every other byte of ``text`` as it is.

    Raises:
        InvalidValueError: ``mode`` is ``"refuse"``, or an integer is beyond a double's range.
    """
    beyond, infinite = codec.big_ints_in(text)
    if beyond is None:
        return text
    label = f"value of {group_id!r}/{key!r}"
    if infinite is not None:
        path, number = infinite
        raise InvalidValueError(
            f"{label} at {path}: integer {codec.shown_int(number)} is beyond the range of a double "
            "(JavaScript reads it as Infinity); make it a string in the file"
        )
    if mode == "refuse":
        path, number = beyond
        raise InvalidValueError(
            f"{label} at {path}: integer {number} exceeds signed 64-bit (Node writes the double "
            f"{float(number)!r} this way): import with --big-ints double to store that double, or "
            "make it a string in the file"
        )
    return codec.as_doubles(text)


def jsonl_line(group_id: str, key: str, text: str) -> str:
    """One JSON Lines item (ending in a newline) holding the stored JSON ``text`` verbatim."""
    # Raw CR/LF can only be whitespace between JSON tokens (strings must escape them), so
    # turning them into spaces keeps the value and keeps it on one line.
    if "\n" in text or "\r" in text:
        text = text.replace("\r", " ").replace("\n", " ")
    group = json.dumps(group_id, ensure_ascii=False)
    name = json.dumps(key, ensure_ascii=False)
    return f'{{"group":{group},"key":{name},"value":{text}}}\n'


@contextlib.contextmanager
def atomic_output(path: str | None) -> Iterator[IO[bytes]]:
    """Yield a binary stream: stdout for ``None``/``"-"``, else a temp file renamed onto ``path``.

    The file appears only once everything was written, so a failed export never leaves a
    truncated file behind; an existing file keeps its permissions.

    Raises:
        OSError: the folder cannot be written.
    """
    if path is None or path == "-":
        sys.stdout.flush()  # text written before must come first
        stream = sys.stdout.buffer
        yield stream
        stream.flush()
        return
    from .file import replacing

    with replacing(Path(path)) as handle:
        yield handle


def stderr_is_terminal() -> bool:
    """True when stderr is a terminal (progress bars are drawn only then)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


class ProgressBar:
    """A rich progress bar on stderr when it is a terminal; does nothing otherwise."""

    __slots__ = ("_bar", "_task")

    def __init__(self, description: str, total: int | None, unit: str = "items") -> None:
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        if not stderr_is_terminal():
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(unit),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._task = self._bar.add_task(description, total=total)

    @staticmethod
    def wanted() -> bool:
        """Whether a bar would be drawn (so a total is worth counting first)."""
        return stderr_is_terminal()

    def update(self, completed: int, total: int) -> None:
        """Show ``completed`` of ``total`` (for work whose total is learnt as it goes)."""
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=completed, total=total)

    def advance(self, count: int) -> None:
        """Move the bar forward by ``count`` items."""
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, count)

    def __enter__(self) -> ProgressBar:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()


# -- import, export, copy ---------------------------------------------------------------------


def _nothing(count: int) -> None:
    """The progress callback when nobody watches."""


def format_of(path: str | os.PathLike[str] | None, given: str | None) -> str:
    """``given``, else ``"jsonl"`` for a ``.jsonl`` path, else ``"motia"``."""
    if given is not None:
        return given
    return "jsonl" if path is not None and str(path).lower().endswith(".jsonl") else "motia"


def _read_jsonl(path: Path, mode: str, data: bytes | None) -> Numbered:
    found: Numbered = []
    seen: dict[tuple[str, str], int] = {}
    # Binary lines: split on \n only, never on U+2028.
    with path.open("rb") if data is None else io.BytesIO(data) as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CliError(f"{path}:{number}: not UTF-8 text ({exc.reason})") from None
            if number == 1:
                line = line.removeprefix("\ufeff")
            if not line.strip(_WHITESPACE):
                continue
            try:
                group, key, text = parse_jsonl_line(line)
                entry = (group, key, big_ints(group, key, text, mode))
            except (BadLineError, InvalidValueError) as exc:
                raise CliError(f"{path}:{number}: {exc}") from None
            first = seen.setdefault(entry[:2], number)
            if first != number:
                raise CliError(f"{path}:{number}: group {entry[0]!r} key {entry[1]!r} repeats line {first}")
            found.append((number, entry))
    return found


def read_import_file(path: Path, fmt: str, big: str = "refuse", data: bytes | None = None) -> Numbered:
    """Every item of an import file, checked before anything is written, with its line number.

    Args:
        path: the file (only its name in messages when ``data`` is given).
        fmt: ``"motia"`` (line numbers are 0) or ``"jsonl"``.
        big: what to do with integers beyond signed 64-bit (``big_ints``'s ``mode``).
        data: the file's bytes, when they were read already (from stdin).

    Raises:
        CliError: a line of a JSON Lines file is malformed, or repeats a group and key.
        SchemaError: a ``motia.state.json`` is not in Motia's format (names the entry).
        OSError: the file cannot be read.
    """
    if fmt == "jsonl":
        return _read_jsonl(path, big, data)
    from .file import read_motia_json

    adjust = lambda group_id, key, text: big_ints(group_id, key, text, big)  # noqa: E731
    return [(0, entry) for entry in read_motia_json(path, adjust, data)]


def _groups_in(entries: Sequence[Entry]) -> int:
    return len({group for group, _, _ in entries})


def _where(path: Path, number: int, group: str, key: str) -> str:
    """Where an import item came from, as an error message prefix."""
    return f"{path}:{number}: " if number else f"{path}: entry {group}:{key}: "


def check_import(state: StateAdapter, path: Path, numbered: Numbered) -> None:
    """Check every item as ``state.set_json`` would, without opening or creating the store.

    ``check_set_json`` runs the checks of ``set_json``: names (with the backend's own rules, such
    as no ``:`` in a group of Motia's JSON file), the JSON text and ``max_value_bytes``. A refused
    import therefore leaves no trace, not even a new empty file.

    Raises:
        CliError: an item the store would refuse (names the file and the line or entry).
    """
    for number, (group, key, text) in numbered:
        try:
            state.check_set_json(group, key, text)
        except StateError as exc:
            raise from_state_error(exc, _where(path, number, group, key)) from None


async def import_items(
    state: StateAdapter, path: Path, numbered: Numbered, advance: Callable[[int], None] = _nothing
) -> tuple[int, int]:
    """Write the items read from ``path`` in one transaction; return (items, groups).

    Raises:
        CliError: an item the store refuses (names the file and the line or entry); nothing of
            the file is written.
    """
    async with state.transaction() as tx:
        for done, (number, (group, key, text)) in enumerate(numbered, start=1):
            try:
                await tx.set_json(group, key, text)
            except StateError as exc:
                raise from_state_error(exc, _where(path, number, group, key)) from None
            if done % _PROGRESS_STEP == 0:
                advance(_PROGRESS_STEP)
    advance(len(numbered) % _PROGRESS_STEP)
    return len(numbered), _groups_in([entry for _, entry in numbered])


async def peek(entries: AsyncIterator[E]) -> tuple[E | None, AsyncIterator[E]]:
    """The first entry (``None`` when there is none) and an iterator over all of them."""
    first = await anext(entries, None)

    async def chained() -> AsyncIterator[E]:
        if first is not None:
            yield first
            async for entry in entries:
                yield entry

    return first, chained()


async def count_items(state: StateAdapter, group: str | None) -> int:
    """How many live items the store (or one group) holds, counted in a streaming pass."""
    return sum([1 async for _ in state.iter_json(group, batch_size=10_000)])


async def export_items(
    entries: AsyncIterator[Entry],
    fmt: str,
    output: str | None,
    advance: Callable[[int], None] = _nothing,
) -> tuple[int, int]:
    """Write ``entries`` (from ``iter_json``) to ``output`` (stdout for ``None``); return (items, groups).

    ``motia``: the bytes Motia writes for the same state (built in memory, as Motia's file is).
    ``jsonl``: streamed, one item per line. A file appears only once complete.

    Raises:
        CliError: a group holds ``:``, which ``motia.state.json`` cannot represent; nothing is
            written.
        OSError: the output cannot be written.
    """
    if fmt == "motia":
        collected: list[Entry] = []
        async for entry in entries:
            try:
                codec.check_motia_group(entry[0], "motia.state.json", "export with --format jsonl")
            except InvalidKeyError as exc:
                raise CliError(str(exc)) from None
            collected.append(entry)
            advance(1)
        from .file import dump_motia_json

        data = dump_motia_json(collected)
        with atomic_output(output) as out:
            out.write(data)
        return len(collected), _groups_in(collected)
    count = groups = 0
    last: str | None = None
    with atomic_output(output) as out:
        async for group_id, key, text in entries:
            out.write(jsonl_line(group_id, key, text).encode())
            count += 1
            if group_id != last:
                groups, last = groups + 1, group_id
            advance(1)
    return count, groups


async def _write_batch(target: StateAdapter, batch: list[JsonEntry], copied: int) -> None:
    try:
        async with target.transaction() as tx:
            now = time.time()
            for group, key, text, expires_at in batch:
                if expires_at is None:
                    await tx.set_json(group, key, text)
                elif expires_at > now:  # the item keeps its expiry; one that expired meanwhile is gone
                    await tx.set_json(group, key, text, ttl=expires_at - now)
    except StateError as exc:
        raise from_state_error(exc, f"copy stopped after {plural(copied, 'item')}: ") from None


async def copy_items(
    entries: AsyncIterator[JsonEntry],
    target: StateAdapter,
    batch_size: int,
    advance: Callable[[int], None] = _nothing,
) -> tuple[int, int]:
    """Write ``entries`` (from ``iter_entries``) to ``target``, ``batch_size`` per transaction.

    Items keep their expiry; a target that cannot hold one (Motia's JSON file) refuses it.

    Holds one batch at a time, so memory does not grow with the store. Returns (items, groups).

    Raises:
        CliError: the target refused an item (says how many were copied before); the batches
            written before stay.
    """
    copied = groups = 0
    last: str | None = None
    batch: list[JsonEntry] = []
    async for entry in entries:
        batch.append(entry)
        if entry[0] != last:
            groups, last = groups + 1, entry[0]
        if len(batch) >= batch_size:
            await _write_batch(target, batch, copied)
            copied += len(batch)
            advance(len(batch))
            batch = []
    if batch:
        await _write_batch(target, batch, copied)
        copied += len(batch)
        advance(len(batch))
    return copied, groups
