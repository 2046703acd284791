"""The phases of a run: each opens its stores, offers their specs to the targets' ``Judge``.

``main``: every backend under every arrival pattern against raw sqlite3, diskcache, bare redis-py,
bare asyncpg and Motia's Node RedisStateAdapter; ``file``: against Motia's Node FileStateAdapter holding the
same items; ``stored``: cost against store size; ``startup``: the import and ``--help``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import diskcache
import redis.asyncio as aioredis

from motia_state_sql import FileStateAdapter, StateAdapter, open_state
from motia_state_sql.bench.runner import Bench, Measurable, Spec
from motia_state_sql.bench.workloads import ENCODED, VALUE, Op, fill, one, operation, rng, sync_op

from .backends import BACKENDS, NAMES, SIZED, Where
from .baselines import (
    HEAVY,
    BarePostgres,
    CommandSpec,
    JsonFileStore,
    RawSqlite,
    bare_redis,
    fill_cache,
    fill_redis,
    heavy_imports,
    motia_state_command,
)
from .node import MOTIA_FILE, MOTIA_REDIS, NODE_SQLITE, NodeProcess, NodeSpec, motia_file_folder
from .sizes import Sizes
from .targets import (
    CLI_HELP,
    IMPORT_CLICK,
    PG_BARE,
    PG_POOL,
    PYTHON_PASS,
    REDIS_BARE,
    REDIS_POOL,
    Judge,
    Verdict,
)

MAIN: Final = (
    *(("set", arrival) for arrival in ("x1", "workers", "gather", "semaphore", "open")),
    *(("get", arrival) for arrival in ("x1", "workers", "gather")),
    ("update", "workers"),
    ("mix", "x1"),
)


#: The order of the table: baselines, then our backends, then Node's.
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
    """Every backend under every arrival pattern, against raw sqlite3, diskcache, bare redis-py,
    bare asyncpg and Motia's Node RedisStateAdapter; get_group of several sizes."""
    sizes, count, folder = run.sizes, run.sizes.ops, run.where.folder
    raw = {level: RawSqlite(folder / f"raw-{level}.db", level.upper()) for level in ("normal", "full")}
    raw["normal"].fill("g", 0, count)
    cache = diskcache.Cache(str(folder / "diskcache-main"))
    fill_cache(cache, "g", 0, count)
    bare, pooled = bare_redis(run.where.servers["redis"], False), bare_redis(run.where.servers["redis"], True)
    prefix = f"{run.where.prefix}bare:"
    postgres = await BarePostgres.open(run.where.servers["postgres"], f"{run.where.prefix}bare")
    try:
        await fill_redis(bare, prefix, count)
        await postgres.fill("g", count)
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
        conn, pool = postgres.conn, postgres.pool
        baselines += [
            run.spec(PG_BARE, "set", "x1", _bare_pg_set(conn.execute, postgres.upsert), count),
            run.spec(PG_BARE, "get", "x1", _bare_pg_get(conn.fetchval, postgres.select, count), count),
            *(
                run.spec(PG_POOL, "set", arrival, _bare_pg_set(pool.execute, postgres.upsert), count)
                for arrival in ("workers", "gather")
            ),
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
        await postgres.close()


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


def _bare_pg_set(execute: Callable[..., Awaitable[Any]], upsert: str) -> Callable[[int], Op]:
    def make(tag: int) -> Op:
        return lambda i: execute(upsert, "g", f"s{tag}-{i}", ENCODED)

    return make


def _bare_pg_get(fetchval: Callable[..., Awaitable[Any]], select: str, count: int) -> Callable[[int], Op]:
    def make(tag: int) -> Op:
        async def op(i: int) -> Any:
            value = await fetchval(select, "g", f"k{i % count}")
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
            CommandSpec(IMPORT_CLICK, [sys.executable, "-c", "import click"], runs),
        ]
    )


PHASES: Final[dict[str, Callable[[Run], Awaitable[None]]]] = {
    "main": phase_main,
    "file": phase_file,
    "stored": phase_stored,
    "startup": phase_startup,
}
