"""``motia-state bench URL [URL ...]``: the standard workloads against stores a user names.

The stores must be throwaway ones: a store that already holds items is refused, unless the user
says ``force`` and names a group of its own (``group``), which must be empty. Everything the run
writes goes into that one group, which is cleared at the end (also after an error or Ctrl-C).
The URLs are measured alternately, workload by workload, the order turned round each round; the
first URL is the baseline of the table's ratio column.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from ..errors import ConfigError
from ..redact import redact
from ..url import open_state
from .runner import Bench, Key, Row, Spec
from .workloads import OPERATIONS, Op, arrivals, fill, operation

if TYPE_CHECKING:
    from ..base import StateAdapter

__all__ = ["DEFAULT_GROUP", "DEFAULT_WORKLOADS", "WORKLOADS", "BenchOptions", "bench_urls"]

#: The group every write of a run goes to, unless ``group`` names another.
DEFAULT_GROUP: Final = "motia-state-bench"
#: Every ``OPERATION/ARRIVAL`` pair ``--workload`` accepts.
WORKLOADS: Final = tuple(f"{op}/{arrival}" for op in OPERATIONS for arrival in arrivals(1, 1.0))
#: What runs when no workload is chosen.
DEFAULT_WORKLOADS: Final = (
    "set/x1",
    "get/x1",
    "set/workers",
    "get/workers",
    "set/gather",
    "get/gather",
    "set/semaphore",
    "set/open",
    "update/workers",
    "mix/x1",
)


@dataclass(frozen=True)
class BenchOptions:
    """What to run.

    ``workloads`` (``OPERATION/ARRIVAL``), each ``ops`` operations per measurement, ``rounds``
    times per store; ``concurrency`` workers or semaphore slots; the open loop's ``rate`` per
    second; ``group`` and ``force`` as in the module's docstring.
    """

    workloads: Sequence[str] = DEFAULT_WORKLOADS
    ops: int = 2_000
    concurrency: int = 64
    rate: float = 20_000.0
    rounds: int = 3
    group: str | None = None
    force: bool = False

    def check(self) -> None:
        """Raise ``ConfigError`` for options out of range.

        Raises:
            ConfigError: an unknown workload, a count below 1, ``force`` without ``group``.
        """
        unknown = [w for w in self.workloads if w not in WORKLOADS]
        if unknown:
            raise ConfigError(f"unknown workload {unknown[0]!r}; known: {', '.join(WORKLOADS)}")
        for name in ("ops", "concurrency", "rounds"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
        if not self.rate > 0:
            raise ConfigError(f"rate must be above 0, not {self.rate}")
        if self.force and self.group is None:
            raise ConfigError("force needs a group of the run's own (--group G), which it will clear")


def _labels(urls: Sequence[str]) -> list[str]:
    labels = [redact(url) for url in urls]
    if len(set(urls)) != len(urls):
        raise ConfigError("a URL is given twice: each store is measured once, alternately with the others")
    return [f"{label} #{n + 1}" if labels.count(label) > 1 else label for n, label in enumerate(labels)]


async def _refuse_unless_throwaway(store: StateAdapter, label: str, options: BenchOptions) -> None:
    groups = await store.list_groups()
    if options.group is not None and options.group in groups:
        raise ConfigError(
            f"{label}: group {options.group!r} already holds items; the benchmark writes there and "
            "clears it, so name a group nothing else uses"
        )
    if groups and not options.force:
        raise ConfigError(
            f"{label} already holds items ({len(groups)} groups): point the benchmark at a throwaway "
            "store, or give --force with a --group G of its own (it writes only there and clears it)"
        )


@contextlib.asynccontextmanager
async def _opened(
    urls: Sequence[str], labels: Sequence[str], options: BenchOptions
) -> AsyncIterator[list[StateAdapter]]:
    """Every store open and checked before anything is written.

    At the end, whatever happens, the run's group is cleared in every store and every store is
    closed (a failure in one does not skip the others).
    """
    group = options.group or DEFAULT_GROUP
    async with contextlib.AsyncExitStack() as stack:
        stores = []
        for url, label in zip(urls, labels, strict=True):
            store = await stack.enter_async_context(open_state(url))
            await _refuse_unless_throwaway(store, label, options)
            stores.append(store)
        for store in stores:  # run before the closes (last in, first out)
            stack.push_async_callback(store.clear, group)
        yield stores


def _maker(name: str, store: StateAdapter, group: str, stored: int) -> Callable[[int], Op]:
    return lambda tag: operation(name, store, group, stored, tag)


async def bench_urls(
    urls: Sequence[str], options: BenchOptions, on_measured: Callable[[Key], None] | None = None
) -> list[Row]:
    """Run ``options.workloads`` against every store in ``urls``, alternately; the table's rows.

    ``on_measured`` is called after each measurement (``len(workloads) * rounds * len(urls)`` in
    all). Each row's ratio is to the first URL's row of the same workload.

    Raises:
        ConfigError: bad options, a URL given twice, or a store that is not a throwaway one.
        StateError: from the stores (``StoreUnavailableError`` when one cannot be reached).
    """
    options.check()
    if not urls:
        raise ConfigError("give at least one store URL")
    labels = _labels(urls)
    group = options.group or DEFAULT_GROUP
    bench = Bench(options.rounds, on_measured)
    table = arrivals(options.concurrency, options.rate)
    async with _opened(urls, labels, options) as stores:
        if any(w.split("/")[0] in ("get", "overwrite", "mix") for w in options.workloads):
            for store in stores:
                await fill(store, group, 0, options.ops)
        for workload in options.workloads:
            name, arrival_name = workload.split("/")
            arrival = table[arrival_name]
            specs = [
                Spec(
                    label,
                    f"{name} {arrival.name}",
                    _maker(name, store, group, options.ops),
                    options.ops,
                    arrival,
                )
                for store, label in zip(stores, labels, strict=True)
            ]
            await bench.alternate(specs)
    first = labels[0]
    return bench.rows(lambda key: (first, key[1]) if key[0] != first else None)
