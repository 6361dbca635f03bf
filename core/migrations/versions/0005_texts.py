"""Texts: users.sms_opted_out_at (STOP / START), messages.status (received / answered, and delivery
status), reply_to + part (each part of a reply sent once) and media (MMS links)

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("sms_opted_out_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("messages", sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True))
    op.add_column("messages", sa.Column("reply_to", sa.Uuid(), nullable=True))
    op.add_column("messages", sa.Column("part", sa.Integer(), nullable=True))
    op.add_column("messages", sa.Column("media", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.create_foreign_key("messages_reply_to_fkey", "messages", "messages", ["reply_to"], ["id"], ondelete="SET NULL")
    op.create_unique_constraint("uq_messages_reply_part", "messages", ["reply_to", "part"])


def downgrade() -> None:
    op.drop_constraint("uq_messages_reply_part", "messages", type_="unique")
    op.drop_constraint("messages_reply_to_fkey", "messages", type_="foreignkey")
    for column in ("media", "part", "reply_to", "status"):
        op.drop_column("messages", column)
    op.drop_column("users", "sms_opted_out_at")
