"""How much work the harness does: the full run (``make bench``) and the quick one (its test)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from motia_state_sql.bench.workloads import Arrival, arrivals

#: Workers and semaphore slots of the concurrent arrival patterns.
CONCURRENCY: Final = 64


@dataclass(frozen=True)
class Sizes:
    """Counts of one mode; the quick mode only checks the harness runs."""

    #: Alternated rounds per target pair: five in the full run, as the same pair's ratio moves by
    #: a third between rounds on these machines and a median of three flipped verdicts.
    rounds: int
    #: Operations per measurement (a ``gather`` starts this many tasks at once).
    ops: int
    #: Operations per measurement on stores that rewrite a whole file per write.
    file_ops: int
    #: Arrivals per second of the open loop: above raw sqlite3's commit-per-write rate, so the
    #: open loop measures how a store keeps up with arrivals it cannot slow down.
    rate: float
    #: ``get_group`` sizes.
    groups: tuple[int, ...]
    #: Items stored, for the cost against store size (the first is the small store).
    stored: tuple[int, ...]
    #: Items in Motia's FileStateAdapter (and ours) for the file comparison; the last is the target's.
    motia_file_items: tuple[int, ...]
    #: Operations under the profiler after a miss.
    profile_ops: int
    #: Runs of ``python -c pass`` and ``motia-state --help`` per measurement.
    startup_runs: int
    #: Sets per backend in the peak-memory runs.
    memory_ops: int

    def arrivals(self) -> dict[str, Arrival]:
        """The arrival patterns, by name: x1, workers, gather, semaphore, open."""
        return arrivals(CONCURRENCY, self.rate)

    def workload(self, op: str, arrival: str) -> str:
        """The row name of ``op`` under ``arrival`` (``"set sem64 gather"``)."""
        return f"{op} {self.arrivals()[arrival].name}"


FULL: Final = Sizes(
    rounds=5,
    ops=10_000,
    file_ops=300,
    rate=100_000,
    groups=(10, 1_000, 100_000),
    stored=(1_000, 100_000, 1_000_000),
    motia_file_items=(1_000, 10_000),
    profile_ops=5_000,
    startup_runs=20,
    memory_ops=20_000,
)
QUICK: Final = Sizes(
    rounds=3,
    ops=100,
    file_ops=10,
    rate=20_000,
    groups=(10, 100),
    stored=(100, 1_000),
    motia_file_items=(100, 500),
    profile_ops=100,
    startup_runs=3,
    memory_ops=100,
)
