"""Data safety and bad input: a database deleted under us, read-only access, paths that cannot
work, options out of range, adapters collected without ``close()``."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from motia_state_sql import (
    ConfigError,
    FileStateAdapter,
    MemoryStateAdapter,
    SchemaError,
    SqliteStateAdapter,
    StoreUnavailableError,
    UnsupportedError,
    open_state,
)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def _seeded(path: Path) -> None:
    async with SqliteStateAdapter(path) as state:
        await state.set("orders", "1", {"total": 10})


@contextmanager
def read_only_folder(folder: Path) -> Iterator[Path]:
    """``folder`` seen through a read-only view: a read-only bind mount as root, else chmod."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
        return
    view = folder.with_name(folder.name + "-ro")
    view.mkdir()
    subprocess.run(["mount", "--bind", str(folder), str(view)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
        yield view
    finally:
        subprocess.run(["umount", str(view)], check=True)
        view.rmdir()


# -- the database file deleted or replaced while open -------------------------------------------


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
async def test_writes_after_the_file_is_deleted_are_refused(tmp_path: Path, synchronous: Any) -> None:
    path = tmp_path / "state.db"
    async with SqliteStateAdapter(path, synchronous=synchronous) as state:
        await state.set("g", "before", 1)
        for name in os.listdir(tmp_path):  # rm state.db*
            (tmp_path / name).unlink()
        await asyncio.sleep(0.002)  # past the write path's look-again interval
        with pytest.raises(StoreUnavailableError, match="deleted while open"):
            await state.set("g", "after", 2)
        with pytest.raises(StoreUnavailableError, match="deleted"):
            await state.set("g", "again", 3)  # every later write too, not only the first
        with pytest.raises(StoreUnavailableError, match="deleted"):
            async with state.transaction() as tx:
                await tx.set("g", "tx", 4)
        with pytest.raises(StoreUnavailableError, match=str(path)):
            await state.get_group("g")


async def test_writes_after_the_file_is_replaced_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    other = tmp_path / "other" / "state.db"
    await _seeded(other)
    async with SqliteStateAdapter(path) as state:
        await state.set("g", "mine", 1)
        os.replace(other, path)
        await asyncio.sleep(0.002)
        with pytest.raises(StoreUnavailableError, match="replaced by another file"):
            await state.set("g", "after", 2)
    async with SqliteStateAdapter(path) as state:
        assert await state.get("orders", "1") == {"total": 10}  # the replacement is untouched
        assert await state.get("g", "after") is None


async def test_a_transaction_commit_looks_at_the_file_every_time(tmp_path: Path) -> None:
    async with SqliteStateAdapter(tmp_path / "state.db") as state:
        await state.set("g", "a", 1)
        async with state.transaction() as tx:
            await tx.set("g", "b", 2)
            (tmp_path / "state.db").unlink()
            with pytest.raises(StoreUnavailableError, match="deleted"):
                await tx._finish(commit=True)


# -- read-only access ----------------------------------------------------------------------------


async def test_read_only_reads_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    await _seeded(path)
    before = _digest(path)
    async with SqliteStateAdapter(path, read_only=True) as state:
        assert await state.get("orders", "1") == {"total": 10}
        assert await state.list_groups() == ["orders"]
        for write in (
            state.set("orders", "2", 1),
            state.delete("orders", "1"),
            state.update("orders", "1", []),
            state.clear("orders"),
        ):
            with pytest.raises(UnsupportedError, match="read-only"):
                await write
        with pytest.raises(UnsupportedError, match="read-only"):
            async with state.transaction():
                pass
    assert _digest(path) == before


async def test_read_only_works_in_a_folder_nobody_may_write(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    await _seeded(folder / "state.db")
    with read_only_folder(folder) as view:
        async with open_state(f"sqlite:///{view / 'state.db'}?mode=ro") as state:
            assert await state.get("orders", "1") == {"total": 10}
        # Writing there is refused plainly, not as a damaged database.
        with pytest.raises(ConfigError, match=r"read-only .*read_only=True"):
            async with SqliteStateAdapter(view / "state.db") as state:
                await state.get("orders", "1")
        with pytest.raises(ConfigError, match="cannot create"):
            async with SqliteStateAdapter(view / "new" / "state.db") as state:
                await state.get("g", "k")
        with pytest.raises(ConfigError, match="cannot create"):
            async with SqliteStateAdapter(view / "fresh.db") as state:
                await state.get("g", "k")


async def test_read_only_creates_nothing_and_migrates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "none" / "state.db"
    with pytest.raises(StoreUnavailableError, match="does not exist"):
        async with SqliteStateAdapter(missing, read_only=True) as state:
            await state.get("g", "k")
    assert not (tmp_path / "none").exists()
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "motia.state.json").write_text('{"g:k": "1"}')
    sqlite3.connect(legacy / "state.db").close()  # an empty file: not yet created by us
    with pytest.raises(SchemaError, match="without read_only"):
        async with SqliteStateAdapter(legacy / "state.db", read_only=True) as state:
            await state.get("g", "k")
    assert (legacy / "state.db").stat().st_size == 0


async def test_read_only_refuses_a_newer_database(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    await _seeded(path)
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE alembic_version SET version_num = 'from_the_future'")
    before = _digest(path)
    with pytest.raises(SchemaError, match="from_the_future"):
        async with SqliteStateAdapter(path, read_only=True) as state:
            await state.get("g", "k")
    assert _digest(path) == before


@pytest.mark.parametrize("url", ["memory://?mode=ro", "file:///tmp/nowhere-{}?mode=ro"])
async def test_read_only_for_every_backend(url: str) -> None:
    state = open_state(url.format(uuid.uuid4().hex))
    async with state:
        assert await state.get("g", "k") is None
        with pytest.raises(UnsupportedError, match="read-only"):
            await state.set("g", "k", 1)


# -- paths that cannot work ----------------------------------------------------------------------


async def test_a_parent_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="part of its folder path is a file"):
        async with SqliteStateAdapter(tmp_path / "file" / "state.db") as state:
            await state.get("g", "k")


async def test_a_database_path_that_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder"):
        async with SqliteStateAdapter(tmp_path) as state:
            await state.get("g", "k")


# -- options out of range ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"busy_timeout": float("inf")},
        {"busy_timeout": -1},
        {"busy_timeout": float("nan")},
        {"busy_timeout": "5"},
        {"max_value_bytes": 0},
        {"max_value_bytes": True},
        {"file_mode": 0o7777},
        {"file_mode": 0o4600},
        {"file_mode": 0o400},
        {"purge_interval": float("nan")},
        {"purge_interval": -1.0},
        {"import_legacy": "yes"},
        {"read_only": 1},
        {"synchronous": "OFF"},
        {"clock": 5},
    ],
    ids=repr,
)
def test_sqlite_options_are_checked_at_construction(tmp_path: Path, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=next(iter(options))):
        SqliteStateAdapter(tmp_path / "state.db", **options)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (lambda: MemoryStateAdapter(lock_timeout=float("nan")), "lock_timeout"),
        (lambda: MemoryStateAdapter(max_value_bytes=0), "max_value_bytes"),
        (lambda: FileStateAdapter("x", lock_timeout=-1), "lock_timeout"),
        (lambda: FileStateAdapter("x", durable="no"), "durable"),  # type: ignore[arg-type]
        (lambda: SqliteStateAdapter(""), "path"),
    ],
)
def test_other_options_are_checked_at_construction(build: Any, name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        build()


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("busy_timeout=inf", "busy_timeout"),
        ("busy_timeout=-1", "busy_timeout"),
        ("busy_timeout=abc", "busy_timeout"),
        ("max_value_bytes=0", "max_value_bytes"),
        ("file_mode=7777", "file_mode"),
        ("purge_interval=nan", "purge_interval"),
        ("mode=rx", "mode"),
    ],
)
def test_url_parameters_are_checked_at_construction(tmp_path: Path, query: str, name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        open_state(f"sqlite:///{tmp_path / 'state.db'}?{query}")
    assert not list(tmp_path.iterdir())


# -- adapters collected without close() -----------------------------------------------------------


def test_an_adapter_collected_unclosed_warns_and_stops_its_threads(tmp_path: Path) -> None:
    code = f"""
import asyncio, gc, threading, warnings
from motia_state_sql import SqliteStateAdapter
warnings.simplefilter("always")
async def main():
    state = SqliteStateAdapter({str(tmp_path / "state.db")!r})
    await state.set("g", "k", 1)
    with warnings.catch_warnings(record=True) as seen:
        del state
        gc.collect()
    print([str(w.message) for w in seen if w.category is ResourceWarning])
asyncio.run(main())
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "SqliteStateAdapter(path=" in done.stdout
    assert "was never closed" in done.stdout
    # And the process exited: no worker thread kept it alive.


async def test_a_closed_adapter_collected_says_nothing(tmp_path: Path) -> None:
    state = SqliteStateAdapter(tmp_path / "state.db")
    await state.set("g", "k", 1)
    await state.close()
    del state
    gc.collect()  # filterwarnings=error: a ResourceWarning here would fail the test


def test_copying_a_folder_keeps_working(tmp_path: Path) -> None:
    # The read-only helper above must leave the folder as it found it.
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "f").write_text("x")
    with read_only_folder(folder) as view:
        assert (view / "f").read_text() == "x"
    shutil.rmtree(folder)


def test_cli_read_commands_work_on_a_database_nobody_may_write(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from motia_state_sql.cli import main

    folder = tmp_path / "data"
    asyncio.run(_seeded(folder / "state.db"))
    before = _digest(folder / "state.db")
    with read_only_folder(folder) as view:
        url = f"sqlite:///{view / 'state.db'}"
        for args in (["get", "orders", "1"], ["keys", "orders"], ["groups"], ["items"], ["export"]):
            result = CliRunner().invoke(main, [*args, "--url", url])
            assert result.exit_code == 0, (args, result.output)
            assert result.output.strip(), args  # each printed what it read
        refused = CliRunner().invoke(main, ["set", "orders", "2", "1", "--url", url])
        assert refused.exit_code == 2, refused.output
        assert "read-only" in refused.output
    assert _digest(folder / "state.db") == before


async def test_redis_read_only(redis_url: str) -> None:
    async with open_state(f"{redis_url}?mode=ro&key_prefix=ro-{uuid.uuid4().hex}:") as state:
        assert await state.get("g", "k") is None
        with pytest.raises(UnsupportedError, match="read-only"):
            await state.set("g", "k", 1)


async def test_file_adapter_paths_that_cannot_work(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="part of its folder path is a file"):
        await FileStateAdapter(tmp_path / "file" / "motia").set("g", "k", 1)
    folder = tmp_path / "legacy"
    folder.mkdir()
    (folder / "motia.state.json").write_text('{"g:k": "1"}')
    with read_only_folder(folder) as view:
        state = FileStateAdapter(view)
        assert await state.get("g", "k") == 1  # reading needs no write
        with pytest.raises(ConfigError, match="read_only=True"):
            await state.set("g", "k", 2)
        async with FileStateAdapter(view, read_only=True) as reader:
            assert await reader.get_group("g") == [1]
    assert (folder / "motia.state.json").read_text() == '{"g:k": "1"}'


async def test_a_new_database_logs_one_line_at_info(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "motia.state.json").write_text('{"g:k": "1"}')
    with caplog.at_level(logging.INFO):
        async with SqliteStateAdapter(tmp_path / "state.db") as state:
            assert await state.get("g", "k") == 1
    lines = [(r.name, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert lines == [
        ("motia_state_sql", f"{tmp_path / 'state.db'}: created at schema revision '0001'; imported 1 items "
         f"from {tmp_path / 'motia.state.json'}")
    ]
    assert logging.getLogger("alembic").level == logging.NOTSET  # left as it was


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("redis://127.0.0.1:6390/0?max_connections=0", "max_connections"),
        ("redis://127.0.0.1:6390/abc", "database"),
        ("redis://127.0.0.1:6390/0?db=abc", "db"),
        ("redis://127.0.0.1:6390/0?layout=motia&cluster=true", "standalone"),
        ("redis://127.0.0.1:6390/0?socket_timeout=nan", "socket_timeout"),
        ("redis://127.0.0.1:6390/0?connect_timeout=-1", "connect_timeout"),
        ("redis://127.0.0.1:99999/0", "Port"),
        ("redis://127.0.0.1:6390/0?ssl_cert_reqs=none", "rediss"),
    ],
)
def test_redis_url_parameters_are_checked_at_construction(url: str, name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        open_state(url)


def test_redis_settings_in_a_constructor_url_are_refused_at_once() -> None:
    from motia_state_sql import RedisStateAdapter

    # They are keyword arguments of the constructor (open_state reads them from its URL).
    with pytest.raises(ConfigError, match="layout is a keyword argument"):
        RedisStateAdapter("redis://127.0.0.1:6390/0?layout=motia&key_prefix=x:")
