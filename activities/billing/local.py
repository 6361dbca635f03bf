"""The Billing port's local adapter: statements kept in the platform's database (a payment
provider's adapter would send them on to it)."""

from __future__ import annotations

import uuid

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db import transaction
from core.models import BillingStatement, utcnow
from core.ports import StatementSummary


class LocalBilling:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def record_statement(self, statement: StatementSummary) -> bool:
        async with transaction(self.sessions) as session:
            added = await session.execute(insert(BillingStatement).values(
                id=uuid.uuid4(), created_at=utcnow(), **statement.model_dump()).on_conflict_do_nothing(
                constraint="uq_billing_statements_user_month"))
        return bool(added.rowcount)  # type: ignore[attr-defined]
