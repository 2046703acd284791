"""The results of a run: the table, the JSON document and the plot.

The plot needs matplotlib, which is not a dependency of the package: ``pip install
'motia-state-sql[bench]'`` brings it (``check_plot`` says so before a run starts).
"""

from __future__ import annotations

import os
import platform
import re
import sqlite3
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

from ..errors import ConfigError
from .runner import Row, format_ratio

__all__ = ["COLUMNS", "cells", "check_plot", "machine", "plot", "results_json", "table"]


#: The table's columns.
COLUMNS: Final = ("backend", "workload", "ops/s", "p50 us", "p99 us", "ratio")


def cells(r: Row) -> list[str]:
    """A row's cells: ops/s (median of rounds), p50/p99 latency, ratio to the row's baseline."""
    ratio = f"{format_ratio(r.ratio)}x {r.baseline}" if r.ratio is not None else ""
    shown = f"{r.rate:,.0f}" if r.rate >= 10 else f"{r.rate:.2f}"
    rounds = f" ({r.rounds} rounds)" if r.rounds > 1 else ""
    return [r.backend, f"{r.workload}{rounds}", shown, f"{r.p50_us:.1f}", f"{r.p99_us:.1f}", ratio]


def table(rows: Sequence[Row]) -> list[str]:
    """The rows as a Markdown table."""
    lines = [f"| {' | '.join(COLUMNS)} |", "| --- | --- | ---: | ---: | ---: | --- |"]
    return lines + [f"| {' | '.join(cells(r))} |" for r in rows]


def machine() -> dict[str, Any]:
    """Where the run ran."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "sqlite": sqlite3.sqlite_version,
        "date": time.strftime("%Y-%m-%d"),
    }


def results_json(rows: Sequence[Row], **extra: Any) -> dict[str, Any]:
    """The JSON document of a run: the machine, every row (``ops_per_s`` included), ``extra``."""
    return {
        "machine": machine(),
        **extra,
        "results": [{**asdict(r), "ops_per_s": r.rate} for r in rows],
    }


def check_plot() -> None:
    """Raise ``ConfigError`` saying how to install matplotlib when it is missing.

    Raises:
        ConfigError: matplotlib cannot be imported.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError(
            "a plot needs matplotlib, which is not installed: pip install 'motia-state-sql[bench]'"
        ) from None


def _size(workload: str) -> tuple[str, int] | None:
    """``("set", 1000)`` for ``"set @1000"``; None for a workload without a store size."""
    found = re.fullmatch(r"(\w+) @(\d+)", workload)
    return (found[1], int(found[2])) if found else None


def plot(
    rows: Sequence[Row],
    path: Path,
    title: str = "",
    backends: Sequence[str] | None = None,
    workloads: Sequence[str] | None = None,
) -> None:
    """Draw the rows to a PNG at ``path``.

    Throughput per workload and backend (log scale) and, when the rows measure it, the cost of
    ``set``/``get`` against the number of items stored. ``backends`` and ``workloads`` keep the
    left panel to those (default: every one in the rows).

    Raises:
        ConfigError: matplotlib is not installed.
    """
    check_plot()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if backends is None or r.backend in backends]
    sized = [r for r in rows if _size(r.workload)]
    plain = [r for r in rows if not _size(r.workload) and (workloads is None or r.workload in workloads)]
    workloads = list(dict.fromkeys(r.workload for r in plain))
    backends = list(dict.fromkeys(r.backend for r in plain))
    by = {(r.backend, r.workload): r for r in rows}
    fig, axes = plt.subplots(1, 2 if sized else 1, figsize=(16 if sized else 11, 6), squeeze=False)
    left = axes[0][0]
    width = 0.8 / max(1, len(backends))
    for n, backend in enumerate(backends):
        rates = [by[(backend, w)].rate if (backend, w) in by else 0 for w in workloads]
        left.bar([i + n * width for i in range(len(workloads))], rates, width, label=backend)
    left.set_xticks([i + 0.4 - width / 2 for i in range(len(workloads))], workloads, rotation=35, ha="right")
    left.set_yscale("log")
    left.set_ylabel("ops/s (log, median of rounds)")
    left.set_title(title or "Throughput per workload")
    left.legend(fontsize=7)
    if sized:
        right = axes[0][1]
        palette = plt.get_cmap("tab10")
        series: dict[tuple[str, str], list[tuple[int, float]]] = {}
        for r in sized:
            op, size = _size(r.workload) or ("", 0)
            series.setdefault((r.backend, op), []).append((size, 1e6 / r.rate))
        for number, ((backend, op), points) in enumerate(sorted(series.items())):
            points.sort()
            right.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                "-" if op == "set" else "--",
                color=palette(number // 2 % 10),
                marker="o",
                label=f"{backend} {op}",
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
