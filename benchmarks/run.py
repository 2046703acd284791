"""The benchmark harness: every backend against baselines measured in the same run, alternately.

``make bench`` runs the full set (minutes); ``make bench-quick`` runs small counts in seconds and
only shows that the harness works. Every workload is seeded and has a discarded warm-up; every
target is a ratio against a baseline from the same run (``benchmarks/targets.py``), measured in
alternated rounds, never an absolute number; a target that misses is profiled at once.

The modules: ``sizes`` (the counts), ``backends`` (one entry per backend), ``baselines`` (raw
sqlite3, bare redis-py, bare asyncpg, diskcache, the JSON file stand-in, start-up), ``node`` (Motia's own Node
adapters, in a Node process the harness alternates with its own stores), ``targets`` (the table
of targets and their verdicts), ``phases`` (what each phase opens and measures), ``memory`` (peak
memory, a process per backend), ``results`` (stdout, JSON, plot, docs); the runner, the arrival
patterns and the report are the package's (``motia_state_sql.bench``), shared with ``motia-state
bench``. This module starts the servers and the Node process, runs the phases and cleans up.

Output: the table (ops/s, p50/p99 latency, ratio to the baseline of the row's first target),
peak memory, PASS/FAIL target lines and the profiles of the misses on stdout;
``<out>/<mode>.json`` and ``<out>/<mode>.png`` (``--out``, default ``benchmarks/results``); the full
run also rewrites the results part of ``docs/benchmarks.md``, ``docs/benchmarks.png`` and
``docs/benchmarks.json``. With ``$REDIS_URL`` set the Redis rows use that server, and every key
the run wrote there (all under one ``bench:<time>:`` prefix) is deleted at the end; with
``$POSTGRES_URL``, likewise every schema the run created there (named ``bench:<time>:...``) is
dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import asyncpg
import redis.asyncio as aioredis

from motia_state_sql.bench.runner import Bench
from motia_state_sql.postgres.migrate import quote

from . import memory
from .backends import BACKENDS, NAMES, Where, servers
from .node import NodeProcess, node_dir
from .phases import PHASES, Run
from .results import write_results
from .sizes import FULL, QUICK, Sizes
from .targets import Judge, Verdict, targets

RESULTS: Final = Path(__file__).resolve().parent / "results"


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


async def drop_schemas(postgres_url: str, prefix: str) -> int:
    """Drop every schema named ``prefix...`` (this run's stores and baselines); returns how many."""
    conn = await asyncpg.connect(postgres_url)
    try:
        names = [
            r[0]
            for r in await conn.fetch(
                "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)", prefix
            )
        ]
        for name in names:
            await conn.execute(f"DROP SCHEMA {quote(name)} CASCADE")
    finally:
        await conn.close()
    return len(names)


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
                run.info["postgres schemas dropped"] = await drop_schemas(urls["postgres"], prefix)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return run, memory_runs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small counts: only checks the harness runs")
    parser.add_argument(
        "--rounds",
        type=int,
        help=f"alternated rounds per target pair (default {FULL.rounds}, quick {QUICK.rounds})",
    )
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
    run, memory_runs = asyncio.run(run_phases(sizes, args.rounds or sizes.rounds, phases))
    run.info["phases"] = phases
    run.info["total seconds"] = round(time.monotonic() - started, 1)
    write_results(run, memory_runs, args.out, args.quick, docs=not args.quick and not args.phase)


if __name__ == "__main__":
    main()
