"""Running in production: online backup, store info, pruning idle groups, vacuum, ping.

Real SQLite files, real redis-server processes, real writer processes and the real command line.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import random
import sqlite3
import subprocess
import sys
import time
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import pytest

from benchmarks.redis_server import RedisServer
from motia_state_sql import (
    FileStateAdapter,
    InvalidOperationError,
    MemoryStateAdapter,
    RedisStateAdapter,
    SchemaError,
    SqliteStateAdapter,
    StateAdapter,
    StateTransaction,
    UnsupportedError,
)
from motia_state_sql.admin import PING_GROUP, parse_age
from motia_state_sql.errors import ConfigError
from motia_state_sql.revision import HEAD_REVISION

from .conftest import Factory, FakeClock, is_motia_redis

SPAWN = multiprocessing.get_context("spawn")
CLI = [sys.executable, "-m", "motia_state_sql"]


def _cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if name != "MOTIA_STATE_URL"}
    return subprocess.run(
        [*CLI, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def _integrity(path: Path) -> str:
    with sqlite3.connect(path) as raw:
        return str(raw.execute("PRAGMA integrity_check").fetchone()[0])


# -- backup ---------------------------------------------------------------------------------------

ACCOUNTS = [(f"bank-{n % 4}", f"acct-{n}") for n in range(16)]
START_BALANCE = 1000


def _transfer_worker(path: str, seed: int, stop: EventType) -> None:
    """Transfers between accounts in different groups; each logs itself under the next sequence number."""
    rng = random.Random(seed)

    async def move(tx: StateTransaction) -> None:
        (src_group, src), (dst_group, dst) = rng.sample(ACCOUNTS, 2)
        amount = rng.randint(1, 50)
        have = await tx.get(src_group, src)
        if have < amount:
            return
        seq = await tx.get("meta", "seq")
        await tx.set(src_group, src, have - amount)
        await tx.set(dst_group, dst, await tx.get(dst_group, dst) + amount)
        await tx.set("log", f"{seq:09d}", [src_group, src, dst_group, dst, amount])
        await tx.set("meta", "seq", seq + 1)

    async def main() -> None:
        async with SqliteStateAdapter(path, busy_timeout=60) as store:
            while not stop.is_set():
                await store.run_transaction(move)

    asyncio.run(main())


async def test_backup_while_four_processes_transfer_is_one_instant(tmp_path: Path) -> None:
    path = tmp_path / "live.db"
    async with SqliteStateAdapter(path) as store:
        for group, key in ACCOUNTS:
            await store.set(group, key, START_BALANCE)
        await store.set("meta", "seq", 0)
        async with store.transaction() as tx:  # padding, so the copy takes many steps
            for n in range(3000):
                await tx.set("padding", f"p{n}", "x" * 1000)
    stop = SPAWN.Event()
    workers = [SPAWN.Process(target=_transfer_worker, args=(str(path), seed, stop)) for seed in range(4)]
    for worker in workers:
        worker.start()
    try:
        async with SqliteStateAdapter(path, read_only=True) as reader:
            for _ in range(1200):  # until the writers are under way
                if await reader.get("meta", "seq") >= 50:
                    break
                await asyncio.sleep(0.05)
            before = await reader.get("meta", "seq")
            done = await asyncio.to_thread(
                _cli,
                "backup",
                str(tmp_path / "backup.db"),
                "--pages",
                "8",
                "--url",
                f"sqlite:///{path}",
                "--json",
            )
            after = await reader.get("meta", "seq")
    finally:
        stop.set()
        for worker in workers:
            worker.join(120)
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["pages"] > 100  # many steps of 8 pages
    assert after > before  # writers went on while the backup ran

    backup = tmp_path / "backup.db"
    assert _integrity(backup) == "ok"
    assert not list(tmp_path.glob(".backup.db.*"))  # no temp file left behind
    async with SqliteStateAdapter(backup, read_only=True) as copy:
        balances = {
            (item.group_id, item.key): item.value
            for item in await copy.items()
            if item.group_id.startswith("bank-")
        }
        seq = await copy.get("meta", "seq")
        log = [item.value for item in await copy.items("log")]
        assert [item.key for item in await copy.items("log")] == [f"{n:09d}" for n in range(seq)]
        assert len(await copy.keys("padding")) == 3000
    assert sum(balances.values()) == START_BALANCE * len(ACCOUNTS)
    # The backup is the store at one instant: replaying its own log from the start gives exactly
    # its balances (a torn group, or a transaction half in it, would not add up).
    replay = dict.fromkeys(ACCOUNTS, START_BALANCE)
    for src_group, src, dst_group, dst, amount in log:
        replay[src_group, src] -= amount
        replay[dst_group, dst] += amount
    assert balances == replay
    assert before <= seq <= after


async def test_backup_replaces_only_once_complete_and_refuses_what_would_hurt(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with SqliteStateAdapter(path) as store:
        await store.set("g", "k", 1)
    target = tmp_path / "backup.db"
    target.write_bytes(b"previous backup")
    done = _cli("backup", str(target), "--url", f"sqlite:///{path}")
    assert done.returncode == 0, done.stderr
    assert "integrity_check ok" in done.stdout
    async with SqliteStateAdapter(target, read_only=True) as copy:
        assert await copy.get("g", "k") == 1

    (tmp_path / "busy.db-wal").write_bytes(b"a WAL of some other database")
    refused = _cli("backup", str(tmp_path / "busy.db"), "--url", f"sqlite:///{path}")
    assert refused.returncode == 2
    assert "busy.db-wal exists" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "busy.db").exists()

    same = _cli("backup", str(path), "--url", f"sqlite:///{path}")
    assert same.returncode == 2
    assert "is the database being backed up" in same.stderr
    folder = _cli("backup", str(tmp_path), "--url", f"sqlite:///{path}")
    assert folder.returncode == 2
    missing = _cli("backup", str(tmp_path / "x.db"), "--url", f"sqlite:///{tmp_path / 'none.db'}")
    assert missing.returncode == 1
    assert "no state store" in missing.stderr
    redis = _cli("backup", str(tmp_path / "x.db"), "--url", "memory://")
    assert redis.returncode == 2
    assert "BGSAVE" in redis.stderr
    assert not (tmp_path / "x.db").exists()


# -- prune ----------------------------------------------------------------------------------------

PRUNE_BACKENDS = [
    "memory",
    "sqlite-file",
    "sqlite-memory",
    "redis-native",
    "redis-motia",
    "redis-cluster",
    "postgres",
]


async def _let_time_pass(store: StateAdapter, clock: FakeClock, seconds: float) -> None:
    """Make what was written so far ``seconds`` old (Motia's Redis layout: in Redis's own clock)."""
    clock.advance(seconds)
    if is_motia_redis(store):
        await asyncio.sleep(seconds)  # its idle times are Redis's, counted in whole seconds


@pytest.mark.parametrize("backend", PRUNE_BACKENDS)
async def test_prune_removes_idle_groups_whole_and_keeps_fresh_ones(
    factory: Factory, clock: FakeClock
) -> None:
    async with factory() as store:
        for group, key in [("old-1", "a"), ("old-1", "b"), ("old-2", "a"), ("other-old", "a")]:
            await store.set(group, key, {"v": key})
        await _let_time_pass(store, clock, 2.5)
        await store.set("fresh", "a", 1)
        await store.set("old-2", "b", 2)  # old-2 was written again: it is not idle

        before = await store.list_groups()
        listed = await store.prune_idle_groups(1.0, dry_run=True)
        assert [(idle.group_id, idle.items) for idle in listed] == [("old-1", 2), ("other-old", 1)]
        assert await store.list_groups() == before  # a dry run changes nothing

        removed = await store.prune_idle_groups(1.0, prefix="old", batch_size=1)
        assert [(idle.group_id, idle.items) for idle in removed] == [("old-1", 2)]
        assert await store.list_groups() == ["fresh", "old-2", "other-old"]
        removed = await store.prune_idle_groups(1.0)
        assert [idle.group_id for idle in removed] == ["other-old"]
        assert await store.list_groups() == ["fresh", "old-2"]
        assert await store.get_group("old-2") == [{"v": "a"}, 2]  # kept whole
        assert await store.prune_idle_groups(1.0) == []

        if is_motia_redis(store):
            # Redis keeps no idle time for a small integer (one object shared by every key
            # holding it): a group holding one is never taken for idle.
            await store.set("counter", "n", 7)
            await store.set("counter-text", "n", "seven")
            await _let_time_pass(store, clock, 2.5)
            removed = await store.prune_idle_groups(1.0, prefix="counter")
            assert [idle.group_id for idle in removed] == ["counter-text"]
            assert await store.get("counter", "n") == 7
        else:  # write times are kept: the newest write is reported
            await store.set("later", "k", 1)
            clock.advance(10)
            (idle,) = await store.prune_idle_groups(5.0, prefix="later", dry_run=True)
            assert idle.newest_write == clock() - 10


def _check_pruned(
    groups: list[str], written: set[str], removed: set[str], keys_of: dict[str, list[str]]
) -> None:
    """Each group was removed whole before any late write to it, or kept whole with it."""
    for group in groups:
        keys = keys_of.get(group)  # None: gone
        if group not in written:
            assert keys is None, group
            assert group in removed, group
        elif keys == ["late"]:  # removed whole, then written again
            assert group in removed, group
        else:
            assert keys is not None, group
            assert "late" in keys, (group, keys)
            assert len(keys) > 1, (group, keys)
            assert group not in removed, (group, keys)


@pytest.mark.parametrize("backend", [*PRUNE_BACKENDS, "file"])
async def test_a_group_written_after_it_was_found_idle_survives_whole(
    factory: Factory, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer lands between the prune finding a batch idle and removing it."""
    async with factory() as store:
        for group in ["idle-a", "idle-b", "idle-c"]:
            await store.set(group, "step", {"n": 1})
        if isinstance(store, FileStateAdapter):  # its age is the file's, in the OS's clock
            clock.now = time.time()
            os.utime(store.path / "motia.state.json", (clock() - 2.5, clock() - 2.5))
        else:
            await _let_time_pass(store, clock, 2.5)
        find = type(store)._idle_groups

        async def find_then_write(self: StateAdapter, *args: Any) -> list[Any]:
            found = await find(self, *args)
            if found:
                await store.set("idle-b", "late", {"n": 2})
            return found

        monkeypatch.setattr(type(store), "_idle_groups", find_then_write)
        removed = [idle.group_id for idle in await store.prune_idle_groups(1.0)]
        assert "idle-b" not in removed
        assert await store.get_group("idle-b") == [{"n": 2}, {"n": 1}]  # late, step: whole
        if isinstance(store, FileStateAdapter):
            assert removed == []  # the file was written since the cutoff: every group stays
        else:
            assert removed == ["idle-a", "idle-c"]


@pytest.mark.parametrize("backend", ["memory", "sqlite-file", "redis-native", "redis-motia", "postgres"])
async def test_a_group_written_during_the_prune_survives(factory: Factory, clock: FakeClock) -> None:
    async with factory() as store:
        groups = [f"trace-{n:03d}" for n in range(120)]
        for group in groups:
            await store.set(group, "step", {"n": 1})
        await _let_time_pass(store, clock, 2.5)
        written: set[str] = set()

        async def write_meanwhile() -> None:
            for group in random.Random(7).sample(groups, 40):
                await store.set(group, "late", {"n": 2})
                written.add(group)
                await asyncio.sleep(0)

        pruning = asyncio.create_task(store.prune_idle_groups(1.0, batch_size=7))
        await write_meanwhile()
        removed = {idle.group_id for idle in await pruning}
        keys_of = {group: await store.keys(group) for group in await store.list_groups()}
        _check_pruned(groups, written, removed, keys_of)


def _late_writer(path: str, groups: list[str], ready: EventType, stop: EventType, report: Any) -> None:
    async def main() -> None:
        done: list[tuple[str, float]] = []
        rng = random.Random(5)
        async with SqliteStateAdapter(path, busy_timeout=60) as store:
            while not stop.is_set():
                group = rng.choice(groups)
                await store.set(group, "late", 2)
                done.append((group, time.time()))
                ready.set()
                await asyncio.sleep(0)  # as fast as the lock allows: many writes land during the prune
        report.send(done)

    asyncio.run(main())


async def test_prune_in_one_process_while_another_writes(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    old = time.time() - 8 * 86_400
    groups = [f"trace-{n:05d}" for n in range(20_000)]
    async with SqliteStateAdapter(path, clock=lambda: old) as store, store.transaction() as tx:
        for group in groups:
            await tx.set(group, "a", 1)
            await tx.set(group, "b", 2)
    ready, stop = SPAWN.Event(), SPAWN.Event()
    receive, send = SPAWN.Pipe(duplex=False)
    writer = SPAWN.Process(target=_late_writer, args=(str(path), groups[:5000], ready, stop, send))
    writer.start()
    try:
        assert await asyncio.to_thread(ready.wait, 60)
        async with SqliteStateAdapter(path) as store:  # the writer is another process
            started = time.time()
            # Large batches: a write often lands between finding a batch idle and removing it.
            pruned = await store.prune_idle_groups(7 * 86_400, batch_size=2000)
            ended = time.time()
    finally:
        stop.set()
    acknowledged = await asyncio.to_thread(receive.recv)
    await asyncio.to_thread(writer.join, 60)
    assert writer.exitcode == 0
    assert sum(started < at < ended for _, at in acknowledged) >= 5, ended - started  # during the prune
    removed = {idle.group_id for idle in pruned}
    assert len(removed) > 15_000
    async with SqliteStateAdapter(path, read_only=True) as store:
        keys_of = {group: await store.keys(group) for group in await store.list_groups()}
    _check_pruned(groups, {group for group, _ in acknowledged}, removed, keys_of)
    assert _integrity(path) == "ok"


async def test_prune_on_motias_json_file_goes_by_the_files_age(tmp_path: Path) -> None:
    file = tmp_path / "motia.state.json"
    async with FileStateAdapter(tmp_path) as store:
        for group in ["trace-a", "trace-b", "orders"]:
            await store.set(group, "k", 1)
        old = time.time() - 3600
        os.utime(file, (old, old))
        listed = await store.prune_idle_groups(60, dry_run=True)
        assert [(idle.group_id, idle.newest_write) for idle in listed] == [  # type: ignore[comparison-overlap]
            ("orders", pytest.approx(old)),
            ("trace-a", pytest.approx(old)),
            ("trace-b", pytest.approx(old)),
        ]
        assert os.stat(file).st_mtime == pytest.approx(old)  # the dry run wrote nothing
        removed = await store.prune_idle_groups(60, prefix="trace-", batch_size=1)
        # One rewrite per batch: a prune's own rewrite does not make the rest look written.
        assert [idle.group_id for idle in removed] == ["trace-a", "trace-b"]
        assert await store.list_groups() == ["orders"]
        # The format keeps no times: any write since the cutoff keeps every group.
        await store.set("trace-c", "k", 1)
        assert await store.prune_idle_groups(60) == []
    assert json.loads(file.read_text()) == {"orders:k": "1", "trace-c:k": "1"}


async def test_prune_refuses_bad_arguments_before_anything(tmp_path: Path) -> None:
    async with MemoryStateAdapter() as store:
        await store.set("g", "k", 1)
        for bad in (0, -1, float("nan"), "7d", True, 1e12):
            with pytest.raises(InvalidOperationError, match="older_than"):
                await store.prune_idle_groups(bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidOperationError, match="batch_size"):
            await store.prune_idle_groups(1, batch_size=0)
        with pytest.raises(ValueError, match="group prefix"):
            await store.prune_idle_groups(1, prefix="")
    async with MemoryStateAdapter(read_only=True) as store:
        with pytest.raises(UnsupportedError):
            await store.prune_idle_groups(1)
        assert await store.prune_idle_groups(1, dry_run=True) == []
    assert parse_age("7d") == 7 * 86_400
    assert parse_age("1d12h") == 36 * 3600
    assert parse_age("90m") == 5400
    assert parse_age("2w") == 14 * 86_400
    assert parse_age("45") == 45
    for bad in ("", "7 days", "d", "0s", "1x", "-1d"):
        with pytest.raises(ConfigError):
            parse_age(bad)
    path = tmp_path / "state.db"
    async with SqliteStateAdapter(path) as store:
        await store.set("g", "k", 1)
    bad_age = _cli("prune", "--idle", "a week", "--url", f"sqlite:///{path}")
    assert bad_age.returncode == 2
    assert "not an age" in bad_age.stderr
    declined = subprocess.run(  # noqa: ASYNC221 - the test waits for it anyway
        [*CLI, "prune", "--idle", "1s", "--url", f"sqlite:///{path}"],
        input="n\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if declined.returncode == 0:  # run within a second of the write: nothing idle yet
        assert "Removed 0 groups" in declined.stderr
    else:
        assert declined.returncode == 1
        assert "nothing was removed" in declined.stderr
    async with SqliteStateAdapter(path, read_only=True) as store:
        assert await store.get("g", "k") == 1


async def test_prune_command_lists_asks_removes_and_prints(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    url = f"sqlite:///{path}"
    old = time.time() - 8 * 86_400
    async with SqliteStateAdapter(path, clock=lambda: old) as store:
        for group, key in [("trace-1", "a"), ("trace-1", "b"), ("trace-2", "a"), ("orders", "o")]:
            await store.set(group, key, 1)
    async with SqliteStateAdapter(path) as store:
        await store.set("trace-3", "a", 1)  # fresh

    def prune(*args: str, answer: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, "prune", "--idle", "7d", *args, "--url", url],
            input=answer, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    before = path.read_bytes()
    dry = prune("--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    listed = json.loads(dry.stdout)
    found = [(g["group"], g["items"]) for g in listed["groups"]]
    assert found == [("orders", 1), ("trace-1", 2), ("trace-2", 1)]
    assert listed["groups"][0]["newest_write"] == pytest.approx(old)
    assert (listed["dry_run"], listed["removed_groups"], listed["removed_items"]) == (True, 0, 0)
    assert path.read_bytes() == before  # the dry run changed nothing

    declined = prune("--group-prefix", "trace-", answer="n\n")
    assert declined.returncode == 1
    assert "Remove 2 groups (3 items) idle for over 7d" in declined.stderr
    assert "nothing was removed" in declined.stderr

    removed = prune("--group-prefix", "trace-", "--yes")
    assert removed.returncode == 0, removed.stderr
    rows = [line.split("\t") for line in removed.stdout.splitlines()]  # plain: not a terminal
    assert [(group, items) for group, items, _ in rows] == [("trace-1", "2"), ("trace-2", "1")]
    assert f"Removed 2 groups (3 items) idle for over 7d from {url}." in removed.stderr
    gone = prune("--yes", "--json")
    assert json.loads(gone.stdout)["removed_groups"] == 1  # orders
    async with SqliteStateAdapter(path, read_only=True) as store:
        assert await store.list_groups() == ["trace-3"]


# -- info -----------------------------------------------------------------------------------------

INFO_FIELDS = {
    "backend", "url", "schema_revision", "schema_head", "at_head", "items", "groups", "expired_items",
    "bytes_on_disk", "files", "memory_bytes", "oldest_updated_at", "newest_updated_at",
}  # fmt: skip


def test_info_json_on_an_empty_and_a_small_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    assert _cli("info", "--url", url).returncode == 1  # no store: not found, nothing created
    assert not (tmp_path / "state.db").exists()
    assert _cli("db", "upgrade", "--url", url).returncode == 0
    empty = json.loads(_cli("info", "--json", "--url", url).stdout)
    assert set(empty) == INFO_FIELDS
    assert empty["backend"] == "sqlite"
    assert empty["schema_revision"] == empty["schema_head"] == HEAD_REVISION
    assert empty["at_head"] is True
    assert (empty["items"], empty["groups"], empty["expired_items"]) == (0, 0, 0)
    assert empty["oldest_updated_at"] is None
    assert empty["newest_updated_at"] is None
    assert empty["bytes_on_disk"] == sum(empty["files"].values()) > 0

    started = time.time()
    for group, key in [("orders", "o1"), ("orders", "o2"), ("users", "u1")]:
        assert _cli("set", group, key, '{"n": 1}', "--url", url).returncode == 0
    assert _cli("set", "cache", "c", "1", "--ttl", "1", "--url", url).returncode == 0
    time.sleep(1.1)
    small = json.loads(_cli("info", "--json", "--url", url).stdout)
    assert (small["items"], small["groups"], small["expired_items"]) == (3, 2, 1)
    assert started <= small["oldest_updated_at"] <= small["newest_updated_at"] <= time.time()
    assert str(tmp_path / "state.db") in small["files"]
    table = _cli("info", "--url", url).stdout
    assert "items\t3" in table
    assert f"{HEAD_REVISION} (head)" in table


def _files(folder: Path) -> dict[str, bytes | None]:
    """The files in ``folder`` and their bytes (a -shm file's: SQLite's readers mark it)."""
    return {
        path.name: None if path.name.endswith("-shm") else path.read_bytes() for path in folder.iterdir()
    }


def test_info_on_a_sqlite_database_behind_head_reports_it_and_changes_nothing(tmp_path: Path) -> None:
    """Behind head: no schema stamp (no tables at all, or a table whose stamp was removed)."""
    blank = tmp_path / "blank"
    blank.mkdir()
    with sqlite3.connect(blank / "state.db") as raw:
        raw.execute("PRAGMA user_version = 0")  # a database file with no tables
    unstamped = tmp_path / "unstamped"
    unstamped.mkdir()
    url = f"sqlite:///{unstamped / 'state.db'}"
    for group, key in [("orders", "o1"), ("orders", "o2"), ("users", "u1")]:
        assert _cli("set", group, key, '{"n": 1}', "--url", url).returncode == 0
    with sqlite3.connect(unstamped / "state.db") as raw:
        raw.execute("DROP TABLE alembic_version")
    for folder, counts in [(blank, (0, 0, 0)), (unstamped, (3, 2, 0))]:
        before = _files(folder)
        done = _cli("info", "--json", "--url", f"sqlite:///{folder / 'state.db'}")
        assert done.returncode == 0, done.stderr
        info = json.loads(done.stdout)
        assert (info["schema_revision"], info["schema_head"], info["at_head"]) == (None, HEAD_REVISION, False)
        assert (info["items"], info["groups"], info["expired_items"]) == counts
        assert info["bytes_on_disk"] == sum(info["files"].values()) > 0
        table = _cli("info", "--url", f"sqlite:///{folder / 'state.db'}")
        assert table.returncode == 0, table.stderr
        assert f"none (head is {HEAD_REVISION})" in table.stdout
        assert _files(folder) == before  # no migration, no write, no file left beside it
    assert _cli("db", "current", "--url", f"sqlite:///{blank / 'state.db'}").stdout.startswith("none")

    async def through_the_api() -> None:
        store = SqliteStateAdapter(unstamped / "state.db", read_only=True)
        try:
            info = await store.store_info()
            assert (info.items, info.groups, info.schema_revision) == (3, 2, None)
            with pytest.raises(SchemaError, match="not at schema revision"):  # reads stay refused
                await store.get("orders", "o1")
        finally:
            await store.close()

    asyncio.run(through_the_api())

    with sqlite3.connect(tmp_path / "newer.db") as raw:
        raw.execute("CREATE TABLE alembic_version (version_num TEXT)")
        raw.execute("INSERT INTO alembic_version VALUES ('9999')")
    with sqlite3.connect(tmp_path / "foreign.db") as raw:
        raw.execute("CREATE TABLE invoices (id INTEGER)")
    for name, says in [("newer.db", "newer version"), ("foreign.db", "someone else's database")]:
        refused = _cli("info", "--url", f"sqlite:///{tmp_path / name}")
        assert refused.returncode == 2, refused.stderr
        assert says in refused.stderr


def test_info_on_a_postgres_schema_behind_head_reports_it_and_changes_nothing(postgres_url: str) -> None:
    schema = f"info_{os.getpid()}_{time.monotonic_ns()}"
    url = f"{postgres_url}?schema={schema}"
    done = _cli("info", "--json", "--url", url)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert (info["backend"], info["schema_revision"], info["at_head"]) == ("postgres", None, False)
    assert (info["items"], info["groups"], info["expired_items"]) == (0, 0, 0)
    assert _cli("db", "current", "--json", "--url", url).stdout.count('"revision":null') == 1  # not created

    assert _cli("set", "g", "k", "1", "--url", url).returncode == 0  # now at head
    at_head = json.loads(_cli("info", "--json", "--url", url).stdout)
    assert (at_head["schema_revision"], at_head["at_head"], at_head["items"]) == (HEAD_REVISION, True, 1)
    assert at_head["bytes_on_disk"] == sum(at_head["files"].values()) > 0

    async def break_schemas() -> None:
        import asyncpg

        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute(f'UPDATE "{schema}".motia_state_version SET version_num = \'9999\'')
            await conn.execute(f'CREATE SCHEMA "{schema}_x"')
            await conn.execute(f'CREATE TABLE "{schema}_x".motia_state (id int)')  # not ours
        finally:
            await conn.close()

    asyncio.run(break_schemas())
    for where, says in [(url, "newer version"), (f"{url}_x", "someone else's table")]:
        refused = _cli("info", "--url", where)
        assert refused.returncode == 2, refused.stderr
        assert says in refused.stderr


async def test_info_of_every_backend(factory: Factory, backend: str, clock: FakeClock) -> None:
    async with factory() as store:
        empty = await store.store_info()
        assert (empty.items, empty.groups) == (0, 0)
        await store.set("a", "1", 1)
        await store.set("a", "2", 2)
        clock.advance(5)
        await store.set("b", "1", 3)
        info = await store.store_info()
        assert (info.backend, info.items, info.groups) == (store.kind, 3, 2)
        if backend in ("file", "redis-motia"):  # no write times kept
            assert info.oldest_updated_at is None
        else:
            assert (info.oldest_updated_at, info.newest_updated_at) == (clock() - 5, clock())
        if backend in ("redis-native", "redis-motia"):  # a Cluster's is per node: not given
            assert info.memory_bytes is not None
            assert info.memory_bytes > 0
        if backend in ("sqlite-file", "postgres"):  # PostgreSQL: the table with its indexes
            assert info.bytes_on_disk is not None
            assert info.bytes_on_disk > 0
        if backend in ("sqlite-file", "sqlite-memory", "postgres"):
            assert info.schema_revision == info.schema_head == HEAD_REVISION
        else:
            assert info.schema_revision is info.schema_head is None


def test_info_on_a_million_items_answers_within_seconds(tmp_path: Path) -> None:
    path = tmp_path / "big.db"
    assert _cli("db", "upgrade", "--url", f"sqlite:///{path}").returncode == 0
    now = time.time()
    with sqlite3.connect(path) as raw:  # the same schema, filled fast
        raw.executemany(
            "INSERT INTO motia_state (group_id, key, value, version, created_at, updated_at, expires_at) "
            "VALUES (?, ?, ?, 1, ?, ?, ?)",
            (
                (f"trace-{n // 10:06d}", f"step-{n % 10}", f'{{"n":{n}}}', now - n, now - n,
                 now - 60 if n % 1000 == 999 else None)
                for n in range(1_000_000)
            ),
        )  # fmt: skip
    started = time.perf_counter()
    done = _cli("info", "--json", "--url", f"sqlite:///{path}")
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert seconds < 5, seconds
    assert info["items"] == 999_000
    assert info["expired_items"] == 1000
    assert info["groups"] == 100_000
    assert info["oldest_updated_at"] == pytest.approx(now - 999_998)
    assert info["newest_updated_at"] == pytest.approx(now)


@pytest.mark.parametrize("layout", ["native", "motia"])
async def test_redis_info_reads_no_values_and_pipelines_its_scripts(layout: Any) -> None:
    """Names come from SCAN pages of 10 000; native's per-group scripts share round trips."""
    import redis

    server = RedisServer()  # of its own: its counters count this test alone
    server.start()
    try:
        async with RedisStateAdapter(server.url, layout=layout, key_prefix="big:") as store:
            for start in range(0, 30_000, 5000):
                burst = range(start, start + 5000)
                await asyncio.gather(*(store.set(f"trace-{n % 3000}", f"step-{n}", {"n": n}) for n in burst))
            await asyncio.gather(*(store.set(f"cache-{n}", "c", n, ttl=0.05) for n in range(100)))
            await asyncio.sleep(0.1)  # expired: native still holds them, Redis has dropped Motia's
            with redis.Redis.from_url(server.url) as raw:
                raw.set("other-app:key", "not ours")
                raw.config_resetstat()
                info = await store.store_info()
                reads = int(raw.info("stats")["total_reads_processed"])
                calls = {name[8:]: stat["calls"] for name, stat in raw.info("commandstats").items()}
        assert (info.items, info.groups) == (30_000, 3000)
        assert calls.get("scan", 0) <= 6  # 3000 groups x 2 keys (native) or 30 000 keys, 10 000 a page
        assert not {"get", "mget", "hgetall", "hget"} & set(calls)  # no value leaves the server
        if layout == "native":
            assert info.expired_items == 100
            # One small script per group, reading its record headers on the server ...
            assert calls["hvals"] == 3100
            assert reads < 300  # ... pipelined: many per round trip
        else:
            assert info.expired_items is None
            assert "evalsha" not in calls  # the key names say it all
    finally:
        server.close()


# -- vacuum ---------------------------------------------------------------------------------------


async def test_vacuum_gives_space_back_and_keeps_every_item(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with SqliteStateAdapter(path) as store:
        async with store.transaction() as tx:
            for n in range(2000):
                await tx.set("bulk", f"k{n}", "x" * 2000)
        await store.set("keep", "k", {"kept": True})
        await store.clear("bulk")
    done = _cli("db", "vacuum", "--json", "--url", f"sqlite:///{path}")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["bytes_after"] < report["bytes_before"] / 4
    assert _integrity(path) == "ok"
    async with SqliteStateAdapter(path, read_only=True) as store:
        assert await store.items() != []
        assert await store.get("keep", "k") == {"kept": True}
    assert "before" in _cli("db", "vacuum", "--url", f"sqlite:///{path}").stdout
    assert _cli("db", "vacuum", "--url", "memory://").returncode == 2


# -- ping -----------------------------------------------------------------------------------------


def test_ping_running_stopped_and_read_only_stores(tmp_path: Path, redis_url: str) -> None:
    path = tmp_path / "state.db"
    assert _cli("db", "upgrade", "--url", f"sqlite:///{path}").returncode == 0
    ok = _cli("ping", "--url", f"sqlite:///{path}")
    assert ok.returncode == 0
    assert "answered a read and a write" in ok.stdout
    with sqlite3.connect(path) as raw:  # the throwaway item was deleted again
        assert raw.execute("SELECT count(*) FROM motia_state").fetchone() == (0,)
    assert _cli("ping", "--url", redis_url).returncode == 0
    assert json.loads(_cli("ping", "--json", "--url", f"{redis_url}?layout=motia").stdout)["ok"] is True
    assert _cli("ping", "--url", "memory://").returncode == 0
    assert _cli("ping", "--url", f"file://{tmp_path / 'legacy'}").returncode == 3  # no file: not there

    missing = _cli("ping", "--url", f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")
    assert missing.returncode == 3
    assert "no state store" in missing.stderr
    assert not (tmp_path / "no").exists()  # a ping never creates a store

    dead = RedisServer()
    dead.start()
    dead.stop()  # nothing listens on its port any more
    started = time.perf_counter()
    down = _cli("ping", "--timeout", "1", "--url", dead.url)
    assert down.returncode == 3, down.stderr
    assert time.perf_counter() - started < 10
    dead.close()

    read_only = _cli("ping", "--url", f"sqlite:///{path}?mode=ro")
    assert read_only.returncode == 3
    assert "read-only" in read_only.stderr
    assert _cli("ping", "--read-only", "--url", f"sqlite:///{path}?mode=ro").returncode == 0

    primary_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    replica = RedisServer(None, "--replicaof", "127.0.0.1", str(primary_port))
    replica.start()
    try:
        refused = _cli("ping", "--url", replica.url)
        assert refused.returncode == 3
        assert "read only replica" in refused.stderr
        assert _cli("ping", "--read-only", "--url", replica.url).returncode == 0
    finally:
        replica.close()


def test_ping_a_running_stopped_and_read_only_postgres(postgres_url: str) -> None:
    from benchmarks.redis_server import free_port

    url = f"{postgres_url}?schema=ping_{os.getpid()}_{time.monotonic_ns()}"
    ok = _cli("ping", "--json", "--url", url)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["ok"] is True
    assert _cli("ping", "--read-only", "--url", f"{url}&mode=ro").returncode == 0
    refused = _cli("ping", "--url", f"{url}&mode=ro")  # may not write: unavailable to writers
    assert refused.returncode == 3, refused.stderr
    assert "read-only" in refused.stderr
    nobody = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"  # nothing listens there
    started = time.perf_counter()
    down = _cli("ping", "--timeout", "1", "--url", nobody)
    assert down.returncode == 3, down.stderr
    assert time.perf_counter() - started < 10


async def test_ping_group_is_left_empty(tmp_path: Path) -> None:
    assert _cli("ping", "--url", f"file://{tmp_path}").returncode == 3
    async with FileStateAdapter(tmp_path) as store:
        await store.set("g", "k", 1)
    assert _cli("ping", "--url", f"file://{tmp_path}").returncode == 0
    async with FileStateAdapter(tmp_path) as store:
        assert await store.list_groups() == ["g"]
        assert await store.keys(PING_GROUP) == []


@pytest.mark.parametrize("backend", ["memory", "sqlite-file", "redis-native", "file", "postgres"])
async def test_idle_group_ttl_prunes_in_the_background(factory: Factory, clock: FakeClock) -> None:
    on_file = factory().kind == "file"
    if on_file:
        clock.now = time.time()  # the file's age is in the OS's clock
    async with factory(idle_group_ttl=2.0) as store:
        await store.set("old", "k", {"n": 1})  # the first call starts the pruner: every 1 s
        if not on_file:
            clock.advance(5)
        for _ in range(100):  # the file: once nothing was written for 2 s
            if await store.list_groups() == []:
                break
            await asyncio.sleep(0.1)
            if on_file:
                clock.now = time.time()
        assert await store.list_groups() == []
        await store.set("fresh", "k", {"n": 2})
        await asyncio.sleep(1.2)  # at least one more round
        assert await store.list_groups() == ["fresh"]  # written within the ttl: kept
    async with factory() as store:  # off by default: nothing is pruned
        await store.set("old", "k", {"n": 1})
        clock.advance(5)
        await asyncio.sleep(1.2)
        assert "old" in await store.list_groups()


_UNCLOSED = """
import asyncio, gc, sys, weakref
from motia_state_sql import open_state

url, how = sys.argv[1], sys.argv[2]
kept = []

async def use() -> weakref.ref | None:
    store = open_state(url, idle_group_ttl=3600)
    await store.set("g", "k", 1)  # starts the background pruner
    if how == "close":
        await store.close()
    if how in ("loop-ends", "run"):  # never closed, still there when the loop ends
        kept.append(store)
        return None
    return weakref.ref(store)

async def main() -> None:
    gone = await use()
    gc.collect()
    if gone is not None:
        await asyncio.sleep(0.05)
        assert gone() is None, "the pruner keeps the adapter alive"
        assert asyncio.all_tasks() == {asyncio.current_task()}, asyncio.all_tasks()
    print("done")

if how == "run":
    asyncio.run(main())
else:
    loop = asyncio.new_event_loop()
    loop.run_until_complete(main())
    loop.close()
    gc.collect()
"""


@pytest.mark.parametrize("how", ["loop-ends", "run", "collect", "close"])
@pytest.mark.parametrize("url", ["memory://", "sqlite"])
def test_background_pruning_ends_cleanly_with_its_loop_or_adapter(tmp_path: Path, url: str, how: str) -> None:
    """An adapter with idle_group_ttl leaves no pending task behind, closed or not."""
    url = f"sqlite:///{tmp_path / 'state.db'}" if url == "sqlite" else url
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-c", _UNCLOSED, url, how],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "done\n"
    assert "Task was destroyed but it is pending" not in done.stderr
    assert "never awaited" not in done.stderr
    assert "Traceback" not in done.stderr, done.stderr


# -- documentation --------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION_COMMANDS = ["backup", "info", "prune", "ping", "db vacuum"]


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    kept = "".join(c for c in heading.lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


def test_production_commands_are_documented_and_linked_from_the_readme() -> None:
    reference = (ROOT / "docs" / "cli.md").read_text()
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Running in production\n", 1)[1].split("\n## ", 1)[0]
    headings = {line[4:] for line in reference.splitlines() if line.startswith("### ")}
    for command in PRODUCTION_COMMANDS:
        (heading,) = (h for h in headings if h.startswith(f"`motia-state {command} "))
        entry = reference.split(f"### {heading}\n", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
        assert f"```sh\nmotia-state {command}" in entry, f"docs/cli.md: no example of {command}"
        assert "Exit codes: 0" in entry, f"docs/cli.md: no exit codes for {command}"
        assert f"(docs/cli.md#{_anchor(heading)})" in section, f"README does not link {command}"
    for topic in ("**Backup", "**Old workflow state", "**Health checks", "**Durability settings"):
        assert topic in section
    assert "synchronous" in section
    assert "appendfsync" in section
