"""The backends the harness measures: one entry each, a URL built for a role.

Each backend is reached through ``open_state(url)``, as a user would. A backend that needs a
server names it (``server``); ``SERVERS`` starts each kind once per run. Adding a backend is one
``Backend`` entry here, and its server's entry in ``SERVERS``. PostgreSQL stores live in schemas
named after the run's prefix and the role, all dropped at the end of the run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlencode

from benchmarks.postgres_server import postgres_url_or_throwaway
from benchmarks.redis_server import redis_url_or_throwaway


@dataclass(frozen=True)
class Where:
    """Where one run's stores live: a temporary folder, the servers' URLs, this run's key prefix."""

    folder: Path
    servers: dict[str, str]
    prefix: str

    def server(self, kind: str, **query: str) -> str:
        """The URL of the ``kind`` server, with ``query`` parameters added."""
        url = self.servers[kind]
        return f"{url}{'&' if '?' in url else '?'}{urlencode(query)}" if query else url


@dataclass(frozen=True)
class Backend:
    """A backend: ``url(where, role)`` is a fresh store for each ``role``."""

    name: str
    url: Callable[[Where, str], str]
    server: str | None = None
    #: Rewrites itself on every write (Motia's JSON file): measured with fewer operations, and
    #: never filled with many items.
    slow: bool = False


BACKENDS: Final = {
    backend.name: backend
    for backend in (
        Backend("memory", lambda w, role: "memory://"),
        Backend("sqlite-normal", lambda w, role: f"sqlite:///{w.folder / f'normal-{role}.db'}"),
        Backend("sqlite-full", lambda w, role: f"sqlite:///{w.folder / f'full-{role}.db'}?synchronous=FULL"),
        Backend(
            "redis-native", lambda w, role: w.server("redis", key_prefix=f"{w.prefix}{role}:n:"), "redis"
        ),
        Backend(
            "redis-motia",
            lambda w, role: w.server("redis", key_prefix=f"{w.prefix}{role}:m:", layout="motia"),
            "redis",
        ),
        Backend("postgres", lambda w, role: w.server("postgres", schema=f"{w.prefix}{role}"), "postgres"),
        Backend("file", lambda w, role: f"file://{w.folder / f'file-{role}'}?durable=false", slow=True),
    )
}
#: Every backend's name, in the order of the table.
NAMES: Final = tuple(BACKENDS)
#: Measured against the size of the store.
SIZED: Final = tuple(name for name, backend in BACKENDS.items() if not backend.slow)

#: How each kind of server is reached: ``$REDIS_URL`` / ``$POSTGRES_URL``, else a throwaway server
#: for the run (PostgreSQL's with fsync on, as a server holding real state runs).
SERVERS: Final[dict[str, Callable[[], contextlib.AbstractContextManager[str]]]] = {
    "redis": redis_url_or_throwaway,
    "postgres": lambda: postgres_url_or_throwaway(durable=True),
}


@contextlib.contextmanager
def servers(kinds: set[str]) -> Iterator[dict[str, str]]:
    """Every server of ``kinds`` started (or found), by kind."""
    with contextlib.ExitStack() as stack:
        yield {kind: stack.enter_context(SERVERS[kind]()) for kind in sorted(kinds)}
