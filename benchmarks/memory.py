"""Peak memory of each backend, each in a fresh process (``python -m benchmarks.memory``).

The child stores ``count`` items in a new store, reads the group back and clears it, once for the
peak RSS and once more, in another store, under tracemalloc for the peak Python heap.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import subprocess
import sys
import tracemalloc
from pathlib import Path

from motia_state_sql import open_state
from motia_state_sql.bench.workloads import VALUE

from .backends import BACKENDS, Where

ROOT = Path(__file__).resolve().parent.parent


def _rss_mib() -> float:
    """This process's peak RSS so far: ``VmHWM`` (ru_maxrss would carry the parent's peak over
    fork and exec on Linux)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _work(url: str, count: int) -> None:
    async with open_state(url) as store:
        for i in range(count):
            await store.set("mem", f"k{i}", VALUE)
        await store.get_group("mem")
        await store.clear("mem")


async def _measure(rss_url: str, heap_url: str, count: int) -> dict[str, float]:
    before = _rss_mib()
    await _work(rss_url, count)
    rss = _rss_mib()
    tracemalloc.start()
    try:
        await _work(heap_url, count)
        heap = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    return {"items": count, "rss_start_mib": before, "rss_peak_mib": rss, "heap_peak_mib": heap}


def peak_memory(name: str, where: Where, count: int) -> dict[str, float]:
    """Backend ``name``'s peak memory for ``count`` sets, a get_group and a clear."""
    folder = where.folder / "memory" / name
    folder.mkdir(parents=True, exist_ok=True)
    place = Where(folder, where.servers, where.prefix)
    urls = [BACKENDS[name].url(place, role) for role in ("mem-rss", "mem-heap")]
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", *urls, str(count)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout.splitlines()[-1])
    return result


def lines(memory: dict[str, dict[str, float]]) -> list[str]:
    """One line per backend."""
    return [
        f"{name}: peak RSS {m['rss_peak_mib']:.0f} MiB (process start {m['rss_start_mib']:.0f} MiB), "
        f"peak Python heap {m['heap_peak_mib']:.1f} MiB, for {m['items']:,.0f} sets, a get_group and a clear"
        for name, m in memory.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description="one backend's peak memory (run by the harness)")
    parser.add_argument("rss_url")
    parser.add_argument("heap_url")
    parser.add_argument("count", type=int)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(_measure(args.rss_url, args.heap_url, args.count))))


if __name__ == "__main__":
    main()
