"""The main job (Motia's order workflow on the default SQLite file, run twice) and the README's code."""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
import redis.asyncio as aioredis

from motia_state_sql import SqliteStateAdapter

ROOT = Path(__file__).resolve().parent.parent


def test_order_workflow_keeps_state_between_runs(tmp_path: Path) -> None:
    totals = []
    for _ in range(2):
        run = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "order_workflow.py")],
            cwd=tmp_path,
            check=True,
            capture_output=True,
            text=True,
        )
        report = re.search(r"DailyReport +\{'total': (\d+), 'pending': (\d+), 'paid': (\d+)\}", run.stderr)
        assert report is not None, run.stderr
        totals.append(tuple(map(int, report.groups())))
        assert "ProcessPayment" in run.stderr
    assert totals == [(3, 1, 2), (6, 2, 4)]
    assert (tmp_path / ".motia" / "motia.state.db").is_file()


# -- every Python code block of the README runs -------------------------------------------------

README = ROOT / "README.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _readme_blocks() -> list[str]:
    return _BLOCK.findall(README.read_text(encoding="utf-8"))


def test_the_readme_has_python_blocks() -> None:
    assert len(_readme_blocks()) >= 3


@pytest.mark.parametrize("number", range(len(_readme_blocks())))
def test_readme_block_runs(
    number: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str, postgres_url: str
) -> None:
    """Runs README block ``number`` as a user pasting it would, in a fresh folder.

    A block with top-level ``await`` (a snippet of an async function) gets what such snippets
    assume: ``state``, a fresh SQLite store, and the names they use (``order_id``, a redis-py
    client ``my_redis_client``, an asyncpg pool ``my_asyncpg_pool`` on the session's PostgreSQL,
    a ``transfer`` function). The README's Redis address is the
    throwaway server's.
    """
    source = _readme_blocks()[number]
    where = urlsplit(redis_url).netloc
    source = source.replace("127.0.0.1:6379", where)
    monkeypatch.chdir(tmp_path)
    code = compile(source, f"README.md block {number + 1}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    if not code.co_flags & inspect.CO_COROUTINE:
        exec(code, {"__name__": "__main__"})  # a whole program: it runs its own event loop
        return

    async def snippet() -> None:
        client = aioredis.Redis.from_url(redis_url)
        pool = await asyncpg.create_pool(postgres_url, min_size=1, max_size=2)

        async def transfer(tx: Any) -> None:
            await tx.set("readme", f"transfer-{uuid.uuid4().hex}", 1)

        try:
            async with SqliteStateAdapter(tmp_path / "state.db") as state:
                names: dict[str, Any] = {"state": state, "order_id": "order-1", "transfer": transfer}
                names["my_redis_client"] = client
                names["my_asyncpg_pool"] = pool
                await eval(code, names)
                await names["state"].close()  # the last adapter the block bound to `state`
        finally:
            await client.aclose()
            await pool.close()

    asyncio.run(snippet())
