"""The benchmark harness: every backend against baselines measured in the same run, alternately.

``make bench`` runs the full set (minutes); ``make bench-quick`` runs small counts in seconds and
only shows that the harness works. Every workload is seeded and has a discarded warm-up; every
target is a ratio against a baseline from the same run (``benchmarks/targets.py``), measured in
alternated rounds, never an absolute number; a target that misses is profiled at once.

The modules: ``sizes`` (the counts), ``backends`` (one entry per backend), ``baselines`` (raw
sqlite3, bare redis-py, diskcache, the JSON file stand-in, start-up), ``node`` (Motia's own Node
adapters, in a Node process the harness alternates with its own stores), ``targets`` (the table
of targets and their verdicts), ``memory`` (peak memory, a process per backend); the runner,
the arrival patterns and the report are the package's (``motia_state_sql.bench``), shared with
``motia-state bench``. This module runs the phases and writes the results.

Output: the table (ops/s, p50/p99 latency, ratio to the baseline of the row's first target),
peak memory, PASS/FAIL target lines and the profiles of the misses on stdout;
``<out>/<mode>.json`` and ``<out>/<mode>.png`` (``--out``, default ``benchmarks/results``); the full
run also rewrites the results part of ``docs/benchmarks.md``, ``docs/benchmarks.png`` and
``docs/benchmarks.json``. With ``$REDIS_URL`` set the Redis rows use that server, and every key
the run wrote there (all under one ``bench:<time>:`` prefix) is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import diskcache
import redis.asyncio as aioredis

from motia_state_sql import FileStateAdapter, StateAdapter, open_state
from motia_state_sql.bench.report import machine, plot, results_json, table
from motia_state_sql.bench.runner import Bench, Measurable, Row, Spec
from motia_state_sql.bench.workloads import ENCODED, VALUE, Op, fill, one, operation, rng, sync_op

from . import memory
from .backends import BACKENDS, NAMES, SIZED, Where, servers
from .baselines import (
    HEAVY,
    CommandSpec,
    JsonFileStore,
    RawSqlite,
    bare_redis,
    fill_cache,
    fill_redis,
    heavy_imports,
    motia_state_command,
)
from .node import MOTIA_FILE, MOTIA_REDIS, NODE_SQLITE, NodeProcess, NodeSpec, motia_file_folder, node_dir
from .sizes import FULL, QUICK, ROUNDS, Sizes
from .targets import CLI_HELP, PYTHON_PASS, REDIS_BARE, REDIS_POOL, Judge, Verdict, baseline_of, targets

ROOT: Final = Path(__file__).resolve().parent.parent
RESULTS: Final = ROOT / "benchmarks" / "results"
DOC: Final = ROOT / "docs" / "benchmarks.md"
#: What runs in the main phase on every backend: (operation, arrival pattern).
MAIN: Final = (
    *(("set", arrival) for arrival in ("x1", "workers", "gather", "semaphore", "open")),
    *(("get", arrival) for arrival in ("x1", "workers", "gather")),
    ("update", "workers"),
    ("mix", "x1"),
)
#: The order of the table: baselines, then our backends, then Node's.
ORDER: Final = (
    "raw-sqlite3-normal",
    "raw-sqlite3-full",
    "diskcache",
    REDIS_BARE,
    REDIS_POOL,
    "json-file-store",
    PYTHON_PASS,
    CLI_HELP,
    *NAMES,
    MOTIA_REDIS,
    MOTIA_FILE,
    NODE_SQLITE,
)


@dataclass
class Run:
    """One run: its sizes, its measurements, the stores it opened, the Node process."""

    sizes: Sizes
    bench: Bench
    judge: Judge
    where: Where
    node: NodeProcess | None = None
    notes: list[Verdict] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    async def store(self, name: str, role: str) -> StateAdapter:
        """A fresh store of backend ``name`` for ``role``, open."""
        store = open_state(BACKENDS[name].url(self.where, role))
        await store.__aenter__()
        return store

    def count(self, name: str) -> int:
        return self.sizes.file_ops if BACKENDS[name].slow else self.sizes.ops

    def spec(self, backend: str, op: str, arrival: str, make: Callable[[int], Op], count: int) -> Spec:
        return Spec(backend, self.sizes.workload(op, arrival), make, count, self.sizes.arrivals()[arrival])

    async def node_store(self, backend: str, role: str, stored: int, filled: bool = False) -> bool:
        """Open ``backend`` in the Node process; False when there is no Node process."""
        if self.node is None:
            return False
        await self.node.request("open", backend=backend, role=role, stored=stored, filled=filled)
        return True

    def node_spec(
        self, backend: str, role: str, op: str, arrival: str, workload: str, count: int
    ) -> NodeSpec:
        assert self.node is not None
        return NodeSpec(self.node, backend, role, op, arrival, workload, count)


def _maker(op: str, store: StateAdapter, stored: int) -> Callable[[int], Op]:
    return lambda tag: operation(op, store, "g", stored, tag)


# -- phases ------------------------------------------------------------------------------------


async def phase_main(run: Run) -> None:
    """Every backend under every arrival pattern, against raw sqlite3, diskcache, bare redis-py
    and Motia's Node RedisStateAdapter; get_group of several sizes."""
    sizes, count, folder = run.sizes, run.sizes.ops, run.where.folder
    raw = {level: RawSqlite(folder / f"raw-{level}.db", level.upper()) for level in ("normal", "full")}
    raw["normal"].fill("g", 0, count)
    cache = diskcache.Cache(str(folder / "diskcache-main"))
    fill_cache(cache, "g", 0, count)
    bare, pooled = bare_redis(run.where.servers["redis"], False), bare_redis(run.where.servers["redis"], True)
    prefix = f"{run.where.prefix}bare:"
    try:
        await fill_redis(bare, prefix, count)
        baselines: list[Measurable] = []
        for level, base in raw.items():
            for arrival in ("x1", "workers", "gather", "semaphore", "open"):
                baselines.append(
                    run.spec(
                        f"raw-sqlite3-{level}",
                        "set",
                        arrival,
                        lambda tag, base=base: sync_op(lambda i: base.set("g", f"s{tag}-{i}")),  # type: ignore[misc]
                        count,
                    )
                )
        baselines += [
            run.spec(
                "raw-sqlite3-normal",
                "get",
                "x1",
                lambda tag: sync_op(lambda i: raw["normal"].get("g", f"k{i % count}")),
                count,
            ),
            run.spec(
                "diskcache",
                "set",
                "x1",
                lambda tag: sync_op(lambda i: cache.set(f"g:s{tag}-{i}", VALUE)),
                count,
            ),
            run.spec(
                "diskcache", "get", "x1", lambda tag: sync_op(lambda i: cache.get(f"g:k{i % count}")), count
            ),
        ]
        for client, backend, arrival in ((bare, REDIS_BARE, "x1"), (pooled, REDIS_POOL, "gather")):
            baselines += [
                run.spec(backend, "set", arrival, _bare_set(client, prefix), count),
                run.spec(backend, "get", arrival, _bare_get(client, prefix, count), count),
            ]
        for backend in (MOTIA_REDIS, NODE_SQLITE):
            if await run.node_store(backend, "main", count):
                for op, arrival in (("set", "x1"), ("get", "x1"), ("set", "all"), ("get", "all")):
                    label = f"{op} {'Promise.all' if arrival == 'all' else arrival}"
                    baselines.append(run.node_spec(backend, "main", op, arrival, label, count))
                reads = _node_group_reads(count)
                baselines.append(run.node_spec(backend, "main", "getGroup", "x1", f"getGroup {count}", reads))
        for name in NAMES:
            store = await run.store(name, "main")
            try:
                n = run.count(name)
                await fill(store, "g", 0, n)
                specs: list[Measurable] = [
                    run.spec(name, op, arrival, _maker(op, store, n), n) for op, arrival in MAIN
                ]
                if not BACKENDS[name].slow:
                    for size in sizes.groups:
                        await fill(store, f"group{size}", 0, size)
                        specs.append(
                            Spec(
                                name,
                                f"get_group {size}",
                                _group_reader(store, f"group{size}"),
                                _group_reads(name, count, size),
                                one(),
                            )
                        )
                await run.judge.measure([*specs, *baselines])
            finally:
                await store.close()
    finally:
        for base in raw.values():
            base.close()
        cache.close()
        await bare.aclose()
        await pooled.aclose()


def _bare_set(client: aioredis.Redis, prefix: str) -> Callable[[int], Op]:
    def make(tag: int) -> Op:
        async def op(i: int) -> Any:
            return await client.set(f"{prefix}s{tag}-{i}", ENCODED)

        return op

    return make


def _bare_get(client: aioredis.Redis, prefix: str, count: int) -> Callable[[int], Op]:
    def make(tag: int) -> Op:
        async def op(i: int) -> Any:
            value = await client.get(f"{prefix}k{i % count}")
            return json.loads(value) if value else None

        return op

    return make


def _group_reader(store: StateAdapter, group: str) -> Callable[[int], Op]:
    def make(tag: int) -> Op:
        async def op(i: int) -> Any:
            return await store.get_group(group)

        return op

    return make


def _group_reads(name: str, count: int, size: int) -> int:
    """How many ``get_group`` calls to time: fewer for large groups, and for the motia layout,
    whose every call scans the whole keyspace (as Motia's own adapter does)."""
    reads = max(3, min(count, 2_000, 200_000 // size))
    return min(reads, 50) if name == "redis-motia" else reads


def _node_group_reads(size: int) -> int:
    """``getGroup`` calls per measurement from Node: few (they are reference lines, and our Node
    adapter's getGroup of thousands of items takes tens of milliseconds)."""
    return max(3, min(20, 20_000 // size))


async def phase_file(run: Run) -> None:
    """Every backend against Motia's Node FileStateAdapter, each holding the same items: sets of
    the stored keys in turn from one caller (the store stays at its size)."""
    for items in run.sizes.motia_file_items:
        role = f"file{items}"
        workload = f"set x1 @{items}"
        baselines: list[Measurable] = []
        if run.node is not None:
            folder = motia_file_folder(run.where.folder / "node", role)
            folder.mkdir(parents=True, exist_ok=True)
            async with FileStateAdapter(folder) as motia_file:  # Motia's format, written at once
                await fill(motia_file, "g", 0, items)
            await run.node_store(MOTIA_FILE, role, items, filled=True)
            await run.node_store(NODE_SQLITE, role, items)
            for backend in (MOTIA_FILE, NODE_SQLITE):
                count = run.sizes.file_ops if backend == MOTIA_FILE else run.sizes.ops
                baselines += [
                    run.node_spec(backend, role, "overwrite", "x1", workload, count),
                    run.node_spec(backend, role, "get", "x1", f"get x1 @{items}", count),
                    run.node_spec(
                        backend,
                        role,
                        "getGroup",
                        "x1",
                        f"getGroup {items}",
                        _group_reads(backend, count, items),
                    ),
                ]
        stand_in = JsonFileStore(run.where.folder / f"motia-{items}.json", items)
        baselines.append(
            Spec(
                "json-file-store",
                workload,
                _stand_in_set(stand_in, items),
                run.sizes.file_ops,
                one(),
            )
        )
        for name in NAMES:
            store = await run.store(name, role)
            try:
                await fill(store, "g", 0, items)
                ours = Spec(name, workload, _maker("overwrite", store, items), run.count(name), one())
                await run.judge.measure([ours, *baselines])
            finally:
                await store.close()
        if run.node is not None:
            for backend in (MOTIA_FILE, NODE_SQLITE):
                await run.node.request("close", backend=backend, role=role)


def _stand_in_set(stand_in: JsonFileStore, items: int) -> Callable[[int], Op]:
    return lambda tag: sync_op(lambda i: stand_in.set(f"k{i % items}"))


def _sized(name: str, store: StateAdapter, size: int, count: int) -> list[Spec]:
    """Random-key set/get on a store holding ``size`` items in group ``stored``, and get_group of
    its 10-item group ``ten``."""

    def setter(tag: int) -> Op:
        draw = rng(name, size, "set", tag)
        return lambda i: store.set("stored", f"k{draw.randrange(size)}", VALUE)

    def getter(tag: int) -> Op:
        draw = rng(name, size, "get", tag)
        return lambda i: store.get("stored", f"k{draw.randrange(size)}")

    return [
        Spec(name, f"set @{size}", setter, count, one()),
        Spec(name, f"get @{size}", getter, count, one()),
        Spec(
            name, f"get_group 10 @{size}", _group_reader(store, "ten"), _group_reads(name, count, 10), one()
        ),
    ]


def _raw_sized(base: RawSqlite, size: int, count: int) -> list[Spec]:
    def setter(tag: int) -> Op:
        draw = rng("raw", size, tag)
        return sync_op(lambda i: base.set("stored", f"k{draw.randrange(size)}"))

    def getter(tag: int) -> Op:
        draw = rng("raw", size, "get", tag)
        return sync_op(lambda i: base.get("stored", f"k{draw.randrange(size)}"))

    return [
        Spec("raw-sqlite3-normal", f"set @{size}", setter, count, one()),
        Spec("raw-sqlite3-normal", f"get @{size}", getter, count, one()),
    ]


def _cache_sized(cache: diskcache.Cache, size: int, count: int) -> Spec:
    def setter(tag: int) -> Op:
        draw = rng("diskcache", size, tag)
        return sync_op(lambda i: cache.set(f"stored:k{draw.randrange(size)}", VALUE))

    return Spec("diskcache", f"set @{size}", setter, count, one())


async def phase_stored(run: Run) -> None:
    """Cost against store size: a small store and a large one per backend, measured alternately
    (the large one grows through the sizes); SQLite against diskcache at each size."""
    small_size, *larger = run.sizes.stored
    count, folder = run.sizes.ops, run.where.folder
    raw_small, raw_large = (
        RawSqlite(folder / "raw-small.db", "NORMAL"),
        RawSqlite(folder / "raw-large.db", "NORMAL"),
    )
    cache_small = diskcache.Cache(str(folder / "diskcache-small"))
    cache_large = diskcache.Cache(str(folder / "diskcache-large"))
    small: dict[str, StateAdapter] = {}
    large: dict[str, StateAdapter] = {}
    try:
        raw_small.fill("stored", 0, small_size)
        fill_cache(cache_small, "stored", 0, small_size)
        for name in SIZED:
            small[name] = await run.store(name, "small")
            large[name] = await run.store(name, "large")
            for store in (small[name], large[name]):
                await fill(store, "ten", 0, 10)
            await fill(small[name], "stored", 0, small_size)
        little = [spec for name in SIZED for spec in _sized(name, small[name], small_size, count)]
        little += [*_raw_sized(raw_small, small_size, count), _cache_sized(cache_small, small_size, count)]
        await run.judge.measure(little)
        done = 0
        for size in larger:
            raw_large.fill("stored", done, size)
            fill_cache(cache_large, "stored", done, size)
            for name in SIZED:
                await fill(large[name], "stored", done, size)
            done = size
            big = [spec for name in SIZED for spec in _sized(name, large[name], size, count)]
            big += [*_raw_sized(raw_large, size, count), _cache_sized(cache_large, size, count)]
            await run.judge.measure([*big, *little])
    finally:
        for store in (*small.values(), *large.values()):
            await store.close()
        raw_small.close()
        raw_large.close()
        cache_small.close()
        cache_large.close()


async def phase_startup(run: Run) -> None:
    """``import motia_state_sql`` loads none of the heavy modules; ``motia-state --help`` against
    ``python -c pass``, alternately."""
    found = heavy_imports()
    run.notes.append(
        Verdict(
            not found,
            f"import motia_state_sql pulls in none of {', '.join(HEAVY)} (sys.modules of a fresh "
            f"interpreter): {'it loaded ' + ', '.join(found) if found else 'none loaded'}",
        )
    )
    runs = run.sizes.startup_runs
    await run.judge.measure(
        [
            CommandSpec(PYTHON_PASS, [sys.executable, "-c", "pass"], runs),
            CommandSpec(CLI_HELP, [*motia_state_command(), "--help"], runs),
        ]
    )


PHASES: Final[dict[str, Callable[[Run], Awaitable[None]]]] = {
    "main": phase_main,
    "file": phase_file,
    "stored": phase_stored,
    "startup": phase_startup,
}


# -- the run -----------------------------------------------------------------------------------


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


async def run_phases(
    sizes: Sizes, rounds: int, phases: Sequence[str]
) -> tuple[Run, dict[str, dict[str, float]]]:
    """Every phase of ``phases``, then the peak-memory runs; the servers and folders are gone after."""
    folder = Path(tempfile.mkdtemp(prefix="motia-bench-"))
    prefix = f"bench:{time.time_ns()}:"
    kinds = {backend.server for backend in BACKENDS.values() if backend.server}
    memory_runs: dict[str, dict[str, float]] = {}
    try:
        with servers(kinds) as urls:
            where = Where(folder, urls, prefix)
            bench = Bench(rounds)
            run = Run(sizes, bench, Judge(bench, targets(sizes), sizes.profile_ops), where)
            node_folder = node_dir()
            if node_folder is None:
                run.notes.append(
                    Verdict(None, "the Node baselines did not run: node and npm are not installed")
                )
            else:
                run.node = await NodeProcess.start(
                    node_folder, folder / "node", urls["redis"], f"{prefix}node:"
                )
                run.info["node"] = run.node.info
            try:
                for name in phases:
                    started = time.monotonic()
                    await PHASES[name](run)
                    run.info[f"phase {name} seconds"] = round(time.monotonic() - started, 1)
                    print(f"phase {name}: {run.info[f'phase {name} seconds']}s", file=sys.stderr)
                if "main" in phases:
                    for name in NAMES:
                        count = sizes.file_ops if BACKENDS[name].slow else sizes.memory_ops
                        memory_runs[name] = memory.peak_memory(name, where, count)
            finally:
                if run.node is not None:
                    await run.node.close()
                run.info["redis keys deleted"] = await delete_keys(urls["redis"], prefix)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return run, memory_runs


def write_doc(lines: list[str]) -> None:
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    text = DOC.read_text() if DOC.exists() else f"# Benchmarks\n\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    DOC.write_text(f"{head}{start}\n" + "\n".join(lines) + f"\n{end}{tail}")


def doc_lines(
    run: Run, rows: list[str], verdicts: list[Verdict], memory_runs: dict[str, dict[str, float]]
) -> list[str]:
    where = machine()
    node = run.info.get("node")
    lines = [
        f"Run on {where['date']}: {where['platform']}, {where['cpus']} CPUs, Python {where['python']}, "
        f"SQLite {where['sqlite']}"
        + (
            f"; Node {node['node']}, @motiadev/core {node['@motiadev/core']}, @motiadev/adapter-redis-state "
            f"{node['@motiadev/adapter-redis-state']}, node-redis {node['redis']}"
            if node
            else ""
        )
        + f"; {run.info['total seconds'] / 60:.0f} minutes.",
        "",
        "```",
        *(v.line for v in verdicts),
        "```",
        "",
        "Peak memory, each backend in a fresh process (RSS counts the interpreter and the SQLite "
        "page cache; the Python heap is what tracemalloc sees; Redis keeps its data in the server):",
        "",
        *[f"- {line}" for line in memory.lines(memory_runs)],
        "",
        "![throughput and cost against store size](benchmarks.png)",
        "",
        *rows,
    ]
    profiles = [v for v in verdicts if v.profile]
    if profiles:
        lines += [
            "",
            "### Profiles of the misses",
            "",
            "Taken by the harness right after each miss was measured (pyinstrument, library frames "
            "folded; under the profiler everything runs slower); for a Node baseline, the top "
            "functions of a CPU profile of the Node process (node:inspector).",
        ]
        for v in profiles:
            lines += ["", f"**{v.text.split(':')[0]}**", "", "```", v.profile, "```"]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small counts: only checks the harness runs")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="alternated rounds per target pair")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for <mode>.json and <mode>.png")
    parser.add_argument(
        "--phase",
        action="append",
        choices=list(PHASES),
        help="run only this phase (repeatable; the docs are then left alone)",
    )
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    phases = args.phase or list(PHASES)
    started = time.monotonic()
    run, memory_runs = asyncio.run(run_phases(sizes, args.rounds, phases))
    run.info["total seconds"] = round(time.monotonic() - started, 1)
    ratio_to = baseline_of(run.judge.table)
    rows: list[Row] = run.bench.rows(ratio_to.get)
    rows.sort(key=lambda r: ORDER.index(r.backend) if r.backend in ORDER else len(ORDER))
    verdicts = [*run.notes, *run.judge.lines()]
    lines = table(rows)
    print("\n".join(lines))
    print()
    print("\n".join(memory.lines(memory_runs)))
    print()
    print("\n".join(v.line for v in verdicts))
    for v in verdicts:
        if v.profile:
            print(f"\nprofile of the miss, {v.text}\n{v.profile}")
    mode = "quick" if args.quick else "full"
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = args.out / f"{mode}.json", args.out / f"{mode}.png"
    document = results_json(
        rows,
        quick=args.quick,
        rounds=args.rounds,
        phases=phases,
        run=run.info,
        peak_memory=memory_runs,
        targets=[{"pass": v.ok, "line": v.text, "ratios": v.ratios} for v in verdicts],
        profiles={v.text: v.profile for v in verdicts if v.profile},
    )
    json_path.write_text(json.dumps(document, indent=2))
    plot(rows, png_path)
    print(f"\nresults: {json_path}, plot: {png_path}; {run.info}")
    if not args.quick and not args.phase:
        shutil.copy(png_path, ROOT / "docs" / "benchmarks.png")
        shutil.copy(json_path, ROOT / "docs" / "benchmarks.json")
        write_doc(doc_lines(run, lines, verdicts, memory_runs))


if __name__ == "__main__":
    main()
