"""Closing a month (CloseMonthWorkflow): every user's statement for it, computed from their usage
records in their own time zone, handed to the Billing port. Idempotent: a month closed again
records nothing new."""

from __future__ import annotations

from datetime import date

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from core.billing import load_plan, month_statement, plain_number
from core.models import User
from core.ports import Billing, StatementSummary
from core.settings import Settings
from core.timezones import zone_of_user

BATCH = 200


class StatementActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], billing: Billing, settings: Settings) -> None:
        self.sessions = sessions
        self.billing = billing
        self.settings = settings

    @activity.defn
    async def close_month(self, month: date) -> int:
        """Records each user's statement for `month`; returns how many were new."""
        plan = load_plan(self.settings.price_plan)
        recorded, after = 0, None
        while True:
            async with self.sessions() as session:
                query = select(User).order_by(User.id).limit(BATCH)
                users = (await session.execute(query.where(User.id > after) if after else query)).scalars().all()
                for user in users:
                    zone = zone_of_user(user, self.settings.default_time_zone)
                    shown = await month_statement(session, plan, user.id, month, zone)
                    recorded += await self.billing.record_statement(StatementSummary(
                        user_id=user.id, month=month, plan=plan.name, currency=plan.currency,
                        total_cents=int(shown.total_cents), records=len(shown.records),
                        lines=[{"kind": line.kind.value, "quantity": plain_number(line.quantity),
                                "included": plain_number(line.included), "billable": plain_number(line.billable),
                                "amount_cents": int(line.amount_cents)}
                               for line in shown.lines]))
            if len(users) < BATCH:
                return recorded
            after = users[-1].id
            activity.heartbeat(str(after))

    def all(self) -> list[object]:
        return [self.close_month]
