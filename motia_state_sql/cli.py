"""The ``motia-state`` command line: inspect state, migrate SQLite schemas, import, export, copy.

Every command takes ``--url`` (else ``$MOTIA_STATE_URL``, else ``.motia/motia.state.db``), prints
rich tables for people and ``--json`` for scripts, and turns the package's errors into one line
on stderr with a documented exit code (``EXIT_CODES``). Reference: ``docs/cli.md``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import urlsplit

import click
import orjson

from . import __version__
from .cli_io import (
    BIG_INTS,
    EXIT_BAD_INPUT,
    EXIT_CODES,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    FORMATS,
    CliError,
    NotFoundError,
    ProgressBar,
    UnavailableError,
    atomic_output,
    check_import,
    copy_items,
    count_items,
    export_items,
    format_of,
    from_state_error,
    import_items,
    not_found,
    parse_json,
    peek,
    plural,
    read_import_file,
)
from .errors import SchemaError, StateError
from .options import parse_age
from .places import DEFAULT_URL, ENV_VAR, FILE_NAME, store_url
from .redact import redact

# Only what --help needs is imported up here: click and the package's plain modules. Every
# command imports the backends, admin and asyncio when it runs, so `motia-state --help` starts
# in tens of milliseconds (`python -X importtime -m motia_state_sql --help` shows what it loads).
if TYPE_CHECKING:
    import sqlite3

    from . import admin
    from .base import IdleGroup, StateAdapter, StoreInfo
    from .rows import StateItem

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_CODES",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "CliError",
    "NotFoundError",
    "UnavailableError",
    "main",
]

T = TypeVar("T")

_URL_HELP: Final = (
    f"The store, as a URL open_state accepts (sqlite:///PATH, postgresql://HOST/DB, redis://HOST, "
    "file:///DIR, ...). "
    f"Default: ${ENV_VAR}, else {DEFAULT_URL}."
)


class _Group(click.Group):
    """Maps the package's errors, and OS errors on the files it was given, to one-line messages."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            result = super().invoke(ctx)
            sys.stdout.flush()  # a reader gone away shows here, not as "Exception ignored" at exit
            return result
        except StateError as exc:
            raise from_state_error(exc) from None
        except BrokenPipeError:
            # A reader such as `head` took what it wanted and closed the pipe: not a failure of
            # ours (exit 0, so `set -o pipefail` scripts go on), and nothing more to say.
            _discard_stdout()
            ctx.exit(EXIT_OK)
        except OSError as exc:  # a file named on the command line: "PATH: No such file or directory"
            where = f"{exc.filename}: " if exc.filename else ""
            raise CliError(f"{where}{exc.strerror or exc}") from None


def _discard_stdout() -> None:
    """Point stdout at /dev/null: what is still buffered for a closed pipe can never be written."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):  # not a real file (CliRunner): nothing buffered
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _run(work: Coroutine[Any, Any, T]) -> T:
    import asyncio

    return asyncio.run(work)


# -- opening stores ---------------------------------------------------------------------------


def _location(adapter: StateAdapter) -> Path | None:
    from .admin import store_file

    return store_file(adapter)


def _label(url: str | None) -> str:
    """The store a command works on, as it may be printed."""
    return redact(store_url(url))


def _same_store(source: StateAdapter, target: StateAdapter, source_url: str, target_url: str) -> bool:
    from .memory import MemoryStateAdapter
    from .sqlite import SqliteStateAdapter

    here, there = _location(source), _location(target)
    if here is not None and there is not None:
        return here.resolve() == there.resolve()
    in_process = isinstance(source, MemoryStateAdapter) or (
        isinstance(source, SqliteStateAdapter) and source.path == ":memory:"
    )
    return source_url == target_url and not in_process


def _adapter(url: str | None, *, only_given: bool = False, read_only: bool = False) -> StateAdapter:
    """An adapter for ``url``, not yet connected.

    ``only_given``: a new SQLite database takes only what the command writes, not also the
    ``motia.state.json`` lying beside it (the adapter's one-time legacy import).
    ``read_only``: the command only reads: the store is opened read-only (nothing migrated,
    imported or written), so it works on a file the user may only read.
    """
    from .sqlite import SqliteStateAdapter
    from .url import open_state

    adapter = open_state(url, read_only=True) if read_only else open_state(url)
    if only_given and isinstance(adapter, SqliteStateAdapter) and adapter.import_legacy:
        return open_state(url, import_legacy=False)  # the first one never connected: nothing to close
    return adapter


def _hint(where: Path, url: str | None) -> str:
    """What to try when the store at ``where`` does not exist."""
    legacy = where.parent / FILE_NAME
    if legacy.exists():
        return (
            f"; Motia's {legacy} is there: read it with --url file:{where.parent}, or copy it "
            f"into a new store with: motia-state import {legacy}"
        )
    return "" if url else f" (give --url or set ${ENV_VAR})"


@contextlib.asynccontextmanager
async def _entered(
    adapter: StateAdapter, url: str | None, *, create: bool, enter: bool = True
) -> AsyncIterator[StateAdapter]:
    """Open ``adapter``; unless ``create``, a store file that does not exist is not found.

    Unless ``enter``, the adapter is not opened first (``async with``), only closed at the end:
    its first call opens it (``store_info`` reports a schema behind head that opening refuses).
    """
    try:
        where = _location(adapter)
        if not create and where is not None and not where.exists():
            not_found(f"no state store at {where}{_hint(where, url)}")
        if enter:
            await adapter.__aenter__()
        yield adapter
    finally:
        await adapter.close()


def _opened(
    url: str | None, *, create: bool, only_given: bool = False, read_only: bool = False, enter: bool = True
) -> contextlib.AbstractAsyncContextManager[StateAdapter]:
    """Open the store at ``url`` (see ``_adapter`` and ``_entered``)."""
    adapter = _adapter(url, only_given=only_given, read_only=read_only)
    return _entered(adapter, url, create=create, enter=enter)


# -- output -----------------------------------------------------------------------------------


def _dumps(value: Any, *, pretty: bool = False) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 if pretty else 0).decode()


def _echo_json(value: Any) -> None:
    click.echo(_dumps(value))


def _stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


# A cell of plain output stays on its line and in its column whatever the name holds.
_PLAIN_ESCAPES: Final = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _table(columns: Sequence[str], rows: Sequence[Sequence[str]], empty: str) -> None:
    r"""Print rows for people on a terminal (a rich table), else as plain tab-separated lines.

    Plain lines have no header and no folding, one row per line, cells separated by tabs, with
    backslash, tab, CR and LF inside a cell written as ``\\``, ``\t``, ``\r``, ``\n``. The
    ``empty`` message goes to stderr then, so a pipe reads nothing when there is nothing.
    """
    if not _stdout_is_terminal():
        if not rows and empty:
            click.echo(empty, err=True)
        for row in rows:
            click.echo("\t".join(cell.translate(_PLAIN_ESCAPES) for cell in row))
        return
    if not rows:
        click.echo(empty)
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, highlight=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        # Text cells: a value holding "[bold]" is shown as written, never read as markup.
        table.add_row(*(Text(cell) for cell in row))
    Console(file=sys.stdout, highlight=False, soft_wrap=False).print(table)


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def _item_json(item: StateItem) -> dict[str, Any]:
    return {
        "group": item.group_id,
        "key": item.key,
        "value": item.value,
        "version": item.version,
        "created_at": item.created_at,
        "updated_at": item.updated_at,
        "expires_at": item.expires_at,
    }


# -- the command tree -------------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])


def _url_or_main(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A command's own ``--url``, else the one given before the command (``motia-state --url X``)."""
    if value is not None:
        return value
    given: str | None = ctx.find_root().params.get("url")
    return given


def _url_option(function: F) -> F:
    return click.option("--url", metavar="URL", default=None, help=_URL_HELP, callback=_url_or_main)(
        function
    )


def _json_option(function: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table.")(
        function
    )


def _count_option(flag: str, default: int, text: str, maximum: int | None = None) -> Callable[[F], F]:
    """An option taking a positive count ``N``."""
    kind = click.IntRange(min=1, max=maximum)
    return click.option(flag, type=kind, default=default, show_default=True, metavar="N", help=text)


_EPILOG: Final = "\b\nExit codes:\n" + "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())


@click.group(cls=_Group, epilog=_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="motia-state")
@click.option(
    "--url",
    metavar="URL",
    default=None,
    help="The store for the command (before it or after it; the one after wins). " + _URL_HELP,
)
def main(url: str | None) -> None:
    """Inspect and manage Motia workflow state: SQLite, PostgreSQL, Redis, Motia's JSON file, memory.

    Commands on one store take --url URL (before or after the command), else
    $MOTIA_STATE_URL, else sqlite:///.motia/motia.state.db; copy takes two URLs.
    """


@main.command()
@_url_option
@_json_option
def groups(url: str | None, as_json: bool) -> None:
    """List the groups that hold items.

    Groups with at least one live item, in code point order.
    """

    async def work() -> list[str]:
        async with _opened(url, create=False, read_only=True) as state:
            return await state.list_groups()

    found = _run(work())
    if as_json:
        _echo_json(found)
    else:
        _table(["group"], [[group] for group in found], "No groups.")


@main.command()
@click.argument("group")
@_url_option
@_json_option
def keys(group: str, url: str | None, as_json: bool) -> None:
    """List the keys of GROUP.

    In code point order; exit 1 when the group has no items.
    """

    async def work() -> list[str]:
        async with _opened(url, create=False, read_only=True) as state:
            return await state.keys(group)

    found = _run(work())
    if not found:
        not_found(f"group {group!r} has no items")
    if as_json:
        _echo_json(found)
    else:
        _table(["key"], [[key] for key in found], "")


@main.command()
@click.argument("group")
@click.argument("key")
@_url_option
@_json_option
def get(group: str, key: str, url: str | None, as_json: bool) -> None:
    """Print the value of KEY in GROUP as JSON.

    Indented by default; one line with --json. Exit 1 when the key is absent or expired; a
    stored null prints null.
    """

    async def work() -> StateItem | None:
        async with _opened(url, create=False, read_only=True) as state:
            return await state.get_item(group, key)

    item = _run(work())
    if item is None:
        not_found(f"no item {key!r} in group {group!r}")
    click.echo(_dumps(item.value, pretty=not as_json))


def _read_json_argument(text: str) -> Any:
    if text == "-":
        text = sys.stdin.read().removeprefix("\ufeff")  # as import does: editors on Windows write one
    try:
        return parse_json(text)
    except ValueError as exc:
        raise CliError(f"the JSON value is not valid JSON: {exc}") from None


@main.command(name="set")
@click.argument("group")
@click.argument("key")
@click.argument("value", metavar="JSON")
@click.option("--ttl", type=float, default=None, metavar="S", help="Expire the item after S seconds.")
@_url_option
@_json_option
def set_(group: str, key: str, value: str, ttl: float | None, url: str | None, as_json: bool) -> None:
    """Store a JSON value at KEY in GROUP.

    JSON is strict JSON, or - to read it from stdin. Replaces any value there; without --ttl
    the item never expires.
    """
    parsed = _read_json_argument(value)

    async def work() -> Any:
        async with _opened(url, create=True) as state:
            return await state.set(group, key, parsed, ttl=ttl)

    stored = _run(work())
    if as_json:
        _echo_json({"group": group, "key": key, "value": stored})
    else:
        click.echo(f"Stored {group!r}/{key!r}.")


@main.command()
@click.argument("group")
@click.argument("key")
@_url_option
@_json_option
def delete(group: str, key: str, url: str | None, as_json: bool) -> None:
    """Delete KEY from GROUP.

    Exit 1 when the key is absent.
    """

    async def work() -> StateItem | None:
        async with _opened(url, create=False) as state, state.transaction() as tx:
            item = await tx.get_item(group, key)
            if item is not None:
                await tx.delete(group, key)
            return item

    item = _run(work())
    if item is None:
        not_found(f"no item {key!r} in group {group!r}")
    if as_json:
        _echo_json({"group": group, "key": key, "value": item.value})
    else:
        click.echo(f"Deleted {group!r}/{key!r}.")


@main.command()
@click.argument("group")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@_url_option
@_json_option
def clear(group: str, yes: bool, url: str | None, as_json: bool) -> None:
    """Delete every item of GROUP, atomically.

    Asks first unless --yes. Prints how many items were deleted: counted in the transaction that
    deletes them, so items written after the question are counted too. Exit 1 when the group
    has no items or the answer is no.
    """

    async def work() -> tuple[int, int]:
        async with _opened(url, create=False) as state:
            asked = len(await state.keys(group))
            if not asked:
                not_found(f"group {group!r} has no items")
            if not yes and not click.confirm(
                f"Delete all {plural(asked, 'item')} of group {group!r} in {_label(url)}?", err=True
            ):
                not_found("nothing was deleted")
            # No transaction is held while the question waits for an answer; the count printed
            # is taken in the one that deletes.
            async with state.transaction() as tx:
                removed = len(await tx.keys(group))
                await tx.clear(group)
            return asked, removed

    asked, removed = _run(work())
    if as_json:
        _echo_json({"group": group, "cleared": removed})
    else:
        since = "" if removed == asked else f"; {asked} when asked"
        click.echo(f"Cleared group {group!r} ({plural(removed, 'item')}{since}).")


@main.command()
@click.option("--group", "group", default=None, metavar="G", help="Only the items of group G.")
@click.option(
    "--filter",
    "filters",
    nargs=3,
    multiple=True,
    metavar="FIELD OP VALUE",
    help="Keep items whose top-level FIELD passes OP VALUE (Motia's StateFilter: eq, neq, gt, gte, "
    "lt, lte, contains, notContains, startsWith, endsWith, isNull, isNotNull; give '' as VALUE "
    "for isNull/isNotNull). Repeat to require several.",
)
@_url_option
@_json_option
def items(
    group: str | None, filters: tuple[tuple[str, str, str], ...], url: str | None, as_json: bool
) -> None:
    """List items with their values.

    Ordered by group and key, with expiry times; --filter keeps items matching Motia's
    StateFilter. Exit 1 when --group names a group with no items (as keys does); a filter
    that matches nothing is exit 0.
    """
    wanted = [{"valueKey": field, "operation": op, "value": text} for field, op, text in filters]

    async def work() -> list[StateItem]:
        async with _opened(url, create=False, read_only=True) as state:
            found = await state.items(group, wanted)
            if not found and group is not None and not await state.keys(group):
                not_found(f"group {group!r} has no items")
            return found

    found = _run(work())
    if as_json:
        _echo_json([_item_json(item) for item in found])
        return
    rows = [[item.group_id, item.key, _dumps(item.value), _when(item.expires_at)] for item in found]
    _table(["group", "key", "value", "expires (UTC)"], rows, "No items.")


# -- import / export / copy -------------------------------------------------------------------


STDIN: Final = Path("<stdin>")  # import's PATH "-", as messages name it


async def _import(url: str | None, path: Path, fmt: str, big: str) -> tuple[int, int]:
    # Every item is checked before the store is opened: bad input creates no file at all.
    data = sys.stdin.buffer.read() if path is STDIN else None
    numbered = read_import_file(path, fmt, big, data)
    target = _adapter(url, only_given=True)
    try:
        check_import(target, path, numbered)
    except BaseException:
        await target.close()  # never opened: releases only what the constructor made
        raise
    async with _entered(target, url, create=True) as state:
        with ProgressBar(f"Importing {path.name}", len(numbered)) as progress:
            return await import_items(state, path, numbered, progress.advance)


@main.command(name="import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=None,
    help="motia (Motia's motia.state.json) or jsonl; default: jsonl for a .jsonl PATH, else motia.",
)
@click.option(
    "--big-ints",
    "big",
    type=click.Choice(BIG_INTS),
    default="double",
    show_default=True,
    help="Integers beyond signed 64-bit, which Node writes for large numbers "
    "(JSON.stringify(2**64) is 18446744073709552000): store the double JavaScript means, spelled "
    "as a float (1.8446744073709552e+19), or refuse them (the error names the item).",
)
@_url_option
def import_(path: Path, fmt: str | None, big: str, url: str | None) -> None:
    """Import a motia.state.json or JSON Lines file, all or nothing.

    PATH - reads stdin (motia format unless --format jsonl). Every item is checked, then
    written in one transaction: on any error nothing is imported. Items replace those with the
    same group and key; other items stay.
    """
    started = time.perf_counter()
    path = STDIN if str(path) == "-" else path
    count, group_count = _run(_import(url, path, format_of(str(path), fmt), big))
    seconds = time.perf_counter() - started
    click.echo(
        f"Imported {plural(count, 'item')} in {plural(group_count, 'group')} from {path} "
        f"into {_label(url)} in {seconds:.2f} s."
    )


async def _export(url: str | None, group: str | None, fmt: str, output: str | None) -> tuple[int, int]:
    async with _opened(url, create=False, read_only=True) as state:
        first, entries = await peek(state.iter_json(group))
        if first is None and group is not None:
            not_found(f"group {group!r} has no items")
        total = await count_items(state, group) if ProgressBar.wanted() else None
        with ProgressBar("Exporting", total) as progress:
            return await export_items(entries, fmt, output, progress.advance)


@main.command()
@click.option("--group", "group", default=None, metavar="G", help="Only the items of group G.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=None,
    help="motia (the bytes Motia writes to motia.state.json) or jsonl (one item per line); "
    "default: jsonl when --output ends in .jsonl, else motia.",
)
@click.option(
    "--output",
    "-o",
    default=None,
    metavar="FILE",
    help="Write to FILE (replaced only once complete) instead of stdout.",
)
@_url_option
def export(group: str | None, fmt: str | None, output: str | None, url: str | None) -> None:
    """Write items as motia.state.json or JSON Lines.

    Ordered by group and key, to stdout or --output FILE. The motia format is the exact bytes
    Motia writes for the same state.
    """
    started = time.perf_counter()
    count, group_count = _run(_export(url, group, format_of(output, fmt), output))
    if output not in (None, "-"):
        seconds = time.perf_counter() - started
        click.echo(
            f"Exported {plural(count, 'item')} in {plural(group_count, 'group')} from {_label(url)} "
            f"to {output} in {seconds:.2f} s."
        )


async def _copy(source_url: str, target_url: str, group: str | None, batch_size: int) -> tuple[int, int]:
    async with _opened(source_url, create=False, read_only=True) as source:
        first, entries = await peek(source.iter_entries(group, batch_size=batch_size))
        if first is None and group is not None:
            not_found(f"group {group!r} has no items in {redact(source_url)}")
        target = _adapter(target_url, only_given=True)
        if _same_store(source, target, source_url, target_url):
            await target.close()
            raise CliError(f"{redact(source_url)} and {redact(target_url)} are the same store")
        async with _entered(target, target_url, create=True):
            total = await count_items(source, group) if ProgressBar.wanted() else None
            with ProgressBar("Copying", total) as progress:
                return await copy_items(entries, target, batch_size, progress.advance)


@main.command()
@click.argument("source_url", metavar="SRC_URL")
@click.argument("target_url", metavar="DST_URL")
@click.option("--group", "group", default=None, metavar="G", help="Only the items of group G.")
@_count_option("--batch-size", 1000, "Items read and written per destination transaction.")
def copy(source_url: str, target_url: str, group: str | None, batch_size: int) -> None:
    """Copy items from SRC_URL to DST_URL, any backend to any.

    Streams N items at a time, each batch written in one destination transaction, so memory
    stays flat however large the store. Items replace those with the same group and key; other
    items stay. Values are copied as stored JSON text and keep their expiry times (a file://
    destination, which cannot hold one, refuses such an item).
    """
    if click.get_current_context().find_root().params.get("url") is not None:
        raise CliError("copy takes its stores as SRC_URL DST_URL, not --url")
    started = time.perf_counter()
    count, group_count = _run(_copy(source_url, target_url, group, batch_size))
    seconds = time.perf_counter() - started
    click.echo(
        f"Copied {plural(count, 'item')} in {plural(group_count, 'group')} from {redact(source_url)} "
        f"to {redact(target_url)} in {seconds:.2f} s."
    )


# -- running in production: backup, info, prune, ping (logic in admin.py) -------------------------


def _size(count: int | None) -> str:
    if count is None:
        return "-"
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{count} B" if unit == "B" else f"{size:.1f} {unit} ({count} B)"
        size /= 1024
    raise AssertionError("unreachable")


@main.command()
@click.argument("dest", type=click.Path(path_type=Path, dir_okay=False))
@_count_option("--pages", 256, "Database pages copied per step.")
@_url_option
@_json_option
def backup(dest: Path, pages: int, url: str | None, as_json: bool) -> None:
    """Copy a live SQLite store to DEST as one consistent snapshot.

    Other processes keep reading and writing meanwhile: the copy reads one snapshot (SQLite's
    online backup, N pages a step) and writers never wait for it. It goes to a temp file beside
    DEST, must pass integrity_check, is fsynced, and only then replaces DEST. The backup is an
    ordinary store (--url sqlite:///DEST). Redis stores: use Redis's own persistence (BGSAVE,
    AOF); see docs/cli.md.
    """
    from . import admin

    async def work() -> admin.BackupResult:
        async with _opened(url, create=False, read_only=True) as state:
            with ProgressBar("Backing up", None, unit="pages") as bar:
                return await admin.backup(state, dest, pages=pages, progress=bar.update)

    done = _run(work())
    if as_json:
        shown = {"path": str(done.path), "pages": done.pages, "bytes": done.bytes, "seconds": done.seconds}
        _echo_json(shown)
    else:
        click.echo(
            f"Backed up {_label(url)} to {done.path}: {_size(done.bytes)}, {plural(done.pages, 'page')} "
            f"in {done.seconds:.2f} s; integrity_check ok."
        )


@main.command()
@_url_option
@_json_option
def info(url: str | None, as_json: bool) -> None:
    """Show what the store holds: counts, sizes, schema revision, times.

    Read-only and cheap on a large store: SQLite and PostgreSQL answer from one pass over the
    table (writers never wait); Redis from SCAN pages of key names and, in the native layout,
    one pipelined script per group, without sending values. A database behind head is reported
    (at_head false), not migrated.
    """
    from . import admin

    async def work() -> StoreInfo:
        async with _opened(url, create=False, read_only=True, enter=False) as state:
            return await state.store_info()

    data = admin.info_json(_run(work()), _label(url))
    if as_json:
        _echo_json(data)
        return
    revision = "-"
    if data["schema_head"] is not None:
        head = "head" if data["at_head"] else f"head is {data['schema_head']}"
        revision = f"{data['schema_revision'] or 'none'} ({head})"
    shown = {
        "backend": data["backend"],
        "url": data["url"],
        "schema revision": revision,
        "items": str(data["items"]),
        "groups": str(data["groups"]),
        "expired, not yet reclaimed": "-" if data["expired_items"] is None else str(data["expired_items"]),
        "bytes on disk": _size(data["bytes_on_disk"]),
        **{f"  {name}": _size(size) for name, size in data["files"].items()},
        "server memory": _size(data["memory_bytes"]),
        "oldest updated_at": _when(data["oldest_updated_at"]),
        "newest updated_at": _when(data["newest_updated_at"]),
    }
    _table(["", ""], [[name, value] for name, value in shown.items()], "")


def _pruned_json(idle: IdleGroup) -> dict[str, Any]:
    return {"group": idle.group_id, "items": idle.items, "newest_write": idle.newest_write}


@main.command()
@click.option("--idle", required=True, metavar="AGE", help="Remove groups unwritten for AGE: 7d, 12h, 2w.")
@click.option("--group-prefix", "prefix", metavar="P", help="Only groups whose ids begin with P.")
@click.option("--dry-run", is_flag=True, help="Only list the groups that would be removed.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@_count_option("--batch-size", 100, "Groups looked at and removed per step (SQLite: per transaction).", 10**5)
@_url_option
@_json_option
def prune(
    idle: str, prefix: str | None, dry_run: bool, yes: bool, batch_size: int, url: str | None, as_json: bool
) -> None:
    """Remove the groups not written for longer than AGE.

    Each group is removed whole or not at all, and only if it is still idle then: a group
    written to during the prune stays. Groups are removed N at a time, so writers are never
    held for long. Asks first (showing how many groups) unless --yes or --dry-run; exit 1 when
    the answer is no. Prints the groups removed.
    """
    age = parse_age(idle)

    async def work() -> list[IdleGroup]:
        async with _opened(url, create=False, read_only=dry_run) as state:
            if not (dry_run or yes):
                found = await state.prune_idle_groups(age, prefix=prefix, dry_run=True, batch_size=batch_size)
                if not found:
                    return []
                items = sum(group.items for group in found)
                question = (
                    f"Remove {plural(len(found), 'group')} ({plural(items, 'item')}) idle for over "
                    f"{idle} from {_label(url)}?"
                )
                if not click.confirm(question, err=True):
                    not_found("nothing was removed")
            return await state.prune_idle_groups(age, prefix=prefix, dry_run=dry_run, batch_size=batch_size)

    pruned = _run(work())
    items = sum(group.items for group in pruned)
    if as_json:
        _echo_json(
            {
                "dry_run": dry_run,
                "older_than": age,
                "groups": [_pruned_json(group) for group in pruned],
                "removed_groups": 0 if dry_run else len(pruned),
                "removed_items": 0 if dry_run else items,
            }
        )
        return
    rows = [[group.group_id, str(group.items), _when(group.newest_write)] for group in pruned]
    _table(["group", "items", "newest write"], rows, "")
    verb = "Would remove" if dry_run else "Removed"
    click.echo(
        f"{verb} {plural(len(pruned), 'group')} ({plural(items, 'item')}) idle for over {idle} "
        f"from {_label(url)}.",
        err=not _stdout_is_terminal(),
    )


@main.command()
@click.option("--read-only", is_flag=True, help="Only read (for a store this process may not write).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True, max=3600),
    default=5.0,
    show_default=True,
    metavar="S",
    help="Seconds before the store counts as unavailable.",
)
@_url_option
@_json_option
def ping(read_only: bool, timeout: float, url: str | None, as_json: bool) -> None:
    """Health check: exit 0 when the store answers, 3 when not.

    Reads an item, then writes a throwaway item of its own in the group motia-state-ping
    (deleted at once; a 60 s TTL covers a crash) and reads it back; --read-only only reads.
    Never creates a store: a missing database file is unavailable.
    """
    from . import admin

    seconds = _run(admin.ping(url, read_only=read_only, within=timeout))
    if as_json:
        _echo_json({"ok": True, "url": _label(url), "read_only": read_only, "seconds": seconds})
    else:
        what = "a read" if read_only else "a read and a write"
        click.echo(f"OK: {_label(url)} answered {what} in {seconds * 1000:.1f} ms.")
# -- bench: the standard workloads against throwaway stores ------------------------------------


@main.command()
@click.argument("urls", metavar="URL...", nargs=-1, required=True)
@click.option(
    "--workload",
    "workloads",
    multiple=True,
    metavar="OP/ARRIVAL",
    help="Repeatable; OP is set, overwrite, get, update or mix; ARRIVAL is x1, workers, gather, semaphore "
    "or open (default: set under each arrival, get/x1, get/workers, get/gather, update/workers, mix/x1).",
)
@click.option(
    "--ops", type=click.IntRange(min=1), default=2000, show_default=True, metavar="N",
    help="Operations per measurement.",
)
@click.option(
    "--concurrency", type=click.IntRange(min=1), default=64, show_default=True, metavar="N",
    help="Workers (workers) or semaphore slots (semaphore).",
)
@click.option(
    "--rate", type=click.FloatRange(min=0, min_open=True), default=20000.0, show_default=True,
    metavar="R", help="Arrivals per second of the open loop (open).",
)
@click.option(
    "--rounds", type=click.IntRange(min=1), default=3, show_default=True, metavar="N",
    help="Measurements per workload and store, alternated between the stores.",
)
@click.option(
    "--group", "group", default=None, metavar="G",
    help="The group the run writes to and clears (default: motia-state-bench); must be empty.",
)
@click.option("--force", is_flag=True, help="Run on a store that holds items (needs --group G).")
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    metavar="FILE", help="Also write the results as JSON to FILE.",
)
@click.option(
    "--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    metavar="FILE.png", help="Also draw the results to FILE.png (needs matplotlib).",
)
def bench(
    urls: tuple[str, ...],
    workloads: tuple[str, ...],
    ops: int,
    concurrency: int,
    rate: float,
    rounds: int,
    group: str | None,
    force: bool,
    json_path: Path | None,
    plot_path: Path | None,
) -> None:
    """Benchmark throwaway stores: the standard workloads against every URL, alternately.

    Point it only at stores made for the run: it refuses a store that holds items unless
    given --force with a --group G of its own, writes only to that group and clears it at the
    end. The first URL is the baseline of the ratio column.
    """
    from dataclasses import asdict

    from .bench.report import COLUMNS, cells, check_plot, plot, results_json
    from .bench.stores import DEFAULT_WORKLOADS, BenchOptions, bench_urls

    options = BenchOptions(workloads or DEFAULT_WORKLOADS, ops, concurrency, rate, rounds, group, force)
    options.check()
    if plot_path is not None:
        check_plot()
    with ProgressBar("Benchmarking", len(options.workloads) * rounds * len(urls), unit="measurements") as bar:
        rows = _run(bench_urls(urls, options, lambda key: bar.advance(1)))
    _table(COLUMNS, [cells(row) for row in rows], "No results.")
    if json_path is not None:
        document = results_json(rows, urls=[redact(url) for url in urls], options=asdict(options))
        with atomic_output(str(json_path)) as out:
            out.write(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
    if plot_path is not None:
        plot(rows, plot_path, f"motia-state bench: {', '.join(redact(url) for url in urls)}")


# -- db: SQLite schema migrations -------------------------------------------------------------


@main.group(cls=_Group)
def db() -> None:
    """Manage the schema of a SQLite or PostgreSQL store (Alembic underneath)."""


def _postgres(url: str | None) -> Any:
    """The ``PostgresStateAdapter`` for ``url`` (not connected), or ``None`` for other stores."""
    if urlsplit(store_url(url)).scheme not in ("postgresql", "postgres"):
        return None
    from .url import open_state

    return open_state(url)


def _pg_label(store: Any) -> str:
    return f"{store.safe_url} (schema {store.schema})"


async def _pg(store: Any, work: Callable[[Any], Awaitable[T]]) -> T:
    try:
        return await work(store)
    finally:
        await store.close()


def _sqlite_path(url: str | None) -> Path:
    from .sqlite import SqliteStateAdapter
    from .url import open_state

    adapter = open_state(url)
    if not isinstance(adapter, SqliteStateAdapter):
        raise CliError(
            f"db commands manage SQLite and PostgreSQL stores; {_label(url)} is not a sqlite:/// "
            "or postgresql:// URL"
        )
    if adapter.path == ":memory:":
        raise CliError("db commands need a database file; sqlite:///:memory: vanishes on exit")
    return Path(adapter.path)


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to an existing database (exit 1 when the file is missing)."""
    if not path.exists():
        not_found(f"no database at {path}")
    import sqlite3

    raw = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        yield raw
    finally:
        raw.close()


def _revision(path: Path) -> str | None:
    """The revision stamped in the database at ``path`` (``None`` when unstamped)."""
    import sqlite3

    from .sqlite.migrate import current_revision

    with _read_only(path) as raw:
        try:
            return current_revision(raw)[0]
        except sqlite3.DatabaseError as exc:
            raise SchemaError(f"{path} is not a SQLite database ({exc})") from None


@db.command()
@_url_option
def upgrade(url: str | None) -> None:
    """Create the database or migrate it to head.

    Head is the newest schema revision this version knows.
    """
    from .revision import HEAD_REVISION

    store = _postgres(url)
    if store is not None:

        async def migrate(store: Any) -> str | None:
            before: str | None = await store.schema_revision()
            await store.__aenter__()  # opening migrates, under an advisory lock
            return before

        was = _run(_pg(store, migrate))
        if was == HEAD_REVISION:
            click.echo(f"{_pg_label(store)} is already at head ({HEAD_REVISION}).")
        else:
            click.echo(f"Upgraded {_pg_label(store)} from {was or 'no schema'} to {HEAD_REVISION}.")
        return
    path = _sqlite_path(url)
    before = _revision(path) if path.exists() else None
    existed = path.exists()

    from .url import open_state

    async def work() -> None:
        async with open_state(url):  # opening migrates, under BEGIN IMMEDIATE
            pass

    _run(work())
    if not existed:
        click.echo(f"Created {path} at revision {HEAD_REVISION}.")
    elif before == HEAD_REVISION:
        click.echo(f"{path} is already at head ({HEAD_REVISION}).")
    else:
        click.echo(f"Upgraded {path} from {before or 'no schema'} to {HEAD_REVISION}.")


@db.command()
@_url_option
@_json_option
def current(url: str | None, as_json: bool) -> None:
    """Show the database's schema revision.

    Read-only; exit 1 when the database does not exist.
    """
    from .revision import HEAD_REVISION

    store = _postgres(url)
    where: dict[str, str] = {}
    if store is not None:
        revision = _run(_pg(store, lambda store: store.schema_revision()))
        where = {"url": store.safe_url, "schema": store.schema}
    else:
        path = _sqlite_path(url)
        revision = _revision(path)
        where = {"path": str(path)}
    if as_json:
        _echo_json(
            {
                **where,
                "revision": revision,
                "head": HEAD_REVISION,
                "at_head": revision == HEAD_REVISION,
            }
        )
    elif revision == HEAD_REVISION:
        click.echo(f"{revision} (head)")
    else:
        click.echo(f"{revision or 'none'} (head is {HEAD_REVISION}; run `motia-state db upgrade`)")


@db.command()
@_url_option
@_json_option
def history(url: str | None, as_json: bool) -> None:
    """List the schema revisions this version knows.

    Newest first; marks head and the database's current revision.
    """
    from alembic.script import ScriptDirectory

    from .sqlite.migrate import alembic_config

    store = _postgres(url)
    if store is not None:
        at = _run(_pg(store, lambda store: store.schema_revision()))
    else:
        path = _sqlite_path(url)
        at = _revision(path) if path.exists() else None
    scripts = list(ScriptDirectory.from_config(alembic_config()).walk_revisions())
    rows = [
        {
            "revision": script.revision,
            "down_revision": script.down_revision,
            "description": (script.doc or "").strip(),
            "head": script.is_head,
            "current": script.revision == at,
        }
        for script in scripts
    ]
    if as_json:
        _echo_json(rows)
        return
    marks = [
        ", ".join(m for m, on in (("head", row["head"]), ("current", row["current"])) if on) for row in rows
    ]
    _table(
        ["revision", "revises", "description", ""],
        [
            [str(row["revision"]), str(row["down_revision"] or "-"), str(row["description"]), mark]
            for row, mark in zip(rows, marks, strict=True)
        ],
        "No revisions.",
    )


def _describe_diff(diff: Any) -> str:
    """One line for one difference reported by ``alembic.autogenerate.compare_metadata``."""
    if isinstance(diff, list):
        return "; ".join(_describe_diff(part) for part in diff)
    kind = diff[0]
    if kind in ("add_table", "remove_table"):
        return f"{kind} {diff[1].name}"
    if kind in ("add_column", "remove_column"):
        return f"{kind} {diff[2]}.{diff[3].name}"
    if kind in ("add_index", "remove_index", "add_constraint", "remove_constraint"):
        return f"{kind} {diff[1].name}"
    if kind.startswith("modify_"):
        return f"{kind} {diff[2]}.{diff[3]}: {diff[5]!r} -> {diff[6]!r}"
    return str(diff)


def _schema_differences(path: Path) -> list[str]:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import create_engine
    from sqlalchemy.pool import StaticPool

    from .schema import metadata

    with _read_only(path) as raw:
        engine = create_engine("sqlite://", creator=lambda: raw, poolclass=StaticPool)
        try:
            with engine.connect() as connection:
                context = MigrationContext.configure(connection)
                return [_describe_diff(diff) for diff in compare_metadata(context, metadata)]
        finally:
            engine.dispose()


@db.command()
@_url_option
def check(url: str | None) -> None:
    """Check the database is at head and matches the schema.

    Compares the tables and indexes with the SQLAlchemy schema (SQLite: Alembic's
    compare_metadata; PostgreSQL: columns, types, collations, primary key and index from the
    catalog). Exit 1 with the differences otherwise. Read-only.
    """
    from .revision import HEAD_REVISION

    store = _postgres(url)
    if store is not None:

        async def inspect(store: Any) -> tuple[str | None, list[str]]:
            revision = await store.schema_revision()
            return revision, (await store.schema_differences() if revision == HEAD_REVISION else [])

        revision, differences = _run(_pg(store, inspect))
        where = _pg_label(store)
    else:
        path = _sqlite_path(url)
        revision = _revision(path)
        differences = _schema_differences(path) if revision == HEAD_REVISION else []
        where = str(path)
    if revision != HEAD_REVISION:
        not_found(
            f"{where} is at revision {revision or 'none'}, not head ({HEAD_REVISION}); "
            "run `motia-state db upgrade`"
        )
    if differences:
        not_found(f"{where} is at head ({HEAD_REVISION}) but its schema differs: {'; '.join(differences)}")
    click.echo(f"{where} is at head ({HEAD_REVISION}) and matches the schema.")


@db.command()
@_url_option
@_json_option
def vacuum(url: str | None, as_json: bool) -> None:
    """Compact the database: give free pages back to the file system.

    Rebuilds the file (SQLite VACUUM), then empties the WAL; prints the bytes on disk (database,
    -wal, -shm) before and after. Holds the write lock while it runs: writers wait (up to their
    busy timeout), readers go on. Needs free disk space about the database's size.
    """
    from . import admin

    path = _sqlite_path(url)

    async def work() -> tuple[int, int]:
        async with _opened(url, create=False) as state:
            return await admin.vacuum(state)

    before, after = _run(work())
    if as_json:
        _echo_json({"path": str(path), "bytes_before": before, "bytes_after": after})
    else:
        click.echo(f"Vacuumed {path}: {_size(before)} before, {_size(after)} after.")


# -- serve: the Node adapter's server ---------------------------------------------------------


@main.command(name="serve")
@click.option("--stdio", is_flag=True, required=True, help="Speak the JSON-lines RPC on stdin/stdout.")
@click.option("--url", default=None, metavar="URL", envvar=ENV_VAR, help="The state store URL.")
def serve_command(stdio: bool, url: str | None) -> None:
    """Serve a store to the Node adapter (motia-state-sql's SqlStateAdapter) over stdin/stdout.

    One JSON request per line in, one answer per line out, answered as they finish; exits when
    stdin closes, after closing the store. Started by the Node package; not meant for people.
    """
    from .serve import serve_stdio

    raise SystemExit(serve_stdio(url))
