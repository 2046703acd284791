"""The benchmark harness runs (quick mode): table, target lines, JSON results and a plot; against
a Redis server given as ``$REDIS_URL`` it deletes every key it wrote."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import redis

from benchmarks.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("memory", "sqlite-normal", "sqlite-full", "redis-native", "redis-motia", "file")
BASELINES = ("raw-sqlite3-normal", "raw-sqlite3-full", "diskcache", "redis-py bare", "json-file-store")
NODE = ("node-sqlite", "node-motia-redis", "node-motia-file")  # benchmarks/node_bench.mjs


def test_quick_benchmark_runs_and_cleans_up_redis() -> None:
    server = RedisServer()
    server.start()
    try:
        with redis.Redis.from_url(server.url) as client:
            client.set("not-ours", "kept")
        run = subprocess.run(
            [sys.executable, "-m", "benchmarks.run", "--quick"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "REDIS_URL": server.url},
        )
        with redis.Redis.from_url(server.url) as client:
            assert client.keys("*") == [b"not-ours"]  # every bench:* key is gone, nothing else
    finally:
        server.close()
    lines = run.stdout.splitlines()
    assert lines[0].startswith("| backend | workload | ops/s | p50 us | p99 us | ratio |")
    for name in (*BACKENDS, *BASELINES):
        assert any(line.startswith(f"| {name} |") for line in lines), name
    for name in BACKENDS:
        assert any(line.startswith(f"{name}: peak RSS ") and "peak Python heap" in line for line in lines)
    verdicts = [line for line in lines if line.startswith(("PASS ", "FAIL ", "n/a "))]
    targets = [line for line in verdicts if "median of 3 alternated rounds" in line]
    assert len(targets) >= 30
    assert any("vs raw sqlite3 commit-per-write" in line for line in targets)
    assert any("vs the bare redis-py command" in line for line in targets)
    for name in BACKENDS:
        assert sum(f"{name} set from" in line and "JSON file store" in line for line in targets) == 2
    if shutil.which("node") and shutil.which("npm"):
        for name in NODE:
            assert any(line.startswith(f"| {name} |") for line in lines), name
        node_targets = [line for line in targets if line.startswith(("PASS Node:", "FAIL Node:"))]
        assert len(node_targets) == 5  # set, get, Promise.all vs Redis; set, get vs the file
        assert sum("Node: SqlStateAdapter getGroup" in line for line in verdicts) == 2  # references
    results = json.loads((ROOT / "benchmarks" / "results" / "quick.json").read_text())
    assert results["quick"] is True
    assert results["run"]["redis keys deleted"] > 0
    assert all(r["ops_per_s"] > 0 and r["p99_us"] >= r["p50_us"] for r in results["results"])
    assert len(results["targets"]) == len(verdicts)
    failed = [t["line"] for t in results["targets"] if t["pass"] is False]
    assert sorted(results["profiles"]) == sorted(failed)  # every miss comes with its profile
    assert all(len(text.splitlines()) >= 3 for text in results["profiles"].values())
    png = (ROOT / "benchmarks" / "results" / "quick.png").read_bytes()
    assert png.startswith(b"\x89PNG")
