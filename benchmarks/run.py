"""Benchmark harness: every backend against baselines measured in the same process and run.

``make bench`` runs the full set (minutes); ``make bench-quick`` runs small counts in seconds and
only shows that the harness works. Each workload is seeded and has a discarded warm-up; every
target is a ratio against a baseline from the same run, never an absolute number.

Each target compares a pair (candidate, baseline) measured alternately, ``ROUNDS`` times each
(A B, B A, A B: slow drifts of a shared machine hit both sides alike); its figure is the median
of the per-round ratios. The table gives each row's median rate over its rounds and the latency
percentiles of all its rounds together. A target that misses is profiled at once (pyinstrument,
its stores still open) and the profile goes into the results.

Output: a table (ops/s, p50/p99 latency, ratio to its baseline), PASS/FAIL target lines and peak
memory on stdout, ``benchmarks/results/<mode>.json``, ``benchmarks/results/<mode>.png``; the full
run also rewrites the results part of ``docs/benchmarks.md``, ``docs/benchmarks.png`` and
``docs/benchmarks.json``. With ``$REDIS_URL`` set the Redis rows use that server, and every key
the run wrote there (all under one ``bench:<time>:`` prefix) is deleted at the end.

The last phase runs ``benchmarks/node_bench.mjs`` (when node and npm are installed): from Node,
SqlStateAdapter against Motia's own RedisStateAdapter and FileStateAdapter, paired and profiled
the same way inside the script; its rows and target lines join the others. ``--node-only`` runs
just that phase (``results/<mode>-node.json``; the docs are left alone).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import diskcache
import redis.asyncio as aioredis

from motia_state_sql import (
    FileStateAdapter,
    MemoryStateAdapter,
    RedisStateAdapter,
    SqliteStateAdapter,
    StateAdapter,
    increment,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
VALUE = {"id": "order-0", "status": "pending", "total": 99.99, "items": [{"sku": "A-1", "qty": 2}]}
ENCODED = json.dumps(VALUE)
NAMES = ("memory", "sqlite-normal", "sqlite-full", "redis-native", "redis-motia", "file")
SIZED = NAMES[:-1]  # the legacy file rewrites itself on every write: never filled with many items
BASELINES = ("raw-sqlite3-normal", "raw-sqlite3-full", "diskcache", "redis-py bare", "json-file-store")
ROUNDS = 3
Op = Callable[[int], Awaitable[Any]]
Key = tuple[str, str]  # (backend, workload)


@dataclass
class Sizes:
    """How much work each workload does; the quick mode only checks the harness runs."""

    ops: int
    file_ops: int
    groups: tuple[int, ...]
    stored: tuple[int, ...]
    json_items: int = 10_000
    profile_ops: int = 5_000
    node: NodeSizes | None = None


@dataclass
class NodeSizes:
    """The Node benchmark's counts (``benchmarks/node_bench.mjs``): every store holds ``stored``
    items; ``ops`` sequential calls per measurement (``file_ops`` on Motia's FileStateAdapter),
    one ``Promise.all`` of ``burst`` sets, ``group_reads`` calls of ``getGroup``."""

    ops: int
    file_ops: int
    burst: int
    stored: int
    group_reads: int


FULL = Sizes(
    ops=20_000,
    file_ops=300,
    groups=(10, 1_000, 100_000),
    stored=(1_000, 100_000, 1_000_000),
    node=NodeSizes(ops=10_000, file_ops=300, burst=10_000, stored=1_000, group_reads=200),
)
QUICK = Sizes(
    ops=100,
    file_ops=20,
    groups=(10, 100),
    stored=(100, 1_000),
    json_items=1_000,
    profile_ops=100,
    node=NodeSizes(ops=200, file_ops=20, burst=1_000, stored=100, group_reads=10),
)


@dataclass
class Spec:
    """One workload on one backend; ``make(tag)`` builds its operation for one measurement."""

    backend: str
    workload: str
    make: Callable[[int], Op]
    count: int
    concurrency: int = 1

    @property
    def key(self) -> Key:
        return self.backend, self.workload


@dataclass
class Result:
    backend: str
    workload: str
    ops: int
    seconds: float
    p50_us: float
    p99_us: float
    rounds: int
    rates: list[float] = field(default_factory=list)
    baseline: str = ""
    ratio: float | None = None

    @property
    def rate(self) -> float:
        return self.ops / self.seconds


@dataclass
class Verdict:
    ok: bool | None  # None: n/a
    text: str
    ratios: list[float] = field(default_factory=list)
    profile: str = ""

    @property
    def line(self) -> str:
        return f"{'n/a ' if self.ok is None else 'PASS' if self.ok else 'FAIL'} {self.text}"


async def _timed(op: Op, indexes: range, concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    todo = iter(indexes)

    async def worker() -> None:
        for index in todo:
            started = time.perf_counter()
            await op(index)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


def sync_op(fn: Callable[[int], Any]) -> Op:
    """An async wrapper so synchronous baselines run through the same timing loop."""

    async def op(index: int) -> Any:
        return fn(index)

    return op


class Bench:
    """Measurements of one run: every round of every spec, the paired ratios and the verdicts."""

    def __init__(self, sizes: Sizes, rounds: int) -> None:
        self.sizes = sizes
        self.rounds = rounds
        self.samples: dict[Key, list[tuple[float, list[float]]]] = {}
        self.pairs: dict[tuple[Key, Key], list[float]] = {}
        self.verdicts: list[Verdict] = []
        self._tags = itertools.count()
        self._profiled: dict[Key, str] = {}
        self.external: list[Result] = []
        self.node_info: dict[str, str] = {}

    async def once(self, spec: Spec) -> float:
        """One measurement (after a discarded warm-up of a tenth of the count): its ops/s."""
        op = spec.make(next(self._tags))
        await _timed(op, range(spec.count, spec.count + max(1, spec.count // 10)), spec.concurrency)
        seconds, latencies = await _timed(op, range(spec.count), spec.concurrency)
        rate = spec.count / seconds
        self.samples.setdefault(spec.key, []).append((rate, latencies))
        return rate

    async def ensure(self, spec: Spec) -> None:
        """Measure ``spec`` once unless an earlier pair measured it already."""
        if spec.key not in self.samples:
            await self.once(spec)

    async def pair(self, a: Spec, b: Spec, rounds: int | None = None) -> list[float]:
        """``a`` and ``b`` alternately (A B, B A, ...); the ratio of ``a`` to ``b`` in each round."""
        ratios = []
        for number in range(rounds or self.rounds):
            if number % 2 == 0:
                rate_a, rate_b = await self.once(a), await self.once(b)
            else:
                rate_b = await self.once(b)
                rate_a = await self.once(a)
            ratios.append(rate_a / rate_b)
        self.pairs.setdefault((a.key, b.key), []).extend(ratios)
        return ratios

    async def target(self, text: str, a: Spec, b: Spec, want: float, above: bool = False) -> None:
        """A target line: the median paired ratio of ``a`` to ``b``; a miss is profiled at once."""
        ratios = await self.pair(a, b)
        verdict = _verdict(text, ratios, a.key, b.key, want, above)
        if not verdict.ok:  # both sides, while their stores are open; each baseline once
            trees = [await profile(a, self.sizes.profile_ops, next(self._tags))]
            if b.key in self._profiled:
                trees.append(
                    f"{b.backend} {b.workload}: profiled above, at the miss of {self._profiled[b.key]!r}"
                )
            else:
                self._profiled[b.key] = text
                trees.append(await profile(b, self.sizes.profile_ops, next(self._tags)))
            verdict.profile = "\n\n".join(trees)
        self.verdicts.append(verdict)

    def note(self, text: str) -> None:
        self.verdicts.append(Verdict(None, text))

    def add_external(self, result: Result) -> None:
        """A row measured elsewhere (the Node benchmark), with its rates and latency percentiles."""
        self.external.append(result)

    def results(self) -> list[Result]:
        results = []
        for (backend, workload), samples in self.samples.items():
            rates = [rate for rate, _ in samples]
            latencies = sorted(itertools.chain.from_iterable(lat for _, lat in samples))
            ops = len(latencies) // len(samples)
            results.append(
                Result(
                    backend,
                    workload,
                    ops,
                    ops / statistics.median(rates),
                    statistics.median(latencies) * 1e6,
                    latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1e6,
                    len(samples),
                    rates,
                )
            )
        results += self.external
        order = [*BASELINES, *NAMES]
        results.sort(key=lambda r: order.index(r.backend) if r.backend in order else len(order))
        by = {(r.backend, r.workload): r for r in results}
        for r in results:
            base = baseline_of(r)
            if base is None or base not in by:
                continue
            paired = self.pairs.get(((r.backend, r.workload), base))
            r.baseline = base[0]
            r.ratio = statistics.median(paired) if paired else r.rate / by[base].rate
        return results


def _ratio(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _verdict(text: str, ratios: list[float], a: Key, b: Key, want: float, above: bool = False) -> Verdict:
    """A target line: the median of the per-round ratios of ``a`` to ``b`` against ``want``."""
    value = statistics.median(ratios)
    ok = value > want if above else value >= want
    rounds = ", ".join(map(_ratio, ratios))
    return Verdict(
        ok,
        f"{text}: {_ratio(value)}x (median of {len(ratios)} alternated rounds: {rounds}; "
        f"{a[0]} {a[1]} / {b[0]} {b[1]}, target {'>' if above else '>='} {want:g}x)",
        ratios,
    )


async def profile(spec: Spec, ops: int, tag: int) -> str:
    """A pyinstrument call tree of ``spec`` running ``ops`` operations (library frames folded)."""
    from pyinstrument import Profiler

    count = min(spec.count, ops)
    op = spec.make(tag)
    profiler = Profiler(interval=0.0002, async_mode="disabled")
    profiler.start()
    try:
        seconds, _ = await _timed(op, range(count), spec.concurrency)
    finally:
        profiler.stop()
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    lines = [line for line in text.splitlines() if line.strip()]
    start = next((n for n, line in enumerate(lines) if line.startswith("Profile at")), -1) + 1
    tree = lines[start : start + 32]
    head = f"{spec.backend} {spec.workload}: {count} ops in {seconds:.2f}s under the profiler"
    return "\n".join([head, *tree])


# -- baselines ---------------------------------------------------------------------------------


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


class JsonFileStore:
    """Motia's default: the whole state in one JSON file, rewritten on every write."""

    def __init__(self, path: Path, items: int) -> None:
        self.path = path
        self.data = {f"g:k{i}": ENCODED for i in range(items)}

    def set(self, key: str) -> None:
        self.data[f"g:{key}"] = json.dumps(VALUE)
        self.path.write_text(json.dumps(self.data, indent=2))


def fill_cache(cache: diskcache.Cache, group: str, start: int, stop: int) -> None:
    for at in range(start, stop, 5_000):
        with cache.transact():
            for i in range(at, min(stop, at + 5_000)):
                cache.set(f"{group}:k{i}", VALUE)


# -- backends ----------------------------------------------------------------------------------


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """``$REDIS_URL``, else a throwaway redis-server on a free loopback port (the tests' helper)."""
    sys.path.insert(0, str(ROOT))
    from tests.redis_server import redis_url_or_throwaway

    with redis_url_or_throwaway() as url:
        yield url


def build(name: str, folder: Path, redis_url: str, prefix: str, role: str) -> StateAdapter:
    """A fresh store of backend ``name``; each ``role`` gets its own file or key prefix."""
    folder.mkdir(parents=True, exist_ok=True)
    if name == "memory":
        return MemoryStateAdapter()
    if name == "sqlite-normal":
        return SqliteStateAdapter(folder / f"normal-{role}.db")
    if name == "sqlite-full":
        return SqliteStateAdapter(folder / f"full-{role}.db", synchronous="FULL")
    if name == "redis-native":
        return RedisStateAdapter(redis_url, key_prefix=f"{prefix}{role}:n:")
    if name == "redis-motia":
        return RedisStateAdapter(redis_url, key_prefix=f"{prefix}{role}:m:", layout="motia")
    if name == "file":
        return FileStateAdapter(folder / f"file-{role}", durable=False)
    raise ValueError(name)


async def fill(store: StateAdapter, group: str, start: int, stop: int) -> None:
    """Store items ``k<start>`` .. ``k<stop - 1>`` in ``group`` quickly: transactions of 5 000, or
    500 writes at once on Redis (a Redis transaction reads every key first)."""
    for at in range(start, stop, 5_000):
        keys = [f"k{i}" for i in range(at, min(stop, at + 5_000))]
        if isinstance(store, RedisStateAdapter):
            for part in range(0, len(keys), 500):
                await asyncio.gather(
                    *(store.set_json(group, key, ENCODED) for key in keys[part : part + 500])
                )
            continue
        async with store.transaction() as tx:
            for key in keys:
                await tx.set_json(group, key, ENCODED)


async def delete_keys(redis_url: str, prefix: str) -> int:
    """Delete every key under ``prefix`` (this run's keys); returns how many."""
    client = aioredis.Redis.from_url(redis_url)
    deleted = 0
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"{prefix}*", count=2_000):
            batch.append(key)
            if len(batch) >= 2_000:
                deleted += await client.unlink(*batch)
                batch.clear()
        if batch:
            deleted += await client.unlink(*batch)
    finally:
        await client.aclose()
    return deleted


def _group_reads(name: str, count: int, size: int) -> int:
    """How many ``get_group`` calls to time: fewer for large groups, and for the motia layout,
    whose every call scans the whole keyspace (as Motia's own adapter does)."""
    reads = max(3, min(count, 2_000, 200_000 // size))
    return min(reads, 50) if name == "redis-motia" else reads


def _rng(*seed: object) -> random.Random:
    return random.Random("/".join(map(str, seed)))


# -- workloads ---------------------------------------------------------------------------------


def main_specs(name: str, store: StateAdapter, count: int) -> dict[str, Spec]:
    """The workloads on a store whose group ``g`` holds ``k0`` .. ``k<count - 1>``."""

    def new_keys(tag: int) -> Op:
        async def op(i: int) -> Any:
            return await store.set("g", f"s{tag}-{i}", VALUE)

        return op

    def get(tag: int) -> Op:
        async def op(i: int) -> Any:
            return await store.get("g", f"k{i % count}")

        return op

    def bump(tag: int) -> Op:
        async def op(i: int) -> Any:
            return await store.update("g", "hot", [increment("n")])

        return op

    def mix(tag: int) -> Op:
        rng = _rng(name, "mix", tag)

        async def op(i: int) -> Any:
            roll, key = rng.random(), f"k{rng.randrange(count)}"
            if roll < 0.90:
                return await store.get("g", key)
            if roll < 0.99:
                return await store.set("g", key, VALUE)
            return await store.delete("g", key)

        return op

    return {
        "set x1": Spec(name, "set x1", new_keys, count),
        "set x64": Spec(name, "set x64", new_keys, count, 64),
        "get x1": Spec(name, "get x1", get, count),
        "get x64": Spec(name, "get x64", get, count, 64),
        "update hot x64": Spec(name, "update hot x64", bump, count, 64),
        "mix 90/9/1": Spec(name, "mix 90/9/1", mix, count),
    }


def stored_specs(name: str, store: StateAdapter, size: int, count: int) -> dict[str, Spec]:
    """Random-key ``set``/``get`` on a store holding ``size`` items in group ``stored``, plus
    ``get_group`` of its 10-item group ``ten``."""

    def setter(tag: int) -> Op:
        rng = _rng(name, size, "set", tag)

        async def op(i: int) -> Any:
            return await store.set("stored", f"k{rng.randrange(size)}", VALUE)

        return op

    def getter(tag: int) -> Op:
        rng = _rng(name, size, "get", tag)

        async def op(i: int) -> Any:
            return await store.get("stored", f"k{rng.randrange(size)}")

        return op

    def ten(tag: int) -> Op:
        async def op(i: int) -> Any:
            return await store.get_group("ten")

        return op

    return {
        "set": Spec(name, f"set @{size}", setter, count),
        "get": Spec(name, f"get @{size}", getter, count),
        "group": Spec(name, f"get_group 10 @{size}", ten, _group_reads(name, count, 10)),
    }


class Stores:
    """The stores of one run, opened and closed together."""

    def __init__(self, folder: Path, redis_url: str, prefix: str) -> None:
        self.folder, self.redis_url, self.prefix = folder, redis_url, prefix
        self.open: list[StateAdapter] = []

    async def new(self, name: str, role: str) -> StateAdapter:
        store = build(name, self.folder / role, self.redis_url, self.prefix, role)
        await store.__aenter__()
        self.open.append(store)
        return store

    async def close(self, *stores: StateAdapter) -> None:
        for store in stores:
            with contextlib.suppress(Exception):
                await store.close()
            if store in self.open:
                self.open.remove(store)


async def phase_main(bench: Bench, stores: Stores, sizes: Sizes) -> None:
    """set/get from 1 and 64 coroutines, updates, the mix and get_group, against the baselines."""
    folder, count = stores.folder, sizes.ops
    raw = {level: RawSqlite(folder / f"raw-{level}.db", level.upper()) for level in ("normal", "full")}
    raw["normal"].fill("g", 0, count)
    cache = diskcache.Cache(str(folder / "diskcache-main"))
    fill_cache(cache, "g", 0, count)
    client = aioredis.Redis.from_url(stores.redis_url)
    bare = f"{stores.prefix}bare:"
    try:
        for at in range(0, count, 500):
            async with client.pipeline(transaction=False) as pipe:
                for i in range(at, min(count, at + 500)):
                    pipe.set(f"{bare}k{i}", ENCODED)
                await pipe.execute()

        def raw_set(level: str) -> Spec:
            base = raw[level]
            return Spec(
                f"raw-sqlite3-{level}",
                "set x1",
                lambda tag: sync_op(lambda i: base.set("g", f"s{tag}-{i}")),
                count,
            )

        raw_get = Spec(
            "raw-sqlite3-normal",
            "get x1",
            lambda tag: sync_op(lambda i: raw["normal"].get("g", f"k{i % count}")),
            count,
        )
        cache_set = Spec(
            "diskcache", "set x1", lambda tag: sync_op(lambda i: cache.set(f"g:s{tag}-{i}", VALUE)), count
        )
        cache_get = Spec(
            "diskcache", "get x1", lambda tag: sync_op(lambda i: cache.get(f"g:k{i % count}")), count
        )

        def bare_set(tag: int) -> Op:
            async def op(i: int) -> Any:
                return await client.set(f"{bare}s{tag}-{i}", ENCODED)

            return op

        def bare_get(tag: int) -> Op:
            async def op(i: int) -> Any:
                value = await client.get(f"{bare}k{i % count}")
                return json.loads(value) if value else None

            return op

        redis_set = Spec("redis-py bare", "set x1", bare_set, count)
        redis_get = Spec("redis-py bare", "get x1", bare_get, count)

        for name in NAMES:
            store = await stores.new(name, "main")
            n = sizes.file_ops if name == "file" else count
            await fill(store, "g", 0, n)
            specs = main_specs(name, store, n)
            if name.startswith("sqlite-"):
                level = name.split("-")[1]
                for workload, who, want in (
                    ("set x64", "64 coroutines", 1.2),
                    ("set x1", "one coroutine", 0.4),
                ):
                    await bench.target(
                        f"SQLite {level.upper()} set from {who} vs raw sqlite3 commit-per-write",
                        specs[workload],
                        raw_set(level),
                        want,
                    )
            if name == "sqlite-normal":
                await bench.target(
                    "SQLite get from one coroutine vs raw sqlite3 reads", specs["get x1"], raw_get, 0.25
                )
                await bench.target("SQLite get vs diskcache get", specs["get x1"], cache_get, 1.0, above=True)
                for workload in ("set x1", "set x64"):
                    await bench.target(
                        f"SQLite set vs diskcache set ({workload})",
                        specs[workload],
                        cache_set,
                        1.0,
                        above=True,
                    )
            if name == "sqlite-full":
                await bench.pair(specs["get x1"], raw_get, 1)
            if name.startswith("redis-"):
                for verb, bare_spec in (("get", redis_get), ("set", redis_set)):
                    if name == "redis-native":
                        await bench.target(
                            f"Redis native {verb} vs the bare redis-py command",
                            specs[f"{verb} x1"],
                            bare_spec,
                            0.8,
                        )
                    else:
                        await bench.pair(specs[f"{verb} x1"], bare_spec, 1)
            for spec in specs.values():
                await bench.ensure(spec)
            if name != "file":
                for size in sizes.groups:
                    await fill(store, f"group{size}", 0, size)

                    def group(tag: int, store: StateAdapter = store, size: int = size) -> Op:
                        async def op(i: int) -> Any:
                            return await store.get_group(f"group{size}")

                        return op

                    await bench.once(Spec(name, f"get_group {size}", group, _group_reads(name, count, size)))
            await stores.close(store)
    finally:
        for connection in raw.values():
            connection.db.close()
        cache.close()
        await client.aclose()


async def phase_json(bench: Bench, stores: Stores, sizes: Sizes) -> None:
    """Every backend against Motia's JSON file, each holding ``json_items`` items: the same writes
    (existing keys in turn, so the store stays at that size), from one coroutine and from 64."""
    items = sizes.json_items
    json_store = JsonFileStore(stores.folder / "motia.state.json", items)
    json_store.path.write_text(json.dumps(json_store.data, indent=2))
    for name in NAMES:
        store = await stores.new(name, "json")
        await fill(store, "g", 0, items)
        for concurrency in (1, 64):
            workload = f"set x{concurrency}, {items} stored"
            count = sizes.file_ops if name == "file" else sizes.ops

            def ours(tag: int, store: StateAdapter = store) -> Op:
                async def op(i: int) -> Any:
                    return await store.set("g", f"k{i % items}", VALUE)

                return op

            theirs = Spec(
                "json-file-store",
                workload,
                lambda tag: sync_op(lambda i: json_store.set(f"k{i % items}")),
                sizes.file_ops,
                concurrency,
            )
            await bench.target(
                f"{name} set from {'one coroutine' if concurrency == 1 else '64 coroutines'} vs the "
                f"JSON file store, both holding {items:,} items",
                Spec(name, workload, ours, count, concurrency),
                theirs,
                500,
                above=True,
            )
        await stores.close(store)
    # The floors, for reference: one commit per write (raw sqlite3) and one bare command (redis-py).
    client = aioredis.Redis.from_url(stores.redis_url)
    raws = {
        level: RawSqlite(stores.folder / f"raw-json-{level}.db", level.upper())
        for level in ("normal", "full")
    }
    try:
        bare = f"{stores.prefix}bare-json:"
        floors: list[tuple[str, Callable[[int], Op]]] = []

        def raw_set(raw: RawSqlite) -> Callable[[int], Op]:
            return lambda tag: sync_op(lambda i: raw.set("g", f"k{i % items}"))

        for level, raw in raws.items():
            raw.fill("g", 0, items)
            floors.append((f"raw-sqlite3-{level}", raw_set(raw)))

        def bare_set(tag: int) -> Op:
            async def op(i: int) -> Any:
                return await client.set(f"{bare}k{i % items}", ENCODED)

            return op

        floors.append(("redis-py bare", bare_set))
        workload = f"set x1, {items} stored"
        theirs = Spec(
            "json-file-store",
            workload,
            lambda tag: sync_op(lambda i: json_store.set(f"k{i % items}")),
            sizes.file_ops,
        )
        for name, make in floors:
            ratios = await bench.pair(Spec(name, workload, make, sizes.ops), theirs)
            bench.note(
                f"reference, not a target: {name} set from one coroutine vs the JSON file store, "
                f"both holding {items:,} items: {_ratio(statistics.median(ratios))}x (median of "
                f"{len(ratios)} alternated rounds: {', '.join(map(_ratio, ratios))}; "
                "the floor under that backend)"
            )
    finally:
        for raw in raws.values():
            raw.db.close()
        await client.aclose()


async def phase_stored(bench: Bench, stores: Stores, sizes: Sizes) -> None:
    """Cost against store size: a small store and a large one per backend, measured alternately
    (the large one grows through the sizes); SQLite against diskcache at each size."""
    small_size, *larger = sizes.stored
    count = sizes.ops
    folder = stores.folder
    small: dict[str, StateAdapter] = {}
    large: dict[str, StateAdapter] = {}
    raw_small = RawSqlite(folder / "raw-small.db", "NORMAL")
    raw_large = RawSqlite(folder / "raw-large.db", "NORMAL")
    cache_small = diskcache.Cache(str(folder / "diskcache-small"))
    cache_large = diskcache.Cache(str(folder / "diskcache-large"))

    def raw_specs(base: RawSqlite, size: int) -> list[Spec]:
        def setter(tag: int) -> Op:
            rng = _rng("raw", size, tag)
            return sync_op(lambda i: base.set("stored", f"k{rng.randrange(size)}"))

        def getter(tag: int) -> Op:
            rng = _rng("raw", size, "get", tag)
            return sync_op(lambda i: base.get("stored", f"k{rng.randrange(size)}"))

        return [
            Spec("raw-sqlite3-normal", f"set @{size}", setter, count),
            Spec("raw-sqlite3-normal", f"get @{size}", getter, count),
        ]

    def cache_spec(cache: diskcache.Cache, size: int) -> Spec:
        def setter(tag: int) -> Op:
            rng = _rng("diskcache", size, tag)
            return sync_op(lambda i: cache.set(f"stored:k{rng.randrange(size)}", VALUE))

        return Spec("diskcache", f"set @{size}", setter, count)

    try:
        raw_small.fill("stored", 0, small_size)
        fill_cache(cache_small, "stored", 0, small_size)
        for name in SIZED:
            small[name] = await stores.new(name, "small")
            large[name] = await stores.new(name, "large")
            for store in (small[name], large[name]):
                await fill(store, "ten", 0, 10)
            await fill(small[name], "stored", 0, small_size)
        await bench.target(
            f"SQLite set vs diskcache set (set @{small_size})",
            stored_specs("sqlite-normal", small["sqlite-normal"], small_size, count)["set"],
            cache_spec(cache_small, small_size),
            1.0,
            above=True,
        )
        done = 0
        for size in larger:
            raw_large.fill("stored", done, size)
            fill_cache(cache_large, "stored", done, size)
            for name in SIZED:
                await fill(large[name], "stored", done, size)
            done = size
            last = size == sizes.stored[-1]
            for spec, base in zip(raw_specs(raw_large, size), raw_specs(raw_small, small_size), strict=True):
                ratios = await bench.pair(spec, base, None if last else 1)
                if last:
                    bench.note(
                        f"reference, not a target: raw sqlite3 {spec.workload.split()[0]} cost with "
                        f"{size:,} items vs {small_size:,}: {_ratio(statistics.median(ratios))}x (median of "
                        f"{len(ratios)} alternated rounds: {', '.join(map(_ratio, ratios))}; the floor's own "
                        "growth with the store)"
                    )
            normal = stored_specs("sqlite-normal", large["sqlite-normal"], size, count)
            await bench.target(
                f"SQLite set vs diskcache set (set @{size})",
                normal["set"],
                cache_spec(cache_large, size),
                1.0,
                above=True,
            )
            for name in SIZED:
                big = stored_specs(name, large[name], size, count)
                little = stored_specs(name, small[name], small_size, count)
                for op in ("set", "get"):
                    if last:
                        await bench.target(
                            f"{name} {op} cost with {size:,} items within 1.5x of {small_size:,}",
                            big[op],
                            little[op],
                            1 / 1.5,
                        )
                    else:
                        await bench.pair(big[op], little[op], 1)
                if not last:
                    continue
                if name == "redis-motia":
                    await bench.once(big["group"])  # a few calls: each one scans the keyspace
                    bench.note(
                        "redis-motia get_group cost grows with the keyspace: Motia's layout can only "
                        "SCAN for a group's keys (the native layout has no such cost)"
                    )
                    continue
                await bench.target(
                    f"{name} get_group of 10 items unchanged with {size:,} items in another group",
                    big["group"],
                    little["group"],
                    1 / 1.5,
                )
    finally:
        await stores.close(*small.values(), *large.values())
        raw_small.db.close()
        raw_large.db.close()
        cache_small.close()
        cache_large.close()


# -- Node: SqlStateAdapter against Motia's own adapters (benchmarks/node_bench.mjs) -------------

#: Motia's own adapters, as motia@0.17.6-beta.187 depends on them (``npm view
#: motia@0.17.6-beta.187 dependencies``): FileStateAdapter comes from @motiadev/core.
NODE_PACKAGES = ("@motiadev/core@0.17.6-beta.187", "@motiadev/adapter-redis-state@0.17.6-beta.187")
NODE_BENCH = ROOT / "benchmarks" / "node_bench.mjs"
NODE_NAMES = ("node-sqlite", "node-motia-redis", "node-motia-file")
NPM_FLAGS = ("--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error")


def node_dir() -> Path | None:
    """The Motia packages installed once into ``.venv/node-bench`` (outside git, a stamp file
    names what is there); None without node and npm. ``--ignore-scripts``: the only install script
    in the tree is esbuild's binary check, and esbuild is never run here."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return None
    target = ROOT / ".venv" / "node-bench"
    stamp = target / "installed.txt"
    wanted = " ".join(NODE_PACKAGES)
    if not stamp.exists() or stamp.read_text() != wanted:
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--prefix", str(target), *NPM_FLAGS, *NODE_PACKAGES],
            check=True,
            capture_output=True,
            timeout=600,
            env={**os.environ, "REDISMS_DISABLE_POSTINSTALL": "1"},
        )
        stamp.write_text(wanted)
    shutil.copy(NODE_BENCH, target / NODE_BENCH.name)
    return target


async def phase_node(bench: Bench, stores: Stores, sizes: Sizes) -> None:
    """From one Node process: SqlStateAdapter (SQLite, through its Python serve process) against
    Motia's own RedisStateAdapter (same server) and FileStateAdapter; see node_bench.mjs."""
    counts = sizes.node
    folder = node_dir() if counts is not None else None
    if counts is None or folder is None:
        bench.note("the Node benchmark did not run: node and npm are not installed")
        return
    config = {
        "index": str(ROOT / "node" / "index.js"),
        "python": sys.executable,
        "env": {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "MOTIA_ANALYTICS_DISABLED": "true",
        },
        "folder": str(stores.folder / "node"),
        "redisUrl": stores.redis_url,
        "prefix": f"{stores.prefix}node:",
        "ops": counts.ops,
        "fileOps": counts.file_ops,
        "burst": counts.burst,
        "stored": counts.stored,
        "groupReads": counts.group_reads,
        "rounds": bench.rounds,
        "profileOps": sizes.profile_ops,
    }
    process = await asyncio.create_subprocess_exec(
        "node",
        str(folder / NODE_BENCH.name),
        json.dumps(config),
        cwd=folder,
        env={**os.environ, "MOTIA_ANALYTICS_DISABLED": "true"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"node_bench.mjs exited with {process.returncode}:\n{err.decode()[-4000:]}")
    data = json.loads(out.decode().splitlines()[-1])
    bench.node_info = {"node": data["node"], **data["versions"]}
    for row in data["rows"]:
        rates = row["rates"]
        bench.add_external(
            Result(
                row["backend"],
                row["workload"],
                row["ops"],
                row["ops"] / statistics.median(rates),
                row["p50_us"],
                row["p99_us"],
                len(rates),
                rates,
            )
        )
    for t in data["targets"]:
        a, b, ratios = tuple(t["a"]), tuple(t["b"]), t["ratios"]
        bench.pairs.setdefault((a, b), []).extend(ratios)
        if t["want"] is None:
            bench.note(
                f"reference, not a target: {t['text']}: {_ratio(statistics.median(ratios))}x (median of "
                f"{len(ratios)} alternated rounds: {', '.join(map(_ratio, ratios))}; "
                f"{a[0]} {a[1]} / {b[0]} {b[1]})"
            )
            continue
        verdict = _verdict(t["text"], ratios, a, b, t["want"])
        verdict.profile = t["profile"] if not verdict.ok else ""
        if not verdict.ok and not verdict.profile:
            verdict.profile = "(node_bench.mjs took no profile: its verdict differed from the harness's)"
        bench.verdicts.append(verdict)


# -- peak memory (one subprocess per backend) ----------------------------------------------------


def _rss_mib() -> float:
    """This process's peak RSS so far: ``VmHWM`` (ru_maxrss would carry the parent's peak over
    fork and exec on Linux)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _memory_run(args: argparse.Namespace) -> dict[str, float]:
    """In a fresh process: peak RSS while a new store takes ``count`` sets, reads its group back
    and clears it; then the same again under tracemalloc for the peak Python heap."""
    folder = Path(args.folder)
    before = _rss_mib()

    async def work(role: str) -> None:
        async with build(args.peak_memory, folder, args.redis_url, args.prefix, f"mem-{role}") as store:
            for i in range(args.count):
                await store.set("mem", f"k{i}", VALUE)
            await store.get_group("mem")
            await store.clear("mem")

    await work("rss")
    rss = _rss_mib()
    tracemalloc.start()
    try:
        await work("heap")
        heap = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    return {"items": args.count, "rss_start_mib": before, "rss_peak_mib": rss, "heap_peak_mib": heap}


def peak_memory(name: str, folder: Path, redis_url: str, prefix: str, count: int) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--peak-memory",
            name,
            "--folder",
            str(folder / "memory" / name),
            "--redis-url",
            redis_url,
            "--prefix",
            prefix,
            "--count",
            str(count),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout.splitlines()[-1])
    return result


# -- ratios, table, plot -----------------------------------------------------------------------


def baseline_of(r: Result) -> Key | None:
    """The baseline row each result is compared with in the table."""
    if r.backend.startswith("sqlite-"):
        level = r.backend.split("-")[1]
        if r.workload in ("set x1", "set x64"):
            return f"raw-sqlite3-{level}", "set x1"
        if r.workload in ("get x1", "get x64"):
            return "raw-sqlite3-normal", "get x1"
        if r.workload.startswith(("set @", "get @")) and level == "normal":
            return "raw-sqlite3-normal", r.workload
    if r.backend == "node-sqlite":
        return "node-motia-redis", r.workload
    if r.backend.startswith("redis-") and r.workload in ("set x1", "get x1"):
        return "redis-py bare", r.workload
    if r.workload.endswith(" stored") and r.backend != "json-file-store":
        return "json-file-store", r.workload
    return None


def table(results: list[Result]) -> list[str]:
    lines = [
        "| backend | workload | ops/s | p50 us | p99 us | ratio |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        ratio = f"{_ratio(r.ratio)}x {r.baseline}" if r.ratio is not None else ""
        shown = f"{r.rate:,.0f}" if r.rate >= 10 else f"{r.rate:.2f}"
        rounds = f" ({r.rounds} rounds)" if r.rounds > 1 else ""
        lines.append(
            f"| {r.backend} | {r.workload}{rounds} | {shown} | {r.p50_us:.1f} | {r.p99_us:.1f} | {ratio} |"
        )
    return lines


def plot(results: list[Result], sizes: Sizes, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = ["set x1", "set x64", "get x1", "get x64", "update hot x64", "mix 90/9/1"]
    by = {(r.backend, r.workload): r for r in results}
    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 5.5))
    width = 0.8 / len(NAMES)
    for n, name in enumerate(NAMES):
        rates = [by[(name, w)].rate if (name, w) in by else 0 for w in workloads]
        left.bar([i + n * width for i in range(len(workloads))], rates, width, label=name)
    left.set_xticks([i + 0.4 - width / 2 for i in range(len(workloads))], workloads, rotation=20)
    left.set_yscale("log")
    left.set_ylabel("ops/s (log, median of rounds)")
    left.set_title("Throughput per workload")
    left.legend(fontsize=8)
    palette = plt.get_cmap("tab10")
    for number, name in enumerate([*SIZED, "raw-sqlite3-normal", "diskcache"]):
        for op, style in (("set", "-"), ("get", "--")):
            points = [(n, by[(name, f"{op} @{n}")].rate) for n in sizes.stored if (name, f"{op} @{n}") in by]
            if points:
                right.plot(
                    [p[0] for p in points],
                    [1e6 / p[1] for p in points],
                    style,
                    color=palette(number),
                    marker="o",
                    label=f"{name} {op}",
                )
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("items already stored")
    right.set_ylabel("microseconds per op (log)")
    right.set_title("Cost against store size")
    right.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "sqlite": sqlite3.sqlite_version,
        "date": time.strftime("%Y-%m-%d"),
    }


async def run(
    sizes: Sizes, rounds: int, node_only: bool = False
) -> tuple[Bench, dict[str, dict[str, float]], dict[str, Any]]:
    bench = Bench(sizes, rounds)
    memory: dict[str, dict[str, float]] = {}
    info: dict[str, Any] = {}
    folder = Path(tempfile.mkdtemp(prefix="motia-bench-"))
    external = bool(os.environ.get("REDIS_URL"))
    prefix = f"bench:{time.time_ns()}:"
    try:
        with redis_server() as redis_url:
            stores = Stores(folder, redis_url, prefix)
            try:
                phases = (phase_node,) if node_only else (phase_main, phase_json, phase_stored, phase_node)
                for phase in phases:
                    started = time.monotonic()
                    await phase(bench, stores, sizes)
                    info[f"{phase.__name__} seconds"] = round(time.monotonic() - started, 1)
                    print(f"{phase.__name__}: {info[f'{phase.__name__} seconds']}s", file=sys.stderr)
                if bench.node_info:
                    info["node"] = bench.node_info
                for name in () if node_only else NAMES:
                    count = sizes.file_ops if name == "file" else sizes.ops
                    memory[name] = peak_memory(name, folder, redis_url, prefix, count)
            finally:
                await stores.close(*stores.open)
                if external:
                    info["redis keys deleted"] = await delete_keys(redis_url, prefix)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return bench, memory, info


def write_doc(lines: list[str]) -> None:
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    text = DOC.read_text() if DOC.exists() else f"# Benchmarks\n\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    DOC.write_text(f"{head}{start}\n" + "\n".join(lines) + f"\n{end}{tail}")


def memory_lines(memory: dict[str, dict[str, float]]) -> list[str]:
    return [
        f"{name}: peak RSS {m['rss_peak_mib']:.0f} MiB (process start {m['rss_start_mib']:.0f} MiB), "
        f"peak Python heap {m['heap_peak_mib']:.1f} MiB, for {m['items']:,.0f} sets, a get_group and a clear"
        for name, m in memory.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts: only checks the harness runs")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="alternated rounds per target pair")
    parser.add_argument(
        "--node-only",
        action="store_true",
        help="only the Node benchmark (results/<mode>-node.json; docs untouched)",
    )
    parser.add_argument("--peak-memory", help=argparse.SUPPRESS)  # internal: one backend's memory run
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_memory:
        print(json.dumps(asyncio.run(_memory_run(args))))
        return
    sizes = QUICK if args.quick else FULL
    started = time.monotonic()
    bench, memory, info = asyncio.run(run(sizes, args.rounds, args.node_only))
    info["total seconds"] = round(time.monotonic() - started, 1)
    results = bench.results()
    rows = table(results)
    verdicts = [v.line for v in bench.verdicts]
    print("\n".join(rows))
    print()
    print("\n".join(memory_lines(memory)))
    print()
    print("\n".join(verdicts))
    profiles = [v for v in bench.verdicts if v.profile]
    for v in profiles:
        print(f"\nprofile of the miss, {v.text}\n{v.profile}")
    RESULTS.mkdir(exist_ok=True)
    mode = ("quick" if args.quick else "full") + ("-node" if args.node_only else "")
    (RESULTS / f"{mode}.json").write_text(
        json.dumps(
            {
                "machine": machine(),
                "quick": args.quick,
                "rounds": args.rounds,
                "run": info,
                "results": [{**asdict(r), "ops_per_s": r.rate} for r in results],
                "peak_memory": memory,
                "targets": [{"pass": v.ok, "line": v.text, "ratios": v.ratios} for v in bench.verdicts],
                "profiles": {v.text: v.profile for v in profiles},
            },
            indent=2,
        )
    )
    if args.node_only:
        print(f"\nresults: {RESULTS / f'{mode}.json'}; {info}")
        return
    plot(results, sizes, RESULTS / f"{mode}.png")
    print(f"\nresults: {RESULTS / f'{mode}.json'}, plot: {RESULTS / f'{mode}.png'}; {info}")
    if not args.quick:
        shutil.copy(RESULTS / "full.png", ROOT / "docs" / "benchmarks.png")
        shutil.copy(RESULTS / "full.json", ROOT / "docs" / "benchmarks.json")
        machine_info = machine()
        doc = [
            f"Run on {machine_info['date']}: {machine_info['platform']}, {machine_info['cpus']} CPUs, "
            f"Python {machine_info['python']}, SQLite {machine_info['sqlite']}"
            + (
                "; Node {node}, @motiadev/core {core}, @motiadev/adapter-redis-state {redis}, "
                "node-redis {client}".format(
                    node=bench.node_info["node"],
                    core=bench.node_info["@motiadev/core"],
                    redis=bench.node_info["@motiadev/adapter-redis-state"],
                    client=bench.node_info["redis"],
                )
                if bench.node_info
                else ""
            )
            + f"; {info['total seconds'] / 60:.0f} minutes.",
            "",
            "```",
            *verdicts,
            "```",
            "",
            "Peak memory, each backend in a fresh process (RSS counts the interpreter and the SQLite "
            "page cache; the Python heap is what tracemalloc sees; Redis keeps its data in the server):",
            "",
            *[f"- {line}" for line in memory_lines(memory)],
            "",
            "![throughput and cost against store size](benchmarks.png)",
            "",
            *rows,
        ]
        if profiles:
            doc += ["", "### Profiles of the misses", ""]
            doc += [
                "Taken by the harness right after each miss was measured (pyinstrument, library "
                "frames folded; under the profiler everything runs slower). For the Node targets: "
                "the top functions of a CPU profile of the Node process (node:inspector; `(idle)` is "
                "time spent waiting for the Python process or Redis) and, for SqlStateAdapter, the "
                "pyinstrument tree of its Python serve process (`MOTIA_STATE_SQL_PROFILE`).",
            ]
            for v in profiles:
                doc += ["", f"**{v.text.split(':')[0]}**", "", "```", v.profile, "```"]
        write_doc(doc)


if __name__ == "__main__":
    main()
