"""Benchmarking stores: what ``motia-state bench`` and the repository's ``make bench`` share.

- ``workloads``: arrival patterns (one coroutine, workers, ``gather``, ``Semaphore`` + ``gather``,
  an open loop at a fixed rate) and the standard operations on a store;
- ``runner``: measurements with a discarded warm-up, pairs measured in alternated rounds, and the
  rows (median rate, latency percentiles) they add up to;
- ``report``: the table, the JSON results and the plot;
- ``stores``: ``motia-state bench URL ...``: the standard workloads against stores a user names,
  refusing a store that holds items and cleaning up what it wrote.

Nothing here is imported by ``import motia_state_sql``.
"""
