"""The dashboard: sign-in codes (digests only), web sessions, users.custom_instructions,
suspended_at and monthly_cap_cents, blocked_numbers; usage by direction with a source key (each
counted once), agent_instances.awake_since, deliveries falling back for the monthly cap

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

USAGE_KINDS = "'call_seconds_in', 'call_seconds_out', 'sms_segments_in', 'sms_segments_out', 'awake_seconds'"
PREVIOUS_FALLBACKS = "'no-answer', 'busy', 'voicemail', 'call-failed', 'quiet-hours'"
FALLBACKS = f"{PREVIOUS_FALLBACKS}, 'monthly-cap'"


def upgrade() -> None:
    op.add_column("users", sa.Column("custom_instructions", sqlmodel.sql.sqltypes.AutoString(length=2000),
                                     nullable=True))
    op.add_column("users", sa.Column("suspended_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("users", sa.Column("monthly_cap_cents", sa.Integer(), nullable=True))
    op.add_column("agent_instances", sa.Column("awake_since", sa.DateTime(timezone=True), nullable=True))
    op.add_column("usage_records", sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True))
    op.create_unique_constraint("usage_records_source_key", "usage_records", ["source"])
    # Calls were recorded as call_seconds; their direction is their conversation's.
    op.execute("UPDATE usage_records u SET kind = CASE c.direction WHEN 'outbound' THEN 'call_seconds_out' "
               "ELSE 'call_seconds_in' END FROM conversations c WHERE u.conversation_id = c.id "
               "AND u.kind = 'call_seconds'")
    op.execute("UPDATE usage_records SET kind = 'call_seconds_in' WHERE kind = 'call_seconds'")
    op.create_check_constraint("ck_usage_records_kind", "usage_records", f"kind IN ({USAGE_KINDS})")
    op.drop_constraint("ck_deliveries_fallback_reason", "deliveries", type_="check")
    op.create_check_constraint("ck_deliveries_fallback_reason", "deliveries", f"fallback_reason IN ({FALLBACKS})")
    op.create_table(
        "billing_statements",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("plan", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("currency", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("total_cents", sa.Integer(), nullable=False),
        sa.Column("lines", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("user_id", "month", name="uq_billing_statements_user_month"),
    )
    op.create_index(op.f("ix_billing_statements_user_id"), "billing_statements", ["user_id"])
    op.create_table(
        "blocked_numbers",
        sa.Column("e164", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("blocked_by", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("e164"),
    )
    op.create_table(
        "sign_in_codes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("address_digest", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("code_digest", sqlmodel.sql.sqltypes.AutoString(length=96), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("attempts >= 0", name="ck_sign_in_codes_attempts"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_sign_in_codes_address_digest"), "sign_in_codes", ["address_digest"])
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("secret_digest", sqlmodel.sql.sqltypes.AutoString(length=96), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("operator", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("user_agent", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("user_id IS NOT NULL OR operator IS NOT NULL", name="ck_web_sessions_someone"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_web_sessions_user_id"), "web_sessions", ["user_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_web_sessions_user_id"), table_name="web_sessions")
    op.drop_table("web_sessions")
    op.drop_index(op.f("ix_sign_in_codes_address_digest"), table_name="sign_in_codes")
    op.drop_table("sign_in_codes")
    op.drop_index(op.f("ix_billing_statements_user_id"), table_name="billing_statements")
    op.drop_table("billing_statements")
    op.drop_constraint("ck_deliveries_fallback_reason", "deliveries", type_="check")
    op.create_check_constraint("ck_deliveries_fallback_reason", "deliveries",
                               f"fallback_reason IN ({PREVIOUS_FALLBACKS})")
    op.drop_constraint("ck_usage_records_kind", "usage_records", type_="check")
    op.drop_constraint("usage_records_source_key", "usage_records", type_="unique")
    op.drop_column("usage_records", "source")
    op.drop_column("agent_instances", "awake_since")
    op.drop_column("users", "monthly_cap_cents")
    op.drop_table("blocked_numbers")
    op.drop_column("users", "suspended_at")
    op.drop_column("users", "custom_instructions")
