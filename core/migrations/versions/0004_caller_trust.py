"""Who may reach an agent: users.pin_digest and allow_other_phones, conversations.caller_attestation,
media_streams.verified_at; service_heartbeats.detail (a worker's warm spares, for /healthz)

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("pin_digest", sqlmodel.sql.sqltypes.AutoString(length=96), nullable=True))
    op.add_column("users", sa.Column("allow_other_phones", sa.Boolean(), server_default="false", nullable=False))
    op.add_column("conversations", sa.Column("caller_attestation", sqlmodel.sql.sqltypes.AutoString(length=64),
                                             nullable=True))
    op.add_column("media_streams", sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("service_heartbeats", sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()),
                                                  server_default="{}", nullable=False))


def downgrade() -> None:
    op.drop_column("service_heartbeats", "detail")
    op.drop_column("media_streams", "verified_at")
    op.drop_column("conversations", "caller_attestation")
    op.drop_column("users", "allow_other_phones")
    op.drop_column("users", "pin_digest")
