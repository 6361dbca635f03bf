"""Integrations: a connection's state (connected, or waiting for the user's consent again), when the
user was told, and when its token last changed

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("oauth_credentials", sa.Column("state", sa.String(length=16), nullable=False,
                                                 server_default="connected"))
    op.alter_column("oauth_credentials", "state", server_default=None)
    op.create_check_constraint("ck_oauth_credentials_state", "oauth_credentials",
                               "state IN ('connected', 'needs_consent')")
    op.add_column("oauth_credentials", sa.Column("consent_notified_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("oauth_credentials", sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False,
                                                 server_default=sa.func.now()))
    op.alter_column("oauth_credentials", "updated_at", server_default=None)


def downgrade() -> None:
    op.drop_column("oauth_credentials", "updated_at")
    op.drop_column("oauth_credentials", "consent_notified_at")
    op.drop_constraint("ck_oauth_credentials_state", "oauth_credentials", type_="check")
    op.drop_column("oauth_credentials", "state")
