"""The Python baselines: raw sqlite3, bare redis-py, bare asyncpg, diskcache, the JSON file
stand-in, start-up.

Each is the floor or the alternative a backend is compared with; it runs through the same arrival
patterns (``sync_op`` wraps the synchronous ones) and the same runner. Motia's own Node adapters
are in ``benchmarks/node.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import asyncpg
import diskcache
import redis.asyncio as aioredis

from motia_state_sql.bench.workloads import ENCODED, VALUE, Timing
from motia_state_sql.postgres.adapter import DEFAULT_MAX_CONNECTIONS
from motia_state_sql.postgres.migrate import quote

#: A connection pool of the size RedisStateAdapter uses by default.
POOL_SIZE: Final = 64


class RawSqlite:
    """The floor: plain sqlite3, WAL, one commit per write, on the same table shape."""

    def __init__(self, path: Path, synchronous: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS t (g TEXT, k TEXT, v TEXT, PRIMARY KEY (g, k)) WITHOUT ROWID"
        )

    def set(self, group: str, key: str) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("INSERT OR REPLACE INTO t VALUES (?, ?, ?)", (group, key, ENCODED))
        self.db.execute("COMMIT")

    def get(self, group: str, key: str) -> Any:
        row = self.db.execute("SELECT v FROM t WHERE g = ? AND k = ?", (group, key)).fetchone()
        return json.loads(row[0]) if row else None

    def fill(self, group: str, start: int, stop: int) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany(
            "INSERT OR REPLACE INTO t VALUES (?, ?, ?)",
            ((group, f"k{i}", ENCODED) for i in range(start, stop)),
        )
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()


class JsonFileStore:
    """A Python stand-in for Motia's default store: one JSON file, rewritten on every write."""

    def __init__(self, path: Path, items: int) -> None:
        self.path = path
        self.data = {f"g:k{i}": ENCODED for i in range(items)}
        self.path.write_text(json.dumps(self.data, indent=2))

    def set(self, key: str) -> None:
        self.data[f"g:{key}"] = json.dumps(VALUE)
        self.path.write_text(json.dumps(self.data, indent=2))


def fill_cache(cache: diskcache.Cache, group: str, start: int, stop: int) -> None:
    for at in range(start, stop, 5_000):
        with cache.transact():
            for i in range(at, min(stop, at + 5_000)):
                cache.set(f"{group}:k{i}", VALUE)


def bare_redis(url: str, pooled: bool) -> aioredis.Redis:
    """redis-py with nothing of ours: one client, through a blocking pool of ``POOL_SIZE`` when
    ``pooled`` (what a ``gather`` of thousands needs), else redis-py's default pool."""
    if pooled:
        return aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool.from_url(url, max_connections=POOL_SIZE)
        )
    return aioredis.Redis.from_url(url)


async def fill_redis(client: aioredis.Redis, prefix: str, count: int) -> None:
    """``<prefix>k0`` .. ``<prefix>k<count - 1>``, 500 to a pipeline."""
    for at in range(0, count, 500):
        async with client.pipeline(transaction=False) as pipe:
            for i in range(at, min(count, at + 500)):
                pipe.set(f"{prefix}k{i}", ENCODED)
            await pipe.execute()


class BarePostgres:
    """asyncpg with nothing of ours, in a schema of its own: a table of the same shape, one
    ``INSERT ... ON CONFLICT`` or ``SELECT`` per call, on one connection or through a pool of the
    size PostgresStateAdapter uses by default (each call autocommits, as ours do)."""

    def __init__(self, conn: asyncpg.Connection, pool: asyncpg.Pool, table: str) -> None:
        self.conn = conn
        self.pool = pool
        self.upsert = (
            f"INSERT INTO {table} (g, k, v) VALUES ($1, $2, $3) "
            "ON CONFLICT (g, k) DO UPDATE SET v = excluded.v"
        )
        self.select = f"SELECT v FROM {table} WHERE g = $1 AND k = $2"

    @classmethod
    async def open(cls, url: str, schema: str) -> BarePostgres:
        table = f"{quote(schema)}.t"
        conn = await asyncpg.connect(url)
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
        await conn.execute(
            f'CREATE TABLE IF NOT EXISTS {table} (g text COLLATE "C", k text COLLATE "C", v text, '
            "PRIMARY KEY (g, k))"
        )
        pool = await asyncpg.create_pool(
            url, min_size=DEFAULT_MAX_CONNECTIONS, max_size=DEFAULT_MAX_CONNECTIONS
        )
        return cls(conn, pool, table)

    async def fill(self, group: str, count: int) -> None:
        """``k0`` .. ``k<count - 1>`` in ``group``, one transaction."""
        async with self.conn.transaction():
            await self.conn.executemany(self.upsert, [(group, f"k{i}", ENCODED) for i in range(count)])

    async def close(self) -> None:
        await self.pool.close()
        await self.conn.close()


# -- start-up -----------------------------------------------------------------------------------

#: The modules ``import motia_state_sql`` must not load (issue 13: start-up).
HEAVY: Final = ("sqlalchemy", "alembic", "redis")


def heavy_imports() -> list[str]:
    """Which of ``HEAVY`` a fresh interpreter holds after ``import motia_state_sql``."""
    code = f"import json, sys, motia_state_sql; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    found: list[str] = json.loads(out.stdout)
    return found


def motia_state_command() -> list[str]:
    """``motia-state`` as installed beside this interpreter, else ``python -m motia_state_sql``."""
    script = Path(sys.executable).parent / "motia-state"
    return [str(script)] if script.exists() else [sys.executable, "-m", "motia_state_sql"]


def _installed_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a start-up run: Python may write bytecode caches.

    ``pip install`` leaves every module compiled; with ``PYTHONDONTWRITEBYTECODE`` set (as on the
    CI machines) an editable install and the venv's packages would instead be compiled from
    source on every run, and the rows would measure the compiler, not start-up. The discarded
    warm-up run writes the caches.
    """
    env = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    return {**env, **(extra or {})}


@dataclass
class CommandSpec:
    """Runs of a command, one after another: each run is one operation."""

    backend: str
    command: list[str]
    count: int
    workload: str = "run"

    @property
    def key(self) -> tuple[str, str]:
        return self.backend, self.workload

    async def measure(self, tag: int, start: int, count: int) -> Timing:
        latencies = []
        began = time.perf_counter()
        for _ in range(count):
            started = time.perf_counter()
            process = await asyncio.create_subprocess_exec(
                *self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_installed_env()
            )
            if await process.wait() != 0:
                raise RuntimeError(f"{' '.join(self.command)} exited with {process.returncode}")
            latencies.append(time.perf_counter() - started)
        return time.perf_counter() - began, latencies

    async def profile(self, count: int) -> str:
        """What the command imports, slowest first (``python -X importtime``, one run)."""
        process = await asyncio.create_subprocess_exec(
            *self.command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=_installed_env({"PYTHONPROFILEIMPORTTIME": "1"}),
        )
        _, err = await process.communicate()
        imports = []
        for line in err.decode(errors="replace").splitlines():
            parts = line.removeprefix("import time:").split("|")
            if len(parts) == 3 and parts[1].strip().isdigit():
                imports.append((int(parts[1]), parts[2].rstrip()))
        imports.sort(reverse=True)
        total = sum(us for us, name in imports if not name.startswith("  "))  # top level: one space
        head = (
            f"{self.backend}: imports take {total / 1000:.0f} ms of one run (-X importtime, cumulative us):"
        )
        return "\n".join([head, *(f"  {us:>8} {name}" for us, name in imports[:25])])
