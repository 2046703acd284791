"""Benchmark harness: each backend against baselines measured in the same process.

Run ``make bench`` (full) or ``python -m benchmarks.run --quick`` (small counts: checks the harness
runs). Each workload is seeded and has a discarded warm-up. Targets are ratios against a baseline
from the same run, never absolute numbers, because machines are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from motia_state_sql import FileStateAdapter, MemoryStateAdapter, SqliteStateAdapter, StateAdapter, increment

RESULTS = Path(__file__).resolve().parent / "results"
VALUE = {"id": "order-0", "status": "pending", "total": 99.99, "items": [{"sku": "A-1", "qty": 2}]}


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


async def _timed(
    op: Callable[[int], Awaitable[Any]], count: int, concurrency: int
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    next_index = iter(range(count))

    async def worker() -> None:
        for index in next_index:
            started = time.perf_counter()
            await op(index)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


async def measure(
    backend: str, workload: str, op: Callable[[int], Awaitable[Any]], count: int, concurrency: int = 1
) -> Result:
    await _timed(op, max(1, count // 10), concurrency)  # warm-up, discarded
    seconds, latencies = await _timed(op, count, concurrency)
    latencies.sort()
    return Result(
        backend,
        workload,
        count,
        seconds,
        statistics.median(latencies) * 1e6,
        latencies[int(len(latencies) * 0.99) - 1] * 1e6,
    )


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

    def set(self, key: str, value: str) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("INSERT OR REPLACE INTO t VALUES ('g', ?, ?)", (key, value))
        self.db.execute("COMMIT")

    def get(self, key: str) -> Any:
        row = self.db.execute("SELECT v FROM t WHERE g = 'g' AND k = ?", (key,)).fetchone()
        return json.loads(row[0])


class JsonFileStore:
    """Motia's default: the whole state in one JSON file, rewritten on every write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, str] = {}

    def set(self, key: str, value: Any) -> None:
        self.data[f"g:{key}"] = json.dumps(value)
        self.path.write_text(json.dumps(self.data, indent=2))


def _raw_set(base: RawSqlite, encoded: str) -> Callable[[int], Awaitable[Any]]:
    return _sync_op(lambda i: base.set(f"k{i}", encoded))


def _sync_op(fn: Callable[[int], Any]) -> Callable[[int], Awaitable[Any]]:
    async def op(index: int) -> Any:
        return fn(index)

    return op


# -- the run -----------------------------------------------------------------------------------


def _backends(folder: Path) -> dict[str, Callable[[], StateAdapter]]:
    return {
        "memory": MemoryStateAdapter,
        "sqlite-normal": lambda: SqliteStateAdapter(folder / f"n{time.monotonic_ns()}.db"),
        "sqlite-full": lambda: SqliteStateAdapter(folder / f"f{time.monotonic_ns()}.db", synchronous="FULL"),
        "file": lambda: FileStateAdapter(folder / f"file{time.monotonic_ns()}"),
    }


async def run(quick: bool) -> list[Result]:
    n = 300 if quick else 20_000
    small = 50 if quick else 500  # the legacy file rewrites everything: small sizes only
    stored = 10_000  # items already in the JSON file store when its writes are timed
    rng = random.Random(1234)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="motia-bench-") as tmp:
        folder = Path(tmp)
        raw = {sync: RawSqlite(folder / f"raw-{sync}.db", sync) for sync in ("NORMAL", "FULL")}
        encoded = json.dumps(VALUE)
        for sync, base in raw.items():
            results.append(await measure(f"raw-sqlite3-{sync.lower()}", "set x1", _raw_set(base, encoded), n))
        read = raw["NORMAL"].get
        results.append(
            await measure("raw-sqlite3-normal", "get x1", _sync_op(lambda i: read(f"k{i % n}")), n)
        )
        json_store = JsonFileStore(folder / "motia.state.json")
        json_store.data = {f"g:seed{i}": json.dumps(VALUE) for i in range(stored)}
        results.append(
            await measure(
                "json-file-store", "set x1", _sync_op(lambda i: json_store.set(f"k{i}", VALUE)), small
            )
        )

        for name, build in _backends(folder).items():
            async with build() as store:
                results += await _workloads(name, store, small if name == "file" else n, rng)
        for base in raw.values():
            base.db.close()
    _ratios(results)
    return results


async def _workloads(name: str, store: StateAdapter, count: int, rng: random.Random) -> list[Result]:
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
    ]
    for size in (10, 1000):
        if size > count:
            continue
        for i in range(size):
            await store.set(f"group{size}", f"k{i}", VALUE)

        async def group(i: int, size: int = size) -> Any:
            return await store.get_group(f"group{size}")

        results.append(await measure(name, f"get_group {size}", group, max(5, count // size)))
    results.append(await measure(name, "update hot x64", bump, count, 64))
    results.append(await measure(name, "mix 90/9/1", mix, count))
    return results


def _ratios(results: list[Result]) -> None:
    by = {(r.backend, r.workload): r for r in results}
    for r in results:
        if r.backend.startswith(("raw-", "json-")):
            continue
        if r.workload.startswith("set") and r.backend.startswith("sqlite"):
            base = by[("raw-sqlite3-" + r.backend.split("-")[1], "set x1")]
        elif r.workload.startswith("get x") and r.backend.startswith("sqlite"):
            base = by[("raw-sqlite3-normal", "get x1")]
        elif r.workload == "set x1":
            base = by[("json-file-store", "set x1")]
        else:
            continue
        r.baseline, r.ratio = base.backend, r.rate / base.rate


TARGETS: list[tuple[str, str, float]] = [
    ("sqlite-normal", "set x64", 1.2),
    ("sqlite-full", "set x64", 1.2),
    ("sqlite-normal", "set x1", 0.4),
    ("sqlite-normal", "get x1", 0.25),
]


def report(results: list[Result]) -> list[str]:
    """The table and the target lines."""
    lines = [f"{'backend':<20} {'workload':<16} {'ops/s':>12} {'p50 us':>9} {'p99 us':>9}  ratio"]
    for r in results:
        ratio = f"{r.ratio:6.2f}x {r.baseline}" if r.ratio is not None else ""
        lines.append(
            f"{r.backend:<20} {r.workload:<16} {r.rate:>12,.0f} {r.p50_us:>9.1f} {r.p99_us:>9.1f}  {ratio}"
        )
    by = {(r.backend, r.workload): r for r in results}
    json_rate = by[("json-file-store", "set x1")].rate
    lines.append("")
    for backend, workload, want in TARGETS:
        r = by[(backend, workload)]
        assert r.ratio is not None
        verdict = "PASS" if r.ratio >= want else "FAIL"
        lines.append(f"{verdict} {backend} {workload}: {r.ratio:.2f}x {r.baseline} (target >= {want}x)")
    for r in results:
        if r.workload == "set x1" and not r.backend.startswith(("raw-", "json-")):
            speedup = r.rate / json_rate
            if r.backend == "file":
                lines.append(
                    f"n/a  file set x1 vs JSON file store: {speedup:.1f}x (the legacy format rewrites "
                    "the whole file too, and is timed on a smaller store; no target)"
                )
                continue
            verdict = "PASS" if speedup > 500 else "FAIL"
            lines.append(
                f"{verdict} {r.backend} set x1 vs JSON file store with 10 000 items: {speedup:.0f}x "
                "(target > 500x)"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts: only checks the harness runs")
    args = parser.parse_args()
    results = asyncio.run(run(args.quick))
    lines = report(results)
    print("\n".join(lines))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("quick.json" if args.quick else "latest.json")
    out.write_text(
        json.dumps(
            {
                "machine": {
                    "python": sys.version.split()[0],
                    "platform": platform.platform(),
                    "cpus": os.cpu_count(),
                    "sqlite": sqlite3.sqlite_version,
                },
                "quick": args.quick,
                "results": [{**asdict(r), "ops_per_s": r.rate} for r in results],
            },
            indent=2,
        )
    )
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
