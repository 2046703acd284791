"""The SQLite backend: schema, migrations runner and adapter."""

from __future__ import annotations

from .adapter import DEFAULT_PATH, SqliteStateAdapter

__all__ = ["DEFAULT_PATH", "SqliteStateAdapter"]
