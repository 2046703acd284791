"""Fixtures shared by the suite: a fake clock and a ``store`` parametrised over every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from motia_state_sql import (
    FileStateAdapter,
    MemoryStateAdapter,
    SqliteStateAdapter,
    StateAdapter,
)

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


def make_factory(backend: str, folder: Path, clock: FakeClock) -> Factory:
    """A function building a fresh adapter of ``backend`` over the same storage each call."""

    def build(**options: object) -> StateAdapter:
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


BACKENDS = ["memory", "sqlite-file", "sqlite-memory", "file"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def factory(backend: str, tmp_path: Path, clock: FakeClock) -> Factory:
    return make_factory(backend, tmp_path, clock)


@pytest.fixture
async def store(factory: Factory) -> AsyncIterator[StateAdapter]:
    async with factory() as adapter:
        yield adapter


def is_file(store: StateAdapter) -> bool:
    """The legacy JSON file cannot hold versions, TTLs or ':' in group ids (contract decision)."""
    return isinstance(store, FileStateAdapter)
