"""Create the motia_state table.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# The same revision on SQLite and PostgreSQL (see motia_state_sql/schema.py); each dialect takes
# its own options and ignores the other's.
# Code point order on PostgreSQL too (written out here: a revision never changes with the package).
_NAME = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "motia_state",
        sa.Column("group_id", _NAME, nullable=False),
        sa.Column("key", _NAME, nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("group_id", "key"),
        sqlite_with_rowid=False,
    )
    op.create_index(
        "ix_motia_state_expires_at",
        "motia_state",
        ["expires_at"],
        sqlite_where=sa.text("expires_at IS NOT NULL"),
        postgresql_where=sa.text("expires_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_motia_state_expires_at", table_name="motia_state")
    op.drop_table("motia_state")
