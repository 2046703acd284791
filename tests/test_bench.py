"""The benchmark harness runs (quick mode): table, target lines, JSON results and a plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("memory", "sqlite-normal", "sqlite-full", "redis-native", "redis-motia", "file")
BASELINES = ("raw-sqlite3-normal", "raw-sqlite3-full", "diskcache", "redis-py bare", "json-file-store")


def test_quick_benchmark_runs() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    lines = run.stdout.splitlines()
    assert lines[0].startswith("| backend | workload | ops/s | p50 us | p99 us | ratio |")
    for name in (*BACKENDS, *BASELINES):
        assert any(line.startswith(f"| {name} |") for line in lines), name
    for name in BACKENDS:
        assert any(line.startswith(f"peak Python heap, {name}:") for line in lines), name
    verdicts = [line for line in lines if line.startswith(("PASS", "FAIL", "n/a"))]
    assert len(verdicts) >= 30
    assert any("vs raw sqlite3 commit-per-write" in line for line in verdicts)
    assert any("vs the bare redis-py command" in line for line in verdicts)
    results = json.loads((ROOT / "benchmarks" / "results" / "quick.json").read_text())
    assert results["quick"] is True
    assert all(r["ops_per_s"] > 0 and r["p99_us"] >= r["p50_us"] for r in results["results"])
    assert len(results["targets"]) == len(verdicts)
    png = (ROOT / "benchmarks" / "results" / "quick.png").read_bytes()
    assert png.startswith(b"\x89PNG")
