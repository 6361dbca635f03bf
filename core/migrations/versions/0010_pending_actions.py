"""Pending actions: mail to send or events to cancel, waiting for the owner's confirmation; what the
last connection to a user's own MCP server found (status, tools)

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pending_actions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("provider", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=256), nullable=False),
        sa.Column("summary", sa.String(length=600), nullable=False),
        sa.Column("reference", sa.String(length=8), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.String(length=600), nullable=True),
        sa.Column("call_stream_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["call_stream_id"], ["media_streams.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.CheckConstraint("provider IN ('google', 'outlook')", name="ck_pending_actions_provider"),
        sa.CheckConstraint("kind IN ('send_mail', 'cancel_event')", name="ck_pending_actions_kind"),
        sa.CheckConstraint("state IN ('pending', 'done', 'declined', 'failed', 'expired')",
                           name="ck_pending_actions_state"),
    )
    op.create_index("ix_pending_actions_user_id", "pending_actions", ["user_id"])
    op.create_index("ix_pending_actions_call_stream_id", "pending_actions", ["call_stream_id"])
    op.create_index("uq_pending_actions_reference", "pending_actions", ["user_id", "reference"], unique=True,
                    postgresql_where=sa.text("state = 'pending'"))
    op.add_column("mcp_servers", sa.Column("status", sa.String(length=16), nullable=False,
                                           server_default="unchecked"))
    op.alter_column("mcp_servers", "status", server_default=None)
    op.create_check_constraint("ck_mcp_servers_status", "mcp_servers", "status IN ('unchecked', 'ok', 'failing')")
    op.add_column("mcp_servers", sa.Column("tools", postgresql.JSONB(astext_type=sa.Text()), nullable=False,
                                           server_default="[]"))
    op.alter_column("mcp_servers", "tools", server_default=None)
    op.add_column("mcp_servers", sa.Column("detail", sa.String(length=300), nullable=True))
    op.add_column("mcp_servers", sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    for column in ("checked_at", "detail", "tools"):
        op.drop_column("mcp_servers", column)
    op.drop_constraint("ck_mcp_servers_status", "mcp_servers", type_="check")
    op.drop_column("mcp_servers", "status")
    op.drop_index("uq_pending_actions_reference", table_name="pending_actions")
    op.drop_index("ix_pending_actions_call_stream_id", table_name="pending_actions")
    op.drop_index("ix_pending_actions_user_id", table_name="pending_actions")
    op.drop_table("pending_actions")
