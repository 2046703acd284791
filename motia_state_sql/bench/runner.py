"""Measurements, alternated rounds, and the rows they add up to.

Every measurement runs a discarded warm-up of a tenth of its count first. A pair (candidate,
baseline) is measured alternately, round after round (A B, B A, A B: slow drifts of a shared
machine hit both sides alike); its figure is the median of the per-round ratios. A row gives the
median rate of its measurements and the latency percentiles of all of them together.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .workloads import Arrival, Op, Timing

__all__ = ["Bench", "Key", "Measurable", "Row", "Spec", "format_ratio", "percentile"]

Key = tuple[str, str]  # (backend, workload)


class Measurable(Protocol):
    """Anything the runner can time: a Python operation, a Node process's, a subprocess."""

    @property
    def key(self) -> Key:
        """``(backend, workload)``: the row this measurement belongs to."""
        ...

    @property
    def count(self) -> int:
        """Operations per measurement."""
        ...

    async def measure(self, tag: int, start: int, count: int) -> Timing:
        """Run ``count`` operations with indexes from ``start``; ``tag`` is new per measurement."""
        ...


@dataclass
class Spec:
    """A Python operation under an arrival pattern; ``make(tag)`` builds the operation."""

    backend: str
    workload: str
    make: Callable[[int], Op]
    count: int
    arrival: Arrival

    @property
    def key(self) -> Key:
        """``(backend, workload)``."""
        return self.backend, self.workload

    async def measure(self, tag: int, start: int, count: int) -> Timing:
        """``count`` calls of ``make(tag)`` under the arrival pattern."""
        return await self.arrival.run(self.make(tag), range(start, start + count))


@dataclass
class Row:
    """One (backend, workload) of a run: its rates, latency percentiles and ratio to a baseline."""

    backend: str
    workload: str
    ops: int
    rate: float
    p50_us: float
    p99_us: float
    rounds: int
    rates: list[float] = field(default_factory=list)
    baseline: str = ""
    ratio: float | None = None


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The ``fraction`` percentile of ``ordered`` (sorted ascending, not empty)."""
    return ordered[min(len(ordered) - 1, max(0, int(len(ordered) * fraction + 0.5) - 1))]


def format_ratio(value: float) -> str:
    """A ratio with the digits that matter: ``0.63``, ``12.4``, ``137``."""
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


class Bench:
    """The measurements of one run: every round of every spec, and the paired ratios."""

    def __init__(self, rounds: int, on_measured: Callable[[Key], None] | None = None) -> None:
        self.rounds = rounds
        self.samples: dict[Key, list[tuple[float, list[float]]]] = {}
        self.pairs: dict[tuple[Key, Key], list[float]] = {}
        self._tags = itertools.count()
        self._on_measured = on_measured

    def tag(self) -> int:
        """A number never used before in this run (keys written by one measurement are its own)."""
        return next(self._tags)

    async def once(self, spec: Measurable) -> float:
        """One measurement after a discarded warm-up of a tenth of the count: its ops/s."""
        tag = self.tag()
        await spec.measure(tag, spec.count, max(1, spec.count // 10))
        seconds, latencies = await spec.measure(tag, 0, spec.count)
        rate = spec.count / seconds
        self.samples.setdefault(spec.key, []).append((rate, latencies))
        if self._on_measured is not None:
            self._on_measured(spec.key)
        return rate

    async def ensure(self, spec: Measurable) -> None:
        """Measure ``spec`` once unless it was measured already."""
        if spec.key not in self.samples:
            await self.once(spec)

    async def alternate(self, specs: Sequence[Measurable], rounds: int | None = None) -> None:
        """Every spec once per round, the order turned round each round (A B C, C B A, ...)."""
        for number in range(rounds or self.rounds):
            for spec in specs if number % 2 == 0 else reversed(specs):
                await self.once(spec)

    async def pair(self, a: Measurable, b: Measurable, rounds: int | None = None) -> list[float]:
        """``a`` and ``b`` alternately (A B, B A, ...): the ratio of ``a`` to ``b`` in each round."""
        ratios = []
        for number in range(rounds or self.rounds):
            if number % 2 == 0:
                rate_a, rate_b = await self.once(a), await self.once(b)
            else:
                rate_b = await self.once(b)
                rate_a = await self.once(a)
            ratios.append(rate_a / rate_b)
        self.pairs.setdefault((a.key, b.key), []).extend(ratios)
        return ratios

    def ratios(self, a: Key, b: Key) -> list[float]:
        """The per-round ratios of ``a`` to ``b``.

        Paired ones, else round by round of what was measured in the same rounds (``alternate``).
        """
        if (a, b) in self.pairs:
            return self.pairs[(a, b)]
        if a in self.samples and b in self.samples:
            return [x[0] / y[0] for x, y in zip(self.samples[a], self.samples[b], strict=False)]
        return []

    def rows(self, baseline_of: Callable[[Key], Key | None] = lambda key: None) -> list[Row]:
        """One row per (backend, workload), in the order first measured.

        Each with its ratio to the row ``baseline_of`` names (the median of their per-round ratios).
        """
        rows = []
        for (backend, workload), samples in self.samples.items():
            rates = [rate for rate, _ in samples]
            latencies = sorted(itertools.chain.from_iterable(lat for _, lat in samples))
            row = Row(
                backend,
                workload,
                len(latencies) // len(samples),
                statistics.median(rates),
                percentile(latencies, 0.50) * 1e6,
                percentile(latencies, 0.99) * 1e6,
                len(samples),
                rates,
            )
            base = baseline_of((backend, workload))
            ratios = self.ratios((backend, workload), base) if base is not None else []
            if base is not None and ratios:
                row.baseline, row.ratio = " ".join(base), statistics.median(ratios)
            rows.append(row)
        return rows
