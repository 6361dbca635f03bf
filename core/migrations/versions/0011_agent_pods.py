"""Warm agent pods of the Kubernetes runtime, claimed by one user each

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "agent_pods",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("pool", sa.String(length=63), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("key_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name"),
        sa.UniqueConstraint("user_id"),
        sa.CheckConstraint("state IN ('starting', 'ready', 'loading', 'serving')", name="ck_agent_pods_state"),
        sa.CheckConstraint("(state IN ('loading', 'serving')) = (user_id IS NOT NULL)",
                           name="ck_agent_pods_claimed_has_user"),
    )
    op.create_index("ix_agent_pods_pool", "agent_pods", ["pool"])


def downgrade() -> None:
    op.drop_index("ix_agent_pods_pool", table_name="agent_pods")
    op.drop_table("agent_pods")
