"""Motia's own Node adapters as baselines: one Node process (``node_bench.mjs``) measuring on request.

The harness sends it one measurement at a time, so its stores alternate with ours round by round
on the same machine and the same Redis server. The Motia packages are installed once into
``.venv/node-bench`` (outside git; a stamp file names what is there).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from motia_state_sql.bench.workloads import Timing

ROOT: Final = Path(__file__).resolve().parent.parent
#: Motia's own adapters, as motia@0.17.6-beta.187 depends on them (``npm view
#: motia@0.17.6-beta.187 dependencies``): FileStateAdapter comes from @motiadev/core.
NODE_PACKAGES: Final = ("@motiadev/core@0.17.6-beta.187", "@motiadev/adapter-redis-state@0.17.6-beta.187")
NODE_BENCH: Final = ROOT / "benchmarks" / "node_bench.mjs"
#: The Node backends: Motia's RedisStateAdapter and FileStateAdapter, and our SqlStateAdapter.
MOTIA_REDIS: Final = "node-motia-redis"
MOTIA_FILE: Final = "node-motia-file"
NODE_SQLITE: Final = "node-sqlite"
NPM_FLAGS: Final = ("--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error")


def node_dir() -> Path | None:
    """The folder holding the Motia packages and node_bench.mjs; None without node and npm.

    ``--ignore-scripts``: the only install script in the tree is esbuild's binary check, and
    esbuild is never run here.
    """
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return None
    target = ROOT / ".venv" / "node-bench"
    stamp = target / "installed.txt"
    wanted = " ".join(NODE_PACKAGES)
    if not stamp.exists() or stamp.read_text() != wanted:
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--prefix", str(target), *NPM_FLAGS, *NODE_PACKAGES],
            check=True,
            capture_output=True,
            timeout=600,
            env={**os.environ, "REDISMS_DISABLE_POSTINSTALL": "1"},
        )
        stamp.write_text(wanted)
    shutil.copy(NODE_BENCH, target / NODE_BENCH.name)
    return target


def motia_file_folder(work: Path, role: str) -> Path:
    """The folder of the Node process's Motia file store for ``role`` (node_bench.mjs's too)."""
    return work / f"node-file-{role}"


class NodeProcess:
    """The running ``node_bench.mjs``: ``request`` sends one command and waits for its answer."""

    def __init__(self, process: asyncio.subprocess.Process, hello: dict[str, Any]) -> None:
        self.process = process
        self.info: dict[str, str] = {"node": hello["node"], **hello["versions"]}
        self._ids = itertools.count(1)

    @classmethod
    async def start(cls, folder: Path, work: Path, redis_url: str, prefix: str) -> NodeProcess:
        """Start node_bench.mjs from ``folder`` (see ``node_dir``), its stores under ``work``."""
        config = {
            "index": str(ROOT / "node" / "index.js"),
            "python": sys.executable,
            "env": {
                "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                "MOTIA_ANALYTICS_DISABLED": "true",
            },
            "folder": str(work),
            "redisUrl": redis_url,
            "prefix": prefix,
        }
        process = await asyncio.create_subprocess_exec(
            "node",
            str(folder / NODE_BENCH.name),
            json.dumps(config),
            cwd=folder,
            env={**os.environ, "MOTIA_ANALYTICS_DISABLED": "true"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            limit=2**27,  # an answer carries every latency of a measurement
        )
        assert process.stdout is not None
        line = await process.stdout.readline()
        if not line:
            await process.wait()
            raise RuntimeError(f"node_bench.mjs exited with {process.returncode} before it started")
        return cls(process, json.loads(line))

    async def request(self, cmd: str, **fields: Any) -> dict[str, Any]:
        """Send ``cmd`` and return the answer; a failed command raises ``RuntimeError``."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        ident = next(self._ids)
        self.process.stdin.write(json.dumps({"id": ident, "cmd": cmd, **fields}).encode() + b"\n")
        await self.process.stdin.drain()
        line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"node_bench.mjs exited during {cmd} {fields}")
        answer: dict[str, Any] = json.loads(line)
        if answer.get("id") != ident or "error" in answer:
            raise RuntimeError(f"node_bench.mjs failed {cmd} {fields}: {answer.get('error', answer)}")
        return answer

    async def close(self) -> None:
        """End stdin: the process closes its stores and exits (killed after 60 s if it does not)."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 60)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


@dataclass
class NodeSpec:
    """A workload of a store in the Node process, measured like any other spec."""

    node: NodeProcess
    backend: str
    role: str
    op: str  # set, get, overwrite
    arrival: str  # x1, all
    workload: str
    count: int

    @property
    def key(self) -> tuple[str, str]:
        """``(backend, workload)``."""
        return self.backend, self.workload

    async def measure(self, tag: int, start: int, count: int) -> Timing:
        """One measurement in the Node process."""
        answer = await self.node.request(
            "measure",
            backend=self.backend,
            role=self.role,
            op=self.op,
            arrival=self.arrival,
            start=start,
            count=count,
            tag=tag,
        )
        return answer["seconds"], answer["latencies"]

    async def profile(self, count: int) -> str:
        """The top functions of a CPU profile of this workload in the Node process."""
        answer = await self.node.request(
            "profile", backend=self.backend, role=self.role, op=self.op, arrival=self.arrival, count=count
        )
        text: str = answer["text"]
        return text
