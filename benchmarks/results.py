"""The results of a run: stdout, ``<out>/<mode>.json`` and ``.png``, and for the full run the docs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Final

from motia_state_sql.bench.report import machine, plot, results_json, table
from motia_state_sql.bench.runner import Row

from . import memory
from .backends import NAMES
from .node import MOTIA_FILE, MOTIA_REDIS, NODE_SQLITE
from .phases import MAIN, Run
from .targets import CLI_HELP, PG_BARE, PG_POOL, PYTHON_PASS, REDIS_BARE, REDIS_POOL, Verdict, baseline_of

ROOT: Final = Path(__file__).resolve().parent.parent
DOC: Final = ROOT / "docs" / "benchmarks.md"
ORDER: Final = (
    "raw-sqlite3-normal",
    "raw-sqlite3-full",
    "diskcache",
    REDIS_BARE,
    REDIS_POOL,
    PG_BARE,
    PG_POOL,
    "json-file-store",
    PYTHON_PASS,
    CLI_HELP,
    *NAMES,
    MOTIA_REDIS,
    MOTIA_FILE,
    NODE_SQLITE,
)


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


def write_results(
    run: Run, memory_runs: dict[str, dict[str, float]], out: Path, quick: bool, docs: bool
) -> None:
    """Print the table, peak memory, the target lines and the profiles.

    Writes the JSON and the plot into ``out``; with ``docs``, also the results part of
    docs/benchmarks.md, docs/benchmarks.png and docs/benchmarks.json.
    """
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
    mode = "quick" if quick else "full"
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / f"{mode}.json", out / f"{mode}.png"
    document = results_json(
        rows,
        quick=quick,
        rounds=run.bench.rounds,
        run=run.info,
        peak_memory=memory_runs,
        targets=[{"pass": v.ok, "line": v.text, "ratios": v.ratios} for v in verdicts],
        profiles={v.text: v.profile for v in verdicts if v.profile},
    )
    json_path.write_text(json.dumps(document, indent=2))
    plot(
        rows,
        png_path,
        backends=[
            *NAMES,
            "raw-sqlite3-normal",
            "raw-sqlite3-full",
            "diskcache",
            REDIS_BARE,
            REDIS_POOL,
            MOTIA_REDIS,
        ],
        workloads=[
            *(run.sizes.workload(op, arrival) for op, arrival in MAIN),
            "set Promise.all",
            "get Promise.all",
        ],
    )
    print(f"\nresults: {json_path}, plot: {png_path}; {run.info}")
    if docs:
        shutil.copy(png_path, ROOT / "docs" / "benchmarks.png")
        shutil.copy(json_path, ROOT / "docs" / "benchmarks.json")
        write_doc(doc_lines(run, lines, verdicts, memory_runs))
