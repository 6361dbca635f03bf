"""Reaching the user: users.time_zone and quiet hours, reminders' recurrence, time zone and
occurrences, and deliveries (each text or call to a user and how it ended)

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHANNELS = "'sms', 'call'"


def upgrade() -> None:
    op.add_column("users", sa.Column("time_zone", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
    op.add_column("users", sa.Column("quiet_from", sa.Time(), nullable=True))
    op.add_column("users", sa.Column("quiet_until", sa.Time(), nullable=True))
    op.create_check_constraint("ck_users_quiet_hours_pair", "users", "(quiet_from IS NULL) = (quiet_until IS NULL)")
    op.add_column("reminders", sa.Column("recurrence", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=True))
    op.add_column("reminders", sa.Column("time_zone", sqlmodel.sql.sqltypes.AutoString(length=64),
                                         server_default="UTC", nullable=False))
    op.add_column("reminders", sa.Column("occurrences", sa.Integer(), server_default="0", nullable=False))
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("reminder_id", sa.Uuid(), nullable=True),
        sa.Column("occurrence", sa.Integer(), nullable=True),
        sa.Column("requested", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=True),
        sa.Column("text", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("call_sid", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("message_sid", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("outcome", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("fallback_reason", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("detail", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(f"requested IN ({CHANNELS})", name="ck_deliveries_requested"),
        sa.CheckConstraint(f"channel IN ({CHANNELS})", name="ck_deliveries_channel"),
        sa.CheckConstraint("outcome IN ('pending', 'called', 'texted', 'refused', 'failed')",
                           name="ck_deliveries_outcome"),
        sa.CheckConstraint("fallback_reason IN ('no-answer', 'busy', 'voicemail', 'call-failed', 'quiet-hours')",
                           name="ck_deliveries_fallback_reason"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["reminder_id"], ["reminders.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("reminder_id", "occurrence", name="uq_deliveries_reminder_occurrence"),
    )
    op.create_index(op.f("ix_deliveries_user_id"), "deliveries", ["user_id"])
    op.create_index(op.f("ix_deliveries_reminder_id"), "deliveries", ["reminder_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_deliveries_reminder_id"), table_name="deliveries")
    op.drop_index(op.f("ix_deliveries_user_id"), table_name="deliveries")
    op.drop_table("deliveries")
    for column in ("occurrences", "time_zone", "recurrence"):
        op.drop_column("reminders", column)
    op.drop_constraint("ck_users_quiet_hours_pair", "users", type_="check")
    for column in ("quiet_until", "quiet_from", "time_zone"):
        op.drop_column("users", column)
