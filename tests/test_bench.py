"""The benchmark harness runs (quick mode): table, target lines and a JSON results file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmark_runs() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    lines = run.stdout.splitlines()
    assert lines[0].split()[:2] == ["backend", "workload"]
    for backend in (
        "memory",
        "sqlite-normal",
        "sqlite-full",
        "file",
        "raw-sqlite3-normal",
        "json-file-store",
    ):
        assert any(line.startswith(backend) for line in lines), backend
    targets = [line for line in lines if line.startswith(("PASS", "FAIL"))]
    assert len(targets) == 7
    results = json.loads((ROOT / "benchmarks" / "results" / "quick.json").read_text())
    assert results["quick"] is True
    assert all(r["ops_per_s"] > 0 for r in results["results"])
