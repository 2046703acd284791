"""motia_state_sql: a production state store for Motia-style workflows.

SQLite in WAL mode by default; Memory and Motia's legacy JSON file too. Every adapter keeps the
contract in ``docs/contract-decisions.md``: exact values, exact groups, atomic writes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# The errors cost nothing to import (their module needs only errno): imported here.
from .errors import (
    ConfigError,
    ConflictError,
    InvalidKeyError,
    InvalidOperationError,
    InvalidValueError,
    SchemaError,
    StateError,
    StoreUnavailableError,
    UnsupportedError,
)

if TYPE_CHECKING:
    from .base import JsonEntry, StateAdapter, StateTransaction
    from .file import FileStateAdapter
    from .memory import MemoryStateAdapter
    from .ops import decrement, increment, merge, remove, set_op
    from .postgres import PostgresStateAdapter
    from .redis import RedisStateAdapter
    from .rows import StateItem, UpdateResult
    from .sqlite import SqliteStateAdapter
    from .url import open_state

# Every name is imported from its module when first used, so that ``import motia_state_sql`` (and
# ``motia-state --help``) costs next to nothing, and a program loads only the backends it names:
# neither redis-py, asyncpg, SQLAlchemy nor asyncio until something needs them.
_LAZY: dict[str, str] = {
    **dict.fromkeys(("JsonEntry", "StateAdapter", "StateTransaction"), ".base"),
    "FileStateAdapter": ".file",
    "MemoryStateAdapter": ".memory",
    **dict.fromkeys(("decrement", "increment", "merge", "remove", "set_op"), ".ops"),
    "PostgresStateAdapter": ".postgres",
    "RedisStateAdapter": ".redis",
    **dict.fromkeys(("StateItem", "UpdateResult"), ".rows"),
    "SqliteStateAdapter": ".sqlite",
    "open_state": ".url",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "ConfigError",
    "ConflictError",
    "FileStateAdapter",
    "InvalidKeyError",
    "InvalidOperationError",
    "InvalidValueError",
    "JsonEntry",
    "MemoryStateAdapter",
    "PostgresStateAdapter",
    "RedisStateAdapter",
    "SchemaError",
    "SqliteStateAdapter",
    "StateAdapter",
    "StateError",
    "StateItem",
    "StateTransaction",
    "StoreUnavailableError",
    "UnsupportedError",
    "UpdateResult",
    "decrement",
    "increment",
    "merge",
    "open_state",
    "remove",
    "set_op",
]

__version__ = "0.1.0"

