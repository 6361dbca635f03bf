"""The dashboard: sign-in codes (digests only), web sessions, users.custom_instructions and
suspended_at, blocked_numbers

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("custom_instructions", sqlmodel.sql.sqltypes.AutoString(length=2000),
                                     nullable=True))
    op.add_column("users", sa.Column("suspended_at", sa.DateTime(timezone=True), nullable=True))
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
    op.drop_table("blocked_numbers")
    op.drop_column("users", "suspended_at")
    op.drop_column("users", "custom_instructions")
