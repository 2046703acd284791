"""Alembic migrations of the SQLite schema; shipped in the wheel as ``motia_state_sql:migrations``."""
