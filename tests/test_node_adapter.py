"""The Node adapter's own tests (``node/test/*.test.js``, Node's built-in runner), run by pytest.

They drive ``SqlStateAdapter`` against this checkout's ``motia_state_sql`` served by this very
interpreter, over SQLite files, the session's Redis and its PostgreSQL cluster, so ``make test``
runs them too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODE_PACKAGE = ROOT / "node"


def test_node_adapter_contract(redis_url: str, postgres_url: str) -> None:
    tests = (NODE_PACKAGE / "test").glob("*.test.js")
    files = sorted(str(path.relative_to(NODE_PACKAGE)) for path in tests)
    assert files, "no node/test/*.test.js found"
    _node_test(files, redis_url, postgres_url, "sqlite,redis")


def test_node_adapter_over_postgres(redis_url: str, postgres_url: str) -> None:
    """``SqlStateAdapter({ url: 'postgresql://...' })``: the whole contract file over PostgreSQL."""
    _node_test(["test/contract.test.js"], redis_url, postgres_url, "postgres")


def _node_test(files: list[str], redis_url: str, postgres_url: str, backends: str) -> None:
    node = shutil.which("node")
    assert node is not None, "node (>= 18) is needed for the Node adapter's tests: install Node.js"
    env = {
        **os.environ,
        "MOTIA_STATE_PYTHON": sys.executable,
        "REDIS_URL": redis_url,
        "POSTGRES_URL": postgres_url,
        "MOTIA_NODE_BACKENDS": backends,
        # The Python process the adapter starts serves this checkout, whatever is installed.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    env.pop("MOTIA_STATE_URL", None)
    env.pop("NODE_OPTIONS", None)
    result = subprocess.run(
        [node, "--test", "--test-reporter=spec", *files],
        cwd=NODE_PACKAGE,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=170,  # below pytest-timeout's 180 s, so the output is shown
        check=False,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        print(output)
    assert result.returncode == 0, f"node --test exited with {result.returncode}:\n{output}"
    # Nothing may skip or be left undone (the spec reporter's summary lines end the output).
    info = "\N{INFORMATION SOURCE} "
    summary = dict(line.split()[-2:] for line in output.splitlines() if line.startswith(info))
    for outcome in ("fail", "cancelled", "skipped", "todo"):
        assert summary.get(outcome) == "0", f"{outcome}: {summary.get(outcome)}\n{output}"
    assert int(summary.get("pass", "0")) > 0, output
