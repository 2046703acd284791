"""``motia-state serve --stdio``, the process behind the Node adapter, driven over its pipes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from motia_state_sql import SqliteStateAdapter


class Server:
    """One real ``python -m motia_state_sql serve --stdio`` process."""

    def __init__(self, url: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "motia_state_sql", "serve", "--stdio", "--url", url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.hello = self.read()

    def send(self, request: dict[str, Any], value_text: str | None = None) -> None:
        assert self.process.stdin is not None
        line = json.dumps(request) + ("" if value_text is None else "\t" + value_text)
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        answer: dict[str, Any] = json.loads(self.process.stdout.readline())
        return answer

    def call(self, request: dict[str, Any], value_text: str | None = None) -> dict[str, Any]:
        self.send(request, value_text)
        return self.read()

    def close(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.close()  # EOF: the server closes the store and exits
        code = self.process.wait(timeout=30)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return code


def test_calls_values_errors_and_a_transaction(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    server = Server(url)
    try:
        assert server.hello["id"] == 0
        assert server.hello["ok"]["url"] == url
        # JSON.stringify(1e19) is 10000000000000000000: stored as the double JavaScript meant.
        assert server.call({"id": 1, "m": "set", "a": ["g", "k"]}, '{"n":10000000000000000000}')["id"] == 1
        assert server.call({"id": 2, "m": "get", "a": ["g", "k"]}) == {"id": 2, "ok": {"n": 1e19}}
        version = server.call({"id": 3, "m": "getItem", "a": ["g", "k"]})["ok"]["version"]
        assert isinstance(version, str)  # versions exceed 2**53: decimal text in JS
        refused = server.call({"id": 4, "m": "set", "a": ["g", "bad"]}, '{"t":"\\ud83d"}')
        assert refused["error"]["name"] == "InvalidValueError"
        flag = server.call({"id": 5, "m": "set", "a": ["g", "f", {"ifAbsent": "yes"}]}, "1")
        assert flag["error"]["name"] == "InvalidOperationError"
        # A JS number beyond 2**53 was rounded before it was sent: never compared as a version.
        rounded = server.call({"id": 10, "m": "set", "a": ["g", "k", {"ifVersion": 2**60}]}, "1")
        assert rounded["error"]["name"] == "InvalidOperationError"
        assert "decimal string" in rounded["error"]["message"]
        assert server.call({"id": 11, "m": "get", "a": ["g", "k"]})["ok"] == {"n": 1e19}
        begun = server.call({"id": 6, "m": "begin", "a": []})
        tx = begun["ok"]
        server.call({"id": 7, "m": "set", "a": ["g", "t"], "tx": tx}, "2")
        assert server.call({"id": 8, "m": "get", "a": ["g", "t"]})["ok"] is None  # not yet committed
        assert "ok" in server.call({"id": 9, "m": "commit", "a": [], "tx": tx})
        # Many requests in flight at once, each answered by its id.
        for i in range(200):
            increment = [{"type": "increment", "path": "c", "by": 1}]
            server.send({"id": 100 + i, "m": "update", "a": ["g", "n", increment]})
        answers = [server.read() for _ in range(200)]
        assert sorted(a["id"] for a in answers) == list(range(100, 300))
        assert all("ok" in a for a in answers)
    finally:
        assert server.close() == 0

    async def check() -> None:
        async with SqliteStateAdapter(tmp_path / "state.db") as state:
            assert await state.get("g", "t") == 2
            assert await state.get("g", "n") == {"c": 200}
            assert await state.get("g", "bad") is None

    asyncio.run(check())


def test_a_bad_url_is_told_in_the_first_line(tmp_path: Path) -> None:
    server = Server(f"sqlite:///{tmp_path / 'state.db'}?busy_timeout=inf")
    try:
        assert server.hello["id"] == 0
        assert server.hello["error"]["name"] == "ConfigError"
        assert "busy_timeout" in server.hello["error"]["message"]
    finally:
        server.close()
