"""Interop: Motia's own Node adapter (@motiadev/adapter-redis-state) and ours share state.

The npm package is installed by this test's setup (into .venv/node-interop) when node and npm
are on the machine; without them these tests are skipped, as the README says.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from motia_state_sql import RedisStateAdapter

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "@motiadev/adapter-redis-state@0.17.14-beta.196"
SCRIPT = Path(__file__).resolve().parent / "node" / "interop.mjs"


@pytest.fixture(scope="session")
def node_dir() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are not installed: the Node interop tests need them (see README)")
    target = ROOT / ".venv" / "node-interop"
    stamp = target / "installed.txt"
    if not stamp.exists() or stamp.read_text() != PACKAGE:
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--prefix", str(target), "--no-audit", "--no-fund", "--loglevel=error", PACKAGE],
            check=True,
            capture_output=True,
            timeout=300,
        )
        stamp.write_text(PACKAGE)
    shutil.copy(SCRIPT, target / SCRIPT.name)
    return target


def node(folder: Path, url: str, prefix: str, command: str, payload: Any) -> Any:
    run = subprocess.run(
        ["node", str(folder / SCRIPT.name), url, prefix, command, json.dumps(payload)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(run.stdout.splitlines()[-1])


ITEMS: list[tuple[str, str, Any]] = [
    ("orders", "order:1", {"id": "order:1", "items": [], "paid": False, "total": 9.5, "meta": {}}),
    ("orders", "order:2", {"id": "order:2", "note": "naïve café ☕", "qty": 0}),
    ("orders", "ключ", "text value"),
    ("ünïcode", "k", [1, "two", None, True]),
    ("empty", "k", ""),
]


def _canon(values: list[Any]) -> list[str]:
    return sorted(json.dumps(v, sort_keys=True) for v in values)


async def test_node_writes_python_reads(node_dir: Path, redis_url: str) -> None:
    prefix = f"interop:{uuid.uuid4().hex[:8]}:"
    node(node_dir, redis_url, prefix, "write", ITEMS)
    async with RedisStateAdapter(redis_url, key_prefix=prefix, layout="motia") as store:
        for group, key, value in ITEMS:
            assert await store.get(group, key) == value
        assert await store.keys("orders") == ["order:1", "order:2", "ключ"]
        assert await store.get_group("orders") == [v for g, _, v in sorted(ITEMS) if g == "orders"]
        assert await store.list_groups() == sorted({g for g, _, _ in ITEMS})
        found = await store.items("orders", [{"valueKey": "paid", "operation": "eq", "value": "false"}])
        assert [i.key for i in found] == ["order:1"]
        assert await store.delete("orders", "order:2") == ITEMS[1][2]
        await store.update("orders", "order:1", [{"type": "merge", "value": {"paid": True}}])
    seen = node(node_dir, redis_url, prefix, "read", ["orders"])["orders"]
    assert seen["keys"] == ["order:1", "ключ"]
    assert seen["items"]["order:1"] == {**ITEMS[0][2], "paid": True}
    node(node_dir, redis_url, prefix, "clear", ["orders", "ünïcode", "empty"])


async def test_python_writes_node_reads(node_dir: Path, redis_url: str) -> None:
    prefix = f"interop:{uuid.uuid4().hex[:8]}:"
    async with RedisStateAdapter(redis_url, key_prefix=prefix, layout="motia") as store:
        for group, key, value in ITEMS:
            await store.set(group, key, value)
        groups = sorted({g for g, _, _ in ITEMS})
        seen = node(node_dir, redis_url, prefix, "read", groups)
        for group in groups:
            mine = {k: v for g, k, v in ITEMS if g == group}
            assert seen[group]["items"] == mine
            assert seen[group]["keys"] == sorted(mine)
            assert _canon(seen[group]["values"]) == _canon(list(mine.values()))
        assert node(node_dir, redis_url, prefix, "delete", [["orders", "order:1"]]) == [ITEMS[0][2]]
        assert await store.get("orders", "order:1") is None
        node(node_dir, redis_url, prefix, "clear", ["orders"])
        assert await store.get_group("orders") == []
        assert await store.list_groups() == ["empty", "ünïcode"]
        for group in groups:
            await store.clear(group)
    assert node(node_dir, redis_url, prefix, "read", ["empty"]) == {
        "empty": {"values": [], "keys": [], "items": {}}
    }
