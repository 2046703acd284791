"""The targets: one declarative table, used for the PASS/FAIL lines and the table's ratio column.

Each target is a ratio of two rows measured in the same run, alternately (``Bench.pair``): a
candidate (ours) and a baseline. ``want=None`` makes a reference line: its ratio is printed, with
no verdict. A phase of the run opens some stores, offers their specs to ``measure``, which pairs
every target whose two rows are both offered; a target that misses is profiled at once, while its
stores are still open (each baseline once).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from motia_state_sql.bench.runner import Bench, Key, Measurable, Spec, format_ratio

from .baselines import CommandSpec
from .node import MOTIA_FILE, MOTIA_REDIS, NODE_SQLITE, NodeSpec
from .sizes import Sizes

#: The bare redis-py baselines: one command per call, and the same through a pool under a gather.
REDIS_BARE: Final = "redis-py bare"
REDIS_POOL: Final = "redis-py pool"
#: The bare asyncpg baselines: one statement per call on one connection, and through a pool of
#: PostgresStateAdapter's default size under workers and a gather.
PG_BARE: Final = "asyncpg bare"
PG_POOL: Final = "asyncpg pool"
#: The start-up rows: ``python -c pass``, ``motia-state --help``, and the floor of any click
#: command line (importing click itself), as a reference.
PYTHON_PASS: Final = "python -c pass"
CLI_HELP: Final = "motia-state --help"
IMPORT_CLICK: Final = "python -c 'import click'"
#: The concurrent arrival patterns of the SQLite targets, with how the lines name them.
PATTERNS: Final = {
    "workers": "64 worker coroutines",
    "gather": "a gather of {ops:,} tasks",
    "semaphore": "Semaphore(64) + gather of {ops:,} tasks",
    "open": "an open loop at {rate:,.0f}/s",
}


@dataclass(frozen=True)
class Target:
    """``candidate`` / ``baseline`` >= ``want`` (> with ``above``); ``want=None``: a reference."""

    text: str
    candidate: Key
    baseline: Key
    want: float | None
    above: bool = False


def targets(s: Sizes) -> list[Target]:
    """Every target and reference line of a run with sizes ``s``."""
    w = s.workload
    file_items = s.motia_file_items[-1]
    small, large = s.stored[0], s.stored[-1]
    table: list[Target] = []
    for level, want in (("normal", 1.5), ("full", 5.0)):
        for arrival, how in PATTERNS.items():
            table.append(
                Target(
                    f"SQLite {level.upper()} set under {how.format(ops=s.ops, rate=s.rate)} vs raw sqlite3 "
                    "commit-per-write under the same",
                    (f"sqlite-{level}", w("set", arrival)),
                    (f"raw-sqlite3-{level}", w("set", arrival)),
                    want,
                )
            )
        table.append(
            Target(
                f"SQLite {level.upper()} set from one coroutine vs raw sqlite3 commit-per-write",
                (f"sqlite-{level}", w("set", "x1")),
                (f"raw-sqlite3-{level}", w("set", "x1")),
                0.75,
            )
        )
    table += [
        Target(
            "SQLite get from one coroutine vs raw sqlite3 reads",
            ("sqlite-normal", w("get", "x1")),
            ("raw-sqlite3-normal", w("get", "x1")),
            0.9,
        ),
        Target(
            "SQLite get vs diskcache get",
            ("sqlite-normal", w("get", "x1")),
            ("diskcache", w("get", "x1")),
            1.0,
            True,
        ),
        *(
            Target(
                f"SQLite set vs diskcache set ({w('set', arrival)})",
                ("sqlite-normal", w("set", arrival)),
                ("diskcache", w("set", "x1")),
                1.0,
                True,
            )
            for arrival in ("x1", "workers")
        ),
    ]
    for layout in ("native", "motia"):
        name = f"redis-{layout}"
        for op in ("set", "get"):
            table += [
                Target(
                    f"Redis {layout} gather of {s.ops:,} {op}s vs Motia's Node RedisStateAdapter "
                    f"Promise.all of {s.ops:,} on the same server",
                    (name, w(op, "gather")),
                    (MOTIA_REDIS, f"{op} Promise.all"),
                    0.5,
                ),
                Target(
                    f"Redis {layout} gather of {s.ops:,} {op}s vs bare redis-py {op.upper()} through a pool "
                    "under the same gather",
                    (name, w(op, "gather")),
                    (REDIS_POOL, w(op, "gather")),
                    4.0,
                ),
                Target(
                    f"Redis {layout} {op} from one coroutine vs the bare redis-py command",
                    (name, w(op, "x1")),
                    (REDIS_BARE, w(op, "x1")),
                    1.0 if layout == "native" else None,
                ),
            ]
    table += [
        Target(
            "PostgreSQL set from one coroutine vs a bare asyncpg INSERT ... ON CONFLICT per call",
            ("postgres", w("set", "x1")),
            (PG_BARE, w("set", "x1")),
            0.8,
        ),
        *(
            Target(
                f"PostgreSQL set under {PATTERNS[arrival].format(ops=s.ops)} vs bare asyncpg through a pool "
                "of the same size under the same",
                ("postgres", w("set", arrival)),
                (PG_POOL, w("set", arrival)),
                1.5,
            )
            for arrival in ("workers", "gather")
        ),
        Target(
            "PostgreSQL get from one coroutine vs a bare asyncpg SELECT",
            ("postgres", w("get", "x1")),
            (PG_BARE, w("get", "x1")),
            0.8,
        ),
    ]
    for items in s.motia_file_items:
        workload = f"set x1 @{items}"
        for name in ("sqlite-normal", "memory", "redis-native", "sqlite-full", "redis-motia", "file"):
            counted = items == file_items and name in ("sqlite-normal", "memory", "redis-native")
            table.append(
                Target(
                    f"{name} set from one coroutine vs Motia's Node FileStateAdapter, both holding "
                    f"{items:,} items",
                    (name, workload),
                    (MOTIA_FILE, workload),
                    100.0 if counted else None,
                )
            )
        table.append(
            Target(
                f"the Python stand-in for Motia's JSON file vs Motia's Node FileStateAdapter, both holding "
                f"{items:,} items",
                ("json-file-store", workload),
                (MOTIA_FILE, workload),
                None,
            )
        )
    # From Node: our SqlStateAdapter (SQLite, through its Python serve process) against Motia's own.
    for op in ("set", "get"):
        table.append(
            Target(
                f"Node: SqlStateAdapter {op} from one caller vs Motia RedisStateAdapter",
                (NODE_SQLITE, f"{op} x1"),
                (MOTIA_REDIS, f"{op} x1"),
                0.8,
            )
        )
    table.append(
        Target(
            f"Node: SqlStateAdapter Promise.all of {s.ops:,} sets vs Motia RedisStateAdapter",
            (NODE_SQLITE, "set Promise.all"),
            (MOTIA_REDIS, "set Promise.all"),
            0.5,
        )
    )
    table.append(
        Target(
            f"Node: SqlStateAdapter getGroup of {s.ops:,} items vs Motia RedisStateAdapter",
            (NODE_SQLITE, f"getGroup {s.ops}"),
            (MOTIA_REDIS, f"getGroup {s.ops}"),
            None,
        )
    )
    for items in s.motia_file_items:
        for op in ("set", "get"):
            table.append(
                Target(
                    f"Node: SqlStateAdapter {op} from one caller vs Motia FileStateAdapter, both holding "
                    f"{items:,} items",
                    (NODE_SQLITE, f"{op} x1 @{items}"),
                    (MOTIA_FILE, f"{op} x1 @{items}"),
                    100.0,
                )
            )
        table.append(
            Target(
                f"Node: SqlStateAdapter getGroup of {items:,} items vs Motia FileStateAdapter",
                (NODE_SQLITE, f"getGroup {items}"),
                (MOTIA_FILE, f"getGroup {items}"),
                None,
            )
        )
    table += [
        Target(
            "motia-state --help within 2x of python -c pass (start-up, measured alternately)",
            (CLI_HELP, "run"),
            (PYTHON_PASS, "run"),
            0.5,
        ),
        Target(
            "import click (the floor of a click command line) vs python -c pass",
            (IMPORT_CLICK, "run"),
            (PYTHON_PASS, "run"),
            None,
        ),
    ]
    for size in s.stored:
        table.append(
            Target(
                f"SQLite set vs diskcache set (set @{size})",
                ("sqlite-normal", f"set @{size}"),
                ("diskcache", f"set @{size}"),
                1.0,
                True,
            )
        )
    for name in ("memory", "sqlite-normal", "sqlite-full", "redis-native", "redis-motia"):
        for op in ("set", "get"):
            table.append(
                Target(
                    f"{name} {op} cost with {large:,} items within 1.5x of {small:,}",
                    (name, f"{op} @{large}"),
                    (name, f"{op} @{small}"),
                    1 / 1.5,
                )
            )
        if name != "redis-motia":  # Motia's layout can only SCAN for a group's keys
            table.append(
                Target(
                    f"{name} get_group of 10 items unchanged with {large:,} items in another group",
                    (name, f"get_group 10 @{large}"),
                    (name, f"get_group 10 @{small}"),
                    1 / 1.5,
                )
            )
    for op in ("set", "get"):
        table.append(
            Target(
                f"raw sqlite3 {op} cost with {large:,} items vs {small:,} (the floor's own growth "
                "with the store)",
                ("raw-sqlite3-normal", f"{op} @{large}"),
                ("raw-sqlite3-normal", f"{op} @{small}"),
                None,
            )
        )
    return table


def baseline_of(table: Sequence[Target]) -> Mapping[Key, Key]:
    """The table's ratio column: each candidate row's baseline (its first target's)."""
    found: dict[Key, Key] = {}
    for target in table:
        found.setdefault(target.candidate, target.baseline)
    return found


@dataclass
class Verdict:
    """A target's line: PASS, FAIL, or n/a (a reference, or not measured)."""

    ok: bool | None
    text: str
    ratios: list[float] = field(default_factory=list)
    profile: str = ""

    @property
    def line(self) -> str:
        return f"{'n/a ' if self.ok is None else 'PASS' if self.ok else 'FAIL'} {self.text}"


def judge(target: Target, ratios: list[float]) -> Verdict:
    """The verdict on ``target`` from its per-round ratios (none: not measured)."""
    if not ratios:
        return Verdict(None, f"{target.text}: not measured in this run")
    a, b = target.candidate, target.baseline
    value = statistics.median(ratios)
    rounds = ", ".join(map(format_ratio, ratios))
    sides = f"{a[0]} {a[1]} / {b[0]} {b[1]}"
    if target.want is None:
        text = f"reference, not a target: {target.text}: {format_ratio(value)}x (median of {len(ratios)} "
        return Verdict(None, f"{text}alternated rounds: {rounds}; {sides})", ratios)
    ok = value > target.want if target.above else value >= target.want
    bound = f"{'>' if target.above else '>='} {target.want:.3g}x"
    return Verdict(
        ok,
        f"{target.text}: {format_ratio(value)}x (median of {len(ratios)} alternated rounds: {rounds}; "
        f"{sides}, target {bound})",
        ratios,
    )


async def profile(spec: Measurable, ops: int, tag: int) -> str:
    """A profile of ``spec`` running ``ops`` operations.

    A pyinstrument call tree for Python (library frames folded), a CPU profile for the Node
    process, the imports of a command.
    """
    count = min(spec.count, ops)
    if isinstance(spec, NodeSpec | CommandSpec):
        return await spec.profile(count)
    if not isinstance(spec, Spec):
        return f"{spec.key[0]} {spec.key[1]}: not profiled"
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0002, async_mode="disabled")
    profiler.start()
    try:
        seconds, _ = await spec.measure(tag, 0, count)
    finally:
        profiler.stop()
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    lines = [line for line in text.splitlines() if line.strip()]
    start = next((n for n, line in enumerate(lines) if line.startswith("Profile at")), -1) + 1
    head = f"{spec.backend} {spec.workload}: {count} ops in {seconds:.2f}s under the profiler"
    return "\n".join([head, *lines[start : start + 32]])


class Judge:
    """Measures the targets' pairs as their specs are offered, and keeps the verdicts."""

    def __init__(self, bench: Bench, table: Sequence[Target], profile_ops: int) -> None:
        self.bench = bench
        self.table = list(table)
        self.profile_ops = profile_ops
        self.verdicts: dict[Target, Verdict] = {}
        self._profiled: dict[Key, str] = {}

    async def measure(self, specs: Sequence[Measurable]) -> None:
        """Pair every target whose two rows are in ``specs``; then measure the rest once."""
        by = {spec.key: spec for spec in specs}
        for target in self.table:
            if target in self.verdicts or target.candidate not in by or target.baseline not in by:
                continue
            a, b = by[target.candidate], by[target.baseline]
            verdict = judge(target, await self.bench.pair(a, b))
            if verdict.ok is False:
                trees = [await profile(a, self.profile_ops, self.bench.tag())]
                if b.key in self._profiled:
                    trees.append(
                        f"{b.key[0]} {b.key[1]}: profiled above, at the miss of {self._profiled[b.key]!r}"
                    )
                else:
                    self._profiled[b.key] = target.text
                    trees.append(await profile(b, self.profile_ops, self.bench.tag()))
                verdict.profile = "\n\n".join(trees)
            self.verdicts[target] = verdict
        for spec in specs:
            await self.bench.ensure(spec)

    def lines(self) -> list[Verdict]:
        """Every target's verdict, in the table's order (those never measured say so)."""
        return [self.verdicts.get(target) or judge(target, []) for target in self.table]
