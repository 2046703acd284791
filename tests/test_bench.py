"""The benchmark harness (quick mode, into a temporary folder) and ``motia-state bench``.

The harness: its table, every target line of its table of targets, JSON results and a plot,
nothing written to ``benchmarks/results`` or ``docs``, every key it wrote to a Redis server
given as ``$REDIS_URL`` deleted and every schema it made on a PostgreSQL server given as
``$POSTGRES_URL`` dropped. ``motia-state bench``: quick counts on SQLite, Memory and a
throwaway Redis, the refusal of a store that holds items, the cleanup, ``--json`` and ``--plot``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result

from benchmarks.backends import NAMES
from benchmarks.node import MOTIA_FILE, MOTIA_REDIS, NODE_SQLITE
from benchmarks.postgres_server import throwaway_server
from benchmarks.redis_server import RedisServer, free_port
from benchmarks.results import ORDER
from benchmarks.run import RESULTS
from benchmarks.sizes import QUICK
from benchmarks.targets import targets
from motia_state_sql import open_state
from motia_state_sql.bench.stores import DEFAULT_GROUP, DEFAULT_WORKLOADS
from motia_state_sql.cli import main

ROOT = Path(__file__).resolve().parent.parent
NODE_ROWS = (MOTIA_REDIS, MOTIA_FILE, NODE_SQLITE)


def _snapshot(folder: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in folder.rglob("*")} if folder.exists() else {}


def test_quick_benchmark_runs_into_its_folder_and_cleans_up_the_servers(tmp_path: Path) -> None:
    untouched = {folder: _snapshot(folder) for folder in (RESULTS, ROOT / "docs")}
    server = RedisServer()
    server.start()
    try:
        with redis.Redis.from_url(server.url) as client, throwaway_server() as postgres:
            client.set("not-ours", "kept")
            postgres.psql('CREATE SCHEMA "bench-not-ours"')
            schemas = "SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace"
            before = postgres.psql(schemas)
            run = subprocess.run(
                [sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(tmp_path)],
                cwd=ROOT,
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ, "REDIS_URL": server.url, "POSTGRES_URL": postgres.url},
                timeout=240,
            )
            assert client.keys("*") == [b"not-ours"]  # every bench:* key is gone, nothing else
            assert postgres.psql(schemas) == before  # every bench:* schema is gone, nothing else
    finally:
        server.close()
    assert {folder: _snapshot(folder) for folder in untouched} == untouched
    lines = run.stdout.splitlines()
    assert lines[0] == "| backend | workload | ops/s | p50 us | p99 us | ratio |"
    node = bool(shutil.which("node") and shutil.which("npm"))
    for name in ORDER:
        if name in NODE_ROWS and not node:
            continue
        assert any(line.startswith(f"| {name} |") for line in lines), name
    for name in NAMES:
        for workload in (
            "set x1",
            "set x64",
            "set gather",
            "set sem64 gather",
            f"set open {QUICK.rate:,.0f}/s",
        ):
            assert any(line.startswith(f"| {name} | {workload}") for line in lines), (name, workload)
        assert any(line.startswith(f"{name}: peak RSS ") and "peak Python heap" in line for line in lines)
    verdicts = [line for line in lines if line.startswith(("PASS ", "FAIL ", "n/a "))]
    table = targets(QUICK)
    for target in table:
        found = [line for line in verdicts if f" {target.text}: " in line]
        assert len(found) == 1, target.text
        measured = f"median of {QUICK.rounds} alternated rounds" in found[0]
        assert measured or (not node and target.baseline[0] in NODE_ROWS), found[0]
        assert found[0].startswith("n/a ") == (target.want is None or not measured), found[0]
    assert any(
        line.startswith(("PASS import motia_state_sql", "FAIL import motia_state_sql")) for line in verdicts
    )
    results = json.loads((tmp_path / "quick.json").read_text())
    assert results["quick"] is True
    assert results["run"]["redis keys deleted"] > 0
    assert results["run"]["postgres schemas dropped"] > 0
    assert all(r["ops_per_s"] > 0 and r["p99_us"] >= r["p50_us"] for r in results["results"])
    assert len(results["targets"]) == len(verdicts)
    failed = [t["line"] for t in results["targets"] if t["pass"] is False]
    assert sorted(results["profiles"]) == sorted(failed)  # every miss comes with its profile
    assert all(len(text.splitlines()) >= 3 for text in results["profiles"].values())
    assert (tmp_path / "quick.png").read_bytes().startswith(b"\x89PNG")


# -- motia-state bench -----------------------------------------------------------------------


def _cli(*args: str) -> Result:
    # Click 8.1 mixes stderr into stdout unless told not to; 8.2+ always keeps them apart.
    kwargs: dict[str, Any] = (
        {"mix_stderr": False} if "mix_stderr" in inspect.signature(CliRunner).parameters else {}
    )
    return CliRunner(**kwargs).invoke(main, list(args), catch_exceptions=False)


def _groups(url: str) -> list[str]:
    async def read() -> list[str]:
        async with open_state(url) as store:
            return await store.list_groups()

    return asyncio.run(read())


def _put(url: str, group: str, key: str) -> None:
    async def write() -> None:
        async with open_state(url) as store:
            await store.set(group, key, {"kept": True})

    asyncio.run(write())


def test_bench_command_runs_every_url_alternately_and_cleans_up(tmp_path: Path, redis_url: str) -> None:
    prefix = f"cli-bench-{uuid.uuid4().hex}:"
    urls = [f"sqlite:///{tmp_path / 'a.db'}", "memory://", f"{redis_url}?key_prefix={prefix}"]
    out = tmp_path / "results.json"
    result = _cli("bench", *urls, "--ops", "30", "--rounds", "2", "--rate", "5000", "--json", str(out))
    assert result.exit_code == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert len(rows) == len(DEFAULT_WORKLOADS) * len(urls)
    assert {row[0] for row in rows} == set(urls)
    for row in rows:
        assert row[1].endswith("(2 rounds)")
        assert float(row[2].replace(",", "")) > 0
        assert (row[5] == "") == (row[0] == urls[0])  # the first URL is the baseline
        assert row[5] == "" or row[5].endswith(f"x {urls[0]} {row[1].removesuffix(' (2 rounds)')}")
    assert _groups(urls[0]) == []  # everything written was cleared
    with redis.Redis.from_url(redis_url) as client:
        assert client.keys(f"{prefix}*") == []
    document = json.loads(out.read_text())
    assert document["urls"] == urls
    assert document["options"]["ops"] == 30
    assert len(document["results"]) == len(rows)
    assert all(r["ops_per_s"] > 0 and r["rounds"] == 2 and len(r["rates"]) == 2 for r in document["results"])


def test_bench_refuses_a_store_that_holds_items_and_writes_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    _put(url, "orders", "o-1")
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    for args in ([url], [empty, url]):
        result = _cli("bench", *args, "--ops", "5", "--rounds", "1")
        assert result.exit_code == 2
        assert "already holds items" in result.stderr
        assert "--force" in result.stderr
    assert _groups(url) == ["orders"]
    assert _groups(empty) == []  # checked before anything was written anywhere
    result = _cli("bench", url, "--force", "--ops", "5")
    assert result.exit_code == 2
    assert "--group" in result.stderr
    result = _cli("bench", url, "--force", "--group", "orders", "--ops", "5")
    assert result.exit_code == 2
    assert "group 'orders' already holds items" in result.stderr
    assert _groups(url) == ["orders"]


def test_bench_with_force_writes_only_its_group_and_clears_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    _put(url, "orders", "o-1")
    png = tmp_path / "bench.png"
    result = _cli(
        "bench", url, "--force", "--group", "bench-only", "--workload", "set/gather", "--workload", "mix/x1",
        "--ops", "20", "--rounds", "1", "--plot", str(png),
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert [line.split("\t")[1] for line in result.stdout.splitlines()] == ["set gather", "mix x1"]
    assert _groups(url) == ["orders"]
    assert png.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["memory://", "--workload", "set/never"], "unknown workload 'set/never'"),
        (["memory://", "memory://"], "a URL is given twice"),
        (["nosuch://x"], "nosuch"),
    ],
)
def test_bench_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = _cli("bench", *args, "--ops", "5", "--rounds", "1")
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert DEFAULT_GROUP not in result.stdout


def test_bench_plot_without_matplotlib_says_how_to_install_it(tmp_path: Path) -> None:
    # sys.modules[name] = None makes `import name` raise ImportError, as if it were not installed.
    code = "import sys; sys.modules['matplotlib'] = None; from motia_state_sql.cli import main; main()"
    args = [
        "bench",
        "memory://",
        "--ops",
        "5",
        "--plot",
        str(tmp_path / "p.png"),
        "--json",
        str(tmp_path / "r.json"),
    ]
    run = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert run.stderr.strip() == (
        "Error: a plot needs matplotlib, which is not installed: pip install 'motia-state-sql[bench]'"
    )
    assert run.stdout == ""
    assert list(tmp_path.iterdir()) == []  # stopped before measuring anything


def test_bench_clears_what_it_wrote_when_a_store_fails_midway(tmp_path: Path) -> None:
    first = f"sqlite:///{tmp_path / 'first.db'}"
    # Motia's JSON file cannot hold a group holding ":": the second store refuses its first write,
    # after the first store was filled.
    result = _cli(
        "bench", first, f"file://{tmp_path / 'motia'}", "--group", "a:b", "--ops", "5", "--rounds", "1"
    )
    assert result.exit_code == 2, result.stderr
    assert "'a:b'" in result.stderr
    assert "Traceback" not in result.stderr
    assert _groups(first) == []


def test_bench_on_a_server_that_does_not_answer_is_exit_3_without_the_password() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0?connect_timeout=0.5&socket_timeout=0.5"
    result = _cli("bench", url, "--ops", "5", "--rounds", "1")
    assert result.exit_code == 3, result.stderr
    assert result.stderr.startswith("Error: ")
    assert "hunter2" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
