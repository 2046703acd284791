"""Alembic migrations of the SQLite schema; installed as the package ``motia_state_sql.migrations``."""
