"""Fixtures shared by the suite: a fake clock and a ``store`` parametrised over every backend."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from benchmarks.postgres_server import postgres_url_or_throwaway
from benchmarks.redis_server import RedisCluster, redis_url_or_throwaway
from motia_state_sql import (
    FileStateAdapter,
    MemoryStateAdapter,
    RedisStateAdapter,
    SqliteStateAdapter,
    StateAdapter,
)

# CI runs the same examples every time (a red CI must be reproducible); local runs explore anew.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

START = 1_800_000_000.0


class FakeClock:
    """A clock tests move by hand, so expiry needs no sleeping."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


Factory = Callable[..., StateAdapter]


def make_factory(
    backend: str, folder: Path, clock: FakeClock, redis_url: str = "", postgres_url: str = ""
) -> Factory:
    """A function building a fresh adapter of ``backend`` over the same storage each call.

    Redis adapters of one factory share a key prefix no other factory uses, and PostgreSQL
    adapters a schema of their own, so tests never see each other's keys, even on an external
    server.
    """
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    schema = f"test_{uuid.uuid4().hex[:12]}"

    def build(**options: object) -> StateAdapter:
        if backend == "redis-cluster":
            return RedisStateAdapter(redis_url, key_prefix=prefix, cluster=True, clock=clock, **options)  # type: ignore[arg-type]
        if backend in ("redis-native", "redis-motia"):
            layout: Any = backend.removeprefix("redis-")
            return RedisStateAdapter(redis_url, key_prefix=prefix, layout=layout, clock=clock, **options)  # type: ignore[arg-type]
        if backend == "postgres":
            from motia_state_sql import PostgresStateAdapter

            return PostgresStateAdapter(postgres_url, schema=schema, clock=clock, **options)  # type: ignore[arg-type]
        if backend == "memory":
            return MemoryStateAdapter(clock=clock, **options)  # type: ignore[arg-type]
        if backend == "sqlite-file":
            return SqliteStateAdapter(folder / "state.db", clock=clock, **options)  # type: ignore[arg-type]
        if backend == "sqlite-memory":
            return SqliteStateAdapter(":memory:", clock=clock, **options)  # type: ignore[arg-type]
        if backend == "file":
            return FileStateAdapter(folder, clock=clock, durable=False, **options)  # type: ignore[arg-type]
        raise AssertionError(backend)

    return build


# Minutes-long end-to-end tests start first: `make test` runs the suite on two workers
# (pytest-xdist, --dist worksteal), and the other worker takes everything else meanwhile.
SLOW_FIRST = ("test_motia_app.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.name not in SLOW_FIRST)  # stable: the order is kept otherwise


MODEL_BACKENDS = ["memory", "sqlite-file", "sqlite-memory", "file", "redis-native", "redis-motia", "postgres"]
BACKENDS = [*MODEL_BACKENDS, "redis-cluster"]


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``$REDIS_URL`` when set, else a throwaway redis-server for the session."""
    with redis_url_or_throwaway() as url:
        yield url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """``$POSTGRES_URL`` when set, else a throwaway PostgreSQL cluster for the session."""
    with postgres_url_or_throwaway() as url:
        yield url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """A throwaway 3-node Redis Cluster on loopback ports for the session."""
    cluster = RedisCluster()
    try:
        cluster.start()
        yield cluster.url
    finally:
        cluster.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def factory(backend: str, tmp_path: Path, clock: FakeClock, request: pytest.FixtureRequest) -> Factory:
    url = pg_url = ""
    if backend == "redis-cluster":
        url = request.getfixturevalue("redis_cluster_url")
    elif backend.startswith("redis-"):
        url = request.getfixturevalue("redis_url")
    elif backend == "postgres":
        pg_url = request.getfixturevalue("postgres_url")
    return make_factory(backend, tmp_path, clock, url, pg_url)


@pytest.fixture
async def store(factory: Factory) -> AsyncIterator[StateAdapter]:
    async with factory() as adapter:
        yield adapter


def is_file(store: StateAdapter) -> bool:
    """The legacy JSON file cannot hold versions, TTLs or ':' in group ids (contract decision)."""
    return isinstance(store, FileStateAdapter)


def is_motia_redis(store: StateAdapter) -> bool:
    """Motia's Redis layout: versions identify content, no times, no ':' in group ids."""
    return isinstance(store, RedisStateAdapter) and store.layout == "motia"


def is_cluster(store: StateAdapter) -> bool:
    return isinstance(store, RedisStateAdapter) and store.cluster


def colon_groups(store: StateAdapter) -> bool:
    """Whether group ids may hold ':' (not in Motia's two formats, which split on it)."""
    return not (is_file(store) or is_motia_redis(store))
