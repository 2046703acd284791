"""Benchmark harness: every backend against baselines measured in the same process and run.

``make bench`` runs the full set (minutes); ``make bench-quick`` runs small counts in seconds and
only shows that the harness works. Each workload is seeded and has a discarded warm-up; every
target is a ratio against a baseline from the same run, never an absolute number.

Output: a table (ops/s, p50/p99 latency, ratio to its baseline) and PASS/FAIL target lines on
stdout, ``benchmarks/results/<mode>.json``, ``benchmarks/results/<mode>.png``; the full run also
rewrites the results part of ``docs/benchmarks.md``, ``docs/benchmarks.png`` and ``docs/benchmarks.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
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
Op = Callable[[int], Awaitable[Any]]


@dataclass
class Result:
    backend: str
    workload: str
    ops: int
    seconds: float
    p50_us: float
    p99_us: float
    baseline: str = ""
    ratio: float | None = None

    @property
    def rate(self) -> float:
        return self.ops / self.seconds


@dataclass
class Sizes:
    """How much work each workload does; the quick mode only checks the harness runs."""

    ops: int
    file_ops: int
    groups: tuple[int, ...]
    stored: tuple[int, ...]
    json_items: int = 10_000


FULL = Sizes(ops=20_000, file_ops=300, groups=(10, 1_000, 100_000), stored=(1_000, 100_000, 1_000_000))
QUICK = Sizes(ops=100, file_ops=20, groups=(10, 100), stored=(100, 1_000), json_items=1_000)


async def _timed(op: Op, count: int, concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    indexes = iter(range(count))

    async def worker() -> None:
        for index in indexes:
            started = time.perf_counter()
            await op(index)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


async def measure(backend: str, workload: str, op: Op, count: int, concurrency: int = 1) -> Result:
    await _timed(op, max(1, count // 10), concurrency)  # warm-up, discarded
    seconds, latencies = await _timed(op, count, concurrency)
    latencies.sort()
    return Result(
        backend,
        workload,
        count,
        seconds,
        statistics.median(latencies) * 1e6,
        latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1e6,
    )


def sync_op(fn: Callable[[int], Any]) -> Op:
    """An async wrapper so synchronous baselines run through the same timing loop."""

    async def op(index: int) -> Any:
        return fn(index)

    return op


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

    def fill(self, group: str, count: int) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany(
            "INSERT OR REPLACE INTO t VALUES (?, ?, ?)", ((group, f"k{i}", ENCODED) for i in range(count))
        )
        self.db.execute("COMMIT")


class JsonFileStore:
    """Motia's default: the whole state in one JSON file, rewritten on every write."""

    def __init__(self, path: Path, items: int) -> None:
        self.path = path
        self.data = {f"g:seed{i}": ENCODED for i in range(items)}

    def set(self, key: str) -> None:
        self.data[f"g:{key}"] = json.dumps(VALUE)
        self.path.write_text(json.dumps(self.data, indent=2))


# -- backends ----------------------------------------------------------------------------------


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """``$REDIS_URL``, else a throwaway redis-server on a free loopback port (the tests' helper)."""
    sys.path.insert(0, str(ROOT))
    from tests.redis_server import redis_url_or_throwaway

    with redis_url_or_throwaway() as url:
        yield url


def backends(folder: Path, redis_url: str) -> dict[str, Callable[[], StateAdapter]]:
    prefix = f"bench:{time.time_ns()}:"
    return {
        "memory": MemoryStateAdapter,
        "sqlite-normal": lambda: SqliteStateAdapter(folder / "normal.db"),
        "sqlite-full": lambda: SqliteStateAdapter(folder / "full.db", synchronous="FULL"),
        "redis-native": lambda: RedisStateAdapter(redis_url, key_prefix=prefix + "n:"),
        "redis-motia": lambda: RedisStateAdapter(redis_url, key_prefix=prefix + "m:", layout="motia"),
        "file": lambda: FileStateAdapter(folder / "file", durable=False),
    }


async def fill(store: StateAdapter, group: str, count: int) -> None:
    """Store ``count`` items in ``group`` quickly: transactions of 5 000, or 500 writes at once on Redis."""
    for start in range(0, count, 5_000):
        keys = [f"k{i}" for i in range(start, min(count, start + 5_000))]
        if isinstance(store, RedisStateAdapter):  # a transaction there reads every key first
            for at in range(0, len(keys), 500):
                await asyncio.gather(*(store.set_json(group, key, ENCODED) for key in keys[at : at + 500]))
            continue
        async with store.transaction() as tx:
            for key in keys:
                await tx.set_json(group, key, ENCODED)


def _group_reads(name: str, count: int, size: int) -> int:
    """How many ``get_group`` calls to time: fewer for large groups, and for the motia layout,
    whose every call scans the whole keyspace (as Motia's own adapter does)."""
    reads = max(3, min(count, 2_000, 200_000 // size))
    return min(reads, 50) if name == "redis-motia" else reads


async def workloads(name: str, store: StateAdapter, sizes: Sizes, rng: random.Random) -> list[Result]:
    count = sizes.file_ops if name == "file" else sizes.ops

    async def set_key(i: int) -> Any:
        return await store.set("g", f"k{i}", VALUE)

    async def set_other(i: int) -> Any:
        return await store.set("g", f"c{i}", VALUE)

    async def get(i: int) -> Any:
        return await store.get("g", f"k{i % count}")

    async def bump(i: int) -> Any:
        return await store.update("g", "hot", [increment("n")])

    async def mix(i: int) -> Any:
        roll, key = rng.random(), f"k{rng.randrange(count)}"
        if roll < 0.90:
            return await store.get("g", key)
        if roll < 0.99:
            return await store.set("g", key, VALUE)
        return await store.delete("g", key)

    results = [
        await measure(name, "set x1", set_key, count),
        await measure(name, "set x64", set_other, count, 64),
        await measure(name, "get x1", get, count),
        await measure(name, "get x64", get, count, 64),
        await measure(name, "update hot x64", bump, count, 64),
        await measure(name, "mix 90/9/1", mix, count),
    ]
    if name == "file":
        return results  # the legacy file rewrites itself on every write: small sizes only
    for size in sizes.groups:
        await fill(store, f"group{size}", size)

        async def group(i: int, size: int = size) -> Any:
            return await store.get_group(f"group{size}")

        results.append(await measure(name, f"get_group {size}", group, _group_reads(name, count, size)))
    for size in sizes.stored:
        await fill(store, f"stored{size}", size)

        async def set_stored(i: int, size: int = size) -> Any:
            return await store.set(f"stored{size}", f"k{rng.randrange(size)}", VALUE)

        async def get_stored(i: int, size: int = size) -> Any:
            return await store.get(f"stored{size}", f"k{rng.randrange(size)}")

        results.append(await measure(name, f"set @{size}", set_stored, count))
        results.append(await measure(name, f"get @{size}", get_stored, count))
    return results


async def peak_memory(build: Callable[[], StateAdapter], name: str, count: int) -> float:
    """Peak Python heap (MiB) while a fresh store takes ``count`` sets and reads them back."""
    tracemalloc.start()
    try:
        async with build() as store:
            for i in range(count):
                await store.set("mem", f"k{i}", VALUE)
            await store.get_group("mem")
            await store.clear("mem")
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def _keyed(fn: Callable[[str], Any], keys: Callable[[int], str]) -> Op:
    return sync_op(lambda i: fn(keys(i)))


async def baselines(folder: Path, redis_url: str, sizes: Sizes) -> list[Result]:
    results = []
    rng = random.Random(99)
    raw = {sync: RawSqlite(folder / f"raw-{sync}.db", sync) for sync in ("NORMAL", "FULL")}
    for sync, base in raw.items():
        write = functools.partial(base.set, "g")
        results.append(
            await measure(f"raw-sqlite3-{sync.lower()}", "set x1", _keyed(write, "k{}".format), sizes.ops)
        )
    normal = raw["NORMAL"]
    results.append(
        await measure(
            "raw-sqlite3-normal",
            "get x1",
            _keyed(functools.partial(normal.get, "g"), lambda i: f"k{i % sizes.ops}"),
            sizes.ops,
        )
    )
    for size in sizes.stored:
        normal.fill(f"stored{size}", size)

        def random_key(i: int, size: int = size) -> str:
            return f"k{rng.randrange(size)}"

        group = f"stored{size}"
        results.append(
            await measure(
                "raw-sqlite3-normal",
                f"set @{size}",
                _keyed(functools.partial(normal.set, group), random_key),
                sizes.ops,
            )
        )
        results.append(
            await measure(
                "raw-sqlite3-normal",
                f"get @{size}",
                _keyed(functools.partial(normal.get, group), random_key),
                sizes.ops,
            )
        )
    for base in raw.values():
        base.db.close()

    cache = diskcache.Cache(str(folder / "diskcache"))

    def cache_set(key: str) -> Any:
        return cache.set(key, VALUE)

    try:
        results.append(await measure("diskcache", "set x1", _keyed(cache_set, "g:k{}".format), sizes.ops))
        results.append(
            await measure(
                "diskcache", "get x1", _keyed(cache.get, lambda i: f"g:k{i % sizes.ops}"), sizes.ops
            )
        )
        for size in sizes.stored:
            with cache.transact():
                for i in range(size):
                    cache.set(f"stored{size}:k{i}", VALUE)

            def stored_key(i: int, size: int = size) -> str:
                return f"stored{size}:k{rng.randrange(size)}"

            results.append(
                await measure("diskcache", f"set @{size}", _keyed(cache_set, stored_key), sizes.ops)
            )
    finally:
        cache.close()

    client = aioredis.Redis.from_url(redis_url)
    try:
        key = f"bench:bare:{time.time_ns()}:"

        async def bare_set(i: int) -> Any:
            return await client.set(f"{key}{i}", ENCODED)

        async def bare_get(i: int) -> Any:
            value = await client.get(f"{key}{i % sizes.ops}")
            return json.loads(value) if value else None

        results.append(await measure("redis-py bare", "set x1", bare_set, sizes.ops))
        results.append(await measure("redis-py bare", "get x1", bare_get, sizes.ops))
    finally:
        await client.aclose()

    json_store = JsonFileStore(folder / "motia.state.json", sizes.json_items)
    results.append(
        await measure("json-file-store", "set x1", sync_op(lambda i: json_store.set(f"k{i}")), sizes.file_ops)
    )
    return results


# -- ratios and targets ------------------------------------------------------------------------


def baseline_of(r: Result) -> tuple[str, str] | None:
    """The baseline row each result is compared with in the table."""
    level = r.backend.split("-")[1] if r.backend.startswith("sqlite-") else ""
    if r.backend.startswith("sqlite-"):
        if r.workload in ("set x1", "set x64"):
            return f"raw-sqlite3-{level}", "set x1"
        if r.workload in ("get x1", "get x64"):
            return "raw-sqlite3-normal", "get x1"
        if r.workload.startswith(("set @", "get @")) and level == "normal":
            return "raw-sqlite3-normal", r.workload
    if r.backend.startswith("redis-") and r.workload in ("set x1", "get x1"):
        return "redis-py bare", r.workload
    if r.backend in ("memory", "file") and r.workload == "set x1":
        return "json-file-store", "set x1"
    return None


def add_ratios(results: list[Result]) -> None:
    by = {(r.backend, r.workload): r for r in results}
    for r in results:
        key = baseline_of(r)
        if key is not None and key in by:
            r.baseline, r.ratio = key[0], r.rate / by[key].rate


def targets(results: list[Result], sizes: Sizes) -> list[tuple[bool | None, str]]:
    """Each target line: PASS (True), FAIL (False) or n/a (None), with what was compared."""
    by = {(r.backend, r.workload): r for r in results}
    lines: list[tuple[bool | None, str]] = []

    def ratio(a: tuple[str, str], b: tuple[str, str], want: float, text: str, above: bool = False) -> None:
        if a not in by or b not in by:
            return
        value = by[a].rate / by[b].rate
        ok = value > want if above else value >= want
        sign = ">" if above else ">="
        lines.append((ok, f"{text}: {value:.2f}x ({a[0]} {a[1]} / {b[0]} {b[1]}, target {sign} {want:.2f}x)"))

    for level in ("normal", "full"):
        ratio(
            (f"sqlite-{level}", "set x64"),
            (f"raw-sqlite3-{level}", "set x1"),
            1.2,
            f"SQLite {level.upper()} set from 64 coroutines vs raw sqlite3 commit-per-write",
        )
        ratio(
            (f"sqlite-{level}", "set x1"),
            (f"raw-sqlite3-{level}", "set x1"),
            0.4,
            f"SQLite {level.upper()} set from one coroutine vs raw sqlite3 commit-per-write",
        )
    ratio(
        ("sqlite-normal", "get x1"),
        ("raw-sqlite3-normal", "get x1"),
        0.25,
        "SQLite get from one coroutine vs raw sqlite3 reads",
    )
    ratio(
        ("sqlite-normal", "get x1"), ("diskcache", "get x1"), 1.0, "SQLite get vs diskcache get", above=True
    )
    for workload in ("set x1", "set x64", *(f"set @{n}" for n in sizes.stored)):
        base = ("diskcache", workload if workload.startswith("set @") else "set x1")
        ratio(("sqlite-normal", workload), base, 1.0, f"SQLite set vs diskcache set ({workload})", above=True)
    small, large = sizes.stored[0], sizes.stored[-1]
    for backend in ("memory", "sqlite-normal", "sqlite-full", "redis-native", "redis-motia"):
        for op in ("set", "get"):
            ratio(
                (backend, f"{op} @{large}"),
                (backend, f"{op} @{small}"),
                1 / 1.5,
                f"{backend} {op} cost with {large:,} items within 1.5x of {small:,}",
            )
        if backend == "redis-motia":
            lines.append(
                (
                    None,
                    "redis-motia get_group cost grows with the keyspace: Motia's layout can only "
                    "SCAN for a group's keys (the native layout has no such cost)",
                )
            )
            continue
        ratio(
            (backend, "get_group 10 (after)"),
            (backend, "get_group 10"),
            1 / 1.5,
            f"{backend} get_group of 10 items unchanged after {sum(sizes.stored):,} items in other groups",
        )
    for op in ("get x1", "set x1"):
        ratio(
            ("redis-native", op),
            ("redis-py bare", op),
            0.8,
            f"Redis native {op.split()[0]} vs the bare redis-py command",
        )
    json_store = by[("json-file-store", "set x1")]
    for backend in ("memory", "sqlite-normal", "sqlite-full", "redis-native", "redis-motia", "file"):
        best = max(
            (by[(backend, w)] for w in ("set x1", "set x64") if (backend, w) in by), key=lambda r: r.rate
        )
        value = best.rate / json_store.rate
        if backend == "file":
            lines.append(
                (
                    None,
                    f"file set vs the JSON file store: {value:.1f}x (n/a: the legacy format rewrites the "
                    "whole file too, and is timed on a smaller store)",
                )
            )
            continue
        lines.append(
            (
                value > 500,
                f"{backend} set ({best.workload}) vs the JSON file store with "
                f"{sizes.json_items:,} items: {value:.0f}x (target > 500x)",
            )
        )
    return lines


def table(results: list[Result]) -> list[str]:
    lines = [
        "| backend | workload | ops/s | p50 us | p99 us | ratio |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        ratio = f"{r.ratio:.2f}x {r.baseline}" if r.ratio is not None else ""
        lines.append(
            f"| {r.backend} | {r.workload} | {r.rate:,.0f} | {r.p50_us:.1f} | {r.p99_us:.1f} | {ratio} |"
        )
    return lines


def plot(results: list[Result], sizes: Sizes, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["memory", "sqlite-normal", "sqlite-full", "redis-native", "redis-motia", "file"]
    workloads = ["set x1", "set x64", "get x1", "get x64", "update hot x64", "mix 90/9/1"]
    by = {(r.backend, r.workload): r for r in results}
    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 5.5))
    width = 0.8 / len(names)
    for n, name in enumerate(names):
        rates = [by[(name, w)].rate if (name, w) in by else 0 for w in workloads]
        left.bar([i + n * width for i in range(len(workloads))], rates, width, label=name)
    left.set_xticks([i + 0.4 - width / 2 for i in range(len(workloads))], workloads, rotation=20)
    left.set_yscale("log")
    left.set_ylabel("ops/s (log)")
    left.set_title("Throughput per workload")
    left.legend(fontsize=8)
    palette = plt.get_cmap("tab10")
    for number, name in enumerate([*names[:-1], "raw-sqlite3-normal", "diskcache"]):
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


async def run(sizes: Sizes) -> tuple[list[Result], dict[str, float]]:
    rng = random.Random(1234)
    results: list[Result] = []
    memory: dict[str, float] = {}
    folder = Path(tempfile.mkdtemp(prefix="motia-bench-"))
    try:
        with redis_server() as redis_url:
            results += await baselines(folder, redis_url, sizes)
            for name, build in backends(folder, redis_url).items():
                async with build() as store:
                    results += await workloads(name, store, sizes, rng)
                    if name != "file":

                        async def group(i: int, s: StateAdapter = store) -> Any:
                            return await s.get_group("group10")

                        results.append(
                            await measure(
                                name, "get_group 10 (after)", group, _group_reads(name, sizes.ops, 10)
                            )
                        )
                memory[name] = await peak_memory(
                    build, name, sizes.file_ops if name == "file" else min(sizes.ops, 5_000)
                )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    add_ratios(results)
    return results, memory


def write_doc(lines: list[str]) -> None:
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    text = DOC.read_text() if DOC.exists() else f"# Benchmarks\n\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    DOC.write_text(f"{head}{start}\n" + "\n".join(lines) + f"\n{end}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts: only checks the harness runs")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    results, memory = asyncio.run(run(sizes))
    checks = targets(results, sizes)
    verdicts = [f"{'n/a ' if ok is None else 'PASS' if ok else 'FAIL'} {text}" for ok, text in checks]
    rows = table(results)
    print("\n".join(rows))
    print()
    print("\n".join(f"peak Python heap, {name}: {mib:.1f} MiB" for name, mib in memory.items()))
    print()
    print("\n".join(verdicts))
    RESULTS.mkdir(exist_ok=True)
    mode = "quick" if args.quick else "full"
    (RESULTS / f"{mode}.json").write_text(
        json.dumps(
            {
                "machine": machine(),
                "quick": args.quick,
                "results": [{**asdict(r), "ops_per_s": r.rate} for r in results],
                "peak_memory_mib": memory,
                "targets": [{"pass": ok, "line": text} for ok, text in checks],
            },
            indent=2,
        )
    )
    plot(results, sizes, RESULTS / f"{mode}.png")
    print(f"\nresults: {RESULTS / f'{mode}.json'}, plot: {RESULTS / f'{mode}.png'}")
    if not args.quick:
        shutil.copy(RESULTS / "full.png", ROOT / "docs" / "benchmarks.png")
        shutil.copy(RESULTS / "full.json", ROOT / "docs" / "benchmarks.json")
        info = machine()
        write_doc(
            [
                f"Run on {info['date']}: {info['platform']}, {info['cpus']} CPUs, Python {info['python']}, "
                f"SQLite {info['sqlite']}.",
                "",
                "```",
                *verdicts,
                "```",
                "",
                *[f"- peak Python heap, {name}: {mib:.1f} MiB" for name, mib in memory.items()],
                "",
                "![throughput and cost against store size](benchmarks.png)",
                "",
                *rows,
            ]
        )


if __name__ == "__main__":
    main()
