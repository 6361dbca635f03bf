"""Usage: model tokens in and out, where the agent's answer says how many it used

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PREVIOUS_KINDS = "'call_seconds_in', 'call_seconds_out', 'sms_segments_in', 'sms_segments_out', 'awake_seconds'"
KINDS = f"{PREVIOUS_KINDS}, 'model_tokens_in', 'model_tokens_out'"


def upgrade() -> None:
    op.drop_constraint("ck_usage_records_kind", "usage_records", type_="check")
    op.create_check_constraint("ck_usage_records_kind", "usage_records", f"kind IN ({KINDS})")


def downgrade() -> None:
    op.execute("DELETE FROM usage_records WHERE kind IN ('model_tokens_in', 'model_tokens_out')")
    op.drop_constraint("ck_usage_records_kind", "usage_records", type_="check")
    op.create_check_constraint("ck_usage_records_kind", "usage_records", f"kind IN ({PREVIOUS_KINDS})")
