"""The PostgreSQL backend (asyncpg): same table and migrations as SQLite, many instances, durable.

Needs the ``postgres`` extra (``pip install 'motia-state-sql[postgres]'``).
"""

from .adapter import DEFAULT_URL, PostgresStateAdapter

__all__ = ["DEFAULT_URL", "PostgresStateAdapter"]
