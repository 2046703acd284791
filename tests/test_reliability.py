"""Reliability: real processes, real kills, damaged files, full disks, cancellation, TLS.

docs/reliability.md lists each test, what it proves and its figures.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Coroutine
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

from benchmarks.redis_server import RedisServer
from motia_state_sql import (
    FileStateAdapter,
    PostgresStateAdapter,
    RedisStateAdapter,
    SchemaError,
    SqliteStateAdapter,
    StateAdapter,
    StateTransaction,
    StoreUnavailableError,
    increment,
    open_state,
)

SPAWN = multiprocessing.get_context("spawn")
PROCESS_BACKENDS = ["sqlite", "redis-native", "redis-motia", "postgres"]


def _store(backend: str, where: str) -> StateAdapter:
    """``where`` is the SQLite path, or ``<redis url>|<key prefix>``, or ``<postgres url>|<schema>``."""
    if backend == "sqlite":
        return SqliteStateAdapter(where, busy_timeout=60)
    url, prefix = where.split("|")
    if backend == "postgres":
        return PostgresStateAdapter(url, schema=prefix, command_timeout=60)
    return RedisStateAdapter(
        url, key_prefix=prefix, layout="native" if backend == "redis-native" else "motia"
    )


def _where(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return str(tmp_path / "state.db")
    if backend == "postgres":
        return f"{request.getfixturevalue('postgres_url')}|rel_{uuid.uuid4().hex[:10]}"
    return f"{request.getfixturevalue('redis_url')}|rel:{uuid.uuid4().hex[:10]}:"


def _run_processes(target: Any, args: list[tuple[Any, ...]]) -> None:
    procs = [SPAWN.Process(target=target, args=a) for a in args]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(180)
        assert proc.exitcode == 0


# -- 1. lost updates ---------------------------------------------------------------------------


def _increment_worker(backend: str, where: str, count: int) -> None:
    async def main() -> None:
        async with _store(backend, where) as store:
            for _ in range(count):
                await store.update("c", "k", [increment("n")])

    asyncio.run(main())


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
async def test_four_processes_lose_no_increment(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    where = _where(backend, tmp_path, request)
    await asyncio.to_thread(_run_processes, _increment_worker, [(backend, where, 1000)] * 4)
    async with _store(backend, where) as store:
        assert await store.get("c", "k") == {"n": 4000}


def _transfer_worker(backend: str, where: str, count: int, seed: int) -> None:
    rng = random.Random(seed)

    async def move(tx: StateTransaction) -> None:
        src, dst = rng.sample(["a", "b", "c", "d"], 2)
        amount = rng.randint(1, 20)
        have = await tx.get("acct", src)
        if have >= amount:
            await tx.set("acct", src, have - amount)
            await tx.set("acct", dst, await tx.get("acct", dst) + amount)

    async def main() -> None:
        async with _store(backend, where) as store:
            for _ in range(count):
                await store.run_transaction(move, attempts=200)

    asyncio.run(main())


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
async def test_transfers_between_processes_keep_the_total(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    where = _where(backend, tmp_path, request)
    async with _store(backend, where) as store:
        for name in "abcd":
            await store.set("acct", name, 250)

    async def watch() -> list[int]:
        totals = []
        async with _store(backend, where) as store:
            while not done.is_set():
                totals.append(sum(await store.get_group("acct")))
                await asyncio.sleep(0.01)
        return totals

    done = asyncio.Event()
    watcher = asyncio.create_task(watch())
    await asyncio.to_thread(
        _run_processes, _transfer_worker, [(backend, where, 200, seed) for seed in range(3)]
    )
    done.set()
    assert set(await watcher) <= {1000}  # a reader never sees money in flight
    async with _store(backend, where) as store:
        balances = await store.get_group("acct")
        assert sum(balances) == 1000
        assert min(balances) >= 0


# -- 2. crashes --------------------------------------------------------------------------------


def _writer_until_killed(backend: str, where: str, pipe: Connection, start: int, transactions: bool) -> None:
    async def main() -> None:
        async with _store(backend, where) as store:
            n = start
            while True:
                if transactions:
                    async with store.transaction() as tx:
                        for k in range(10):
                            await tx.set(f"t{n}", f"k{k}", n)
                else:
                    await store.set("acked", f"k{n}", {"n": n, "pad": "x" * 500})
                pipe.send(n)  # only after the write was acknowledged
                n += 1

    asyncio.run(main())


def _kill_at_random(
    path: str, start: int, transactions: bool, rng: random.Random, backend: str = "sqlite"
) -> tuple[list[int], int]:
    parent, child = SPAWN.Pipe(duplex=False)
    proc = SPAWN.Process(target=_writer_until_killed, args=(backend, path, child, start, transactions))
    proc.start()
    child.close()
    acked: list[int] = []
    deadline = time.monotonic() + 30
    while not acked and time.monotonic() < deadline:  # wait until it writes, then let it run a bit
        if parent.poll(0.05):
            acked.append(parent.recv())
    time.sleep(rng.uniform(0.01, 0.3))
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    while parent.poll():
        try:
            acked.append(parent.recv())
        except EOFError:
            break
    return acked, proc.exitcode or 0


def _integrity(path: str) -> str:
    with sqlite3.connect(path) as raw:
        return str(raw.execute("PRAGMA integrity_check").fetchone()[0])


def test_sigkill_loses_no_acknowledged_write(tmp_path: Path) -> None:
    path = str(tmp_path / "crash.db")
    rng = random.Random(2024)
    acked_total: set[int] = set()
    start = 0
    for _ in range(20):
        acked, code = _kill_at_random(path, start, False, rng)
        assert code == -signal.SIGKILL
        assert acked, "the child acknowledged no write before the kill"
        acked_total.update(acked)
        start = max(acked) + 1_000  # next child writes fresh keys
        assert _integrity(path) == "ok"
        with sqlite3.connect(path) as raw:
            stored = {
                int(k[1:]) for (k,) in raw.execute("SELECT key FROM motia_state WHERE group_id = 'acked'")
            }
        assert acked_total <= stored, sorted(acked_total - stored)[:10]


async def _group_sizes(backend: str, where: str) -> dict[str, int]:
    async with _store(backend, where) as store:
        return {group: len(await store.keys(group)) for group in await store.list_groups()}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sigkill_mid_transaction_is_all_or_nothing(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    where = _where(backend, tmp_path, request)
    rng = random.Random(7)
    start = 0
    for _ in range(10):
        acked, _ = _kill_at_random(where, start, True, rng, backend)
        assert acked
        if backend == "sqlite":
            assert _integrity(where) == "ok"
        counts = asyncio.run(_group_sizes(backend, where))
        assert set(counts.values()) == {10}, counts  # every transaction landed whole or not at all
        assert {f"t{n}" for n in acked} <= set(counts)
        start = max(acked) + 1_000


# -- 3. damaged files --------------------------------------------------------------------------


@pytest.mark.parametrize("cut", ["half", "one page short", "header only"])
async def test_truncated_database_is_refused_untouched(tmp_path: Path, cut: str) -> None:
    path = tmp_path / "t.db"
    async with SqliteStateAdapter(path) as store, store.transaction() as tx:
        for n in range(2000):
            await tx.set("g", f"k{n}", {"pad": "x" * 200})
    size = path.stat().st_size
    keep = {"half": size // 2, "one page short": size - 4096, "header only": 100}[cut]
    os.truncate(path, keep)
    before = path.read_bytes()
    for call in ("get", "set"):
        store = SqliteStateAdapter(path)
        use = store.get("g", "k1") if call == "get" else store.set("g", "new", 1)
        with pytest.raises(SchemaError, match="damaged"):
            await use
        await store.close()
    assert path.read_bytes() == before
    assert not (tmp_path / "t.db-wal").exists() or (tmp_path / "t.db-wal").stat().st_size == 0


# -- 4. full disk ------------------------------------------------------------------------------

_FULL_DISK_CHILD = textwrap.dedent(
    """
    import asyncio, resource, signal, sys
    from motia_state_sql import StoreUnavailableError, open_state

    url, limit = sys.argv[1], int(sys.argv[2])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead

    async def main():
        async with open_state(url) as store:
            await store.set("g", "first", 0)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
            acked = 0
            try:
                for n in range(100_000):
                    await store.set("g", f"k{n}", "x" * 4000)
                    acked += 1
            except StoreUnavailableError as exc:
                print("error:", exc)
            else:
                raise SystemExit("the size limit never stopped a write")
            for n in range(acked):
                assert await store.get("g", f"k{n}") == "x" * 4000, n
            resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            await store.set("g", "after", 1)  # space again: the same store works
            assert await store.get("g", "after") == 1
            print("acked:", acked)

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("scheme", ["sqlite", "file"])
def test_full_disk_fails_clearly_and_recovers(tmp_path: Path, scheme: str) -> None:
    url = f"sqlite:///{tmp_path}/full.db" if scheme == "sqlite" else f"file://{tmp_path}/legacy"
    run = subprocess.run(
        [sys.executable, "-c", _FULL_DISK_CHILD, url, str(256 * 1024)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    error = next(line for line in run.stdout.splitlines() if line.startswith("error:"))
    assert "full.db" in error or "motia.state.json" in error
    acked = int(run.stdout.rsplit("acked:", 1)[1])
    assert acked > 10
    if scheme == "sqlite":
        assert _integrity(str(tmp_path / "full.db")) == "ok"


# -- 6. cancellation ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
async def test_cancelled_writes_updates_and_transactions(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    rng = random.Random(11)
    async with _store(backend, _where(backend, tmp_path, request)) as store:

        async def transaction(n: int) -> None:
            async with store.transaction() as tx:
                for k in range(5):
                    await tx.set(f"t{n}", f"k{k}", n)
                    await asyncio.sleep(0)

        def operation(n: int) -> Coroutine[Any, Any, Any]:
            kind = n % 3
            if kind == 0:
                return store.set("plain", f"k{n}", n)
            if kind == 1:
                return store.update("counter", "c", [increment("n")])
            return transaction(n)

        finished: set[int] = set()  # calls that returned before their cancel arrived
        for n in range(300):
            task = asyncio.create_task(operation(n))
            await asyncio.sleep(rng.choice([0, 0, 0.0005, 0.001, 0.003]))
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            if not task.cancelled() and task.exception() is None:
                finished.add(n)
        assert 0 < len(finished) < 300  # both outcomes happened
        for group in await store.list_groups():
            if group.startswith("t"):
                assert await store.get_group(group) == [int(group[1:])] * 5, group
        for n in finished:
            if n % 3 == 2:
                assert await store.get_group(f"t{n}") == [n] * 5, n
        # A cancelled update may or may not have landed, but never twice, and never lost once
        # its caller saw it return.
        updates = range(1, 300, 3)
        counter = (await store.get("counter", "c")) or {"n": 0}
        assert len(finished.intersection(updates)) <= counter["n"] <= len(updates)
        for n in range(0, 300, 3):
            assert await store.get("plain", f"k{n}") in ((n,) if n in finished else (None, n))
        await store.set("after", "k", "fine")
        assert await store.get("after", "k") == "fine"


# -- 8. security -------------------------------------------------------------------------------


async def test_new_legacy_files_are_private(tmp_path: Path) -> None:
    async with FileStateAdapter(tmp_path) as store:
        await store.set("g", "k", 1)
    assert (tmp_path / "motia.state.json").stat().st_mode & 0o777 == 0o600


async def test_database_file_mode_is_configurable(tmp_path: Path) -> None:
    async with SqliteStateAdapter(tmp_path / "shared.db", file_mode=0o640) as store:
        await store.set("g", "k", 1)
        for name in ("shared.db", "shared.db-wal", "shared.db-shm"):
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o640, name


def _tls_material(folder: Path) -> None:
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=motia-state-test-ca",
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    )


async def test_redis_over_tls_with_a_self_signed_certificate(tmp_path: Path) -> None:
    _tls_material(tmp_path)
    secret = "tls-" + uuid.uuid4().hex
    server = RedisServer(
        None,
        "--tls-cert-file",
        str(tmp_path / "server.pem"),
        "--tls-key-file",
        str(tmp_path / "server.key"),
        "--tls-ca-cert-file",
        str(tmp_path / "ca.pem"),
        "--tls-auth-clients",
        "no",
        "--requirepass",
        secret,
    )
    # TLS on the server's port; the plain port is switched off
    server.extra += ["--tls-port", str(server.port), "--port", "0"]
    server.start(tls_ca=str(tmp_path / "ca.pem"))
    try:
        url = f"rediss://:{secret}@127.0.0.1:{server.port}/0"
        async with open_state(f"{url}?ssl_ca_certs={tmp_path / 'ca.pem'}&key_prefix=tls:") as store:
            await store.set("g", "k", {"secure": True})
            assert await store.get("g", "k") == {"secure": True}
            assert secret not in repr(store)
        # without our CA the certificate cannot be verified: a clear error, no password in it
        async with open_state(f"{url}?key_prefix=tls:&connect_timeout=2") as store:
            with pytest.raises(StoreUnavailableError) as info:
                await store.get("g", "k")
            assert secret not in str(info.value)
    finally:
        server.close()
