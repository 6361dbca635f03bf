"""Closing a month: each user's statement, in their own time zone, recorded once by the Billing
port's local adapter; the worker keeps a Temporal Schedule that closes every month."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.billing.local import LocalBilling
from activities.statements import StatementActivities
from core.billing import load_plan, month_statement
from core.models import BillingStatement, User
from core.settings import Settings
from core.usage import UsageKind, record_usage
from workers.main import ensure_statement_schedule
from workflows.close_month import CRON, SCHEDULE_ID, CloseMonthInput, CloseMonthWorkflow, previous_month

NOVEMBER = date(2026, 11, 1)


async def _user_with_usage(sessions: async_sessionmaker[AsyncSession], zone: str, seconds: int) -> User:
    user = User(phone_e164=f"+1555{uuid.uuid4().int % 10**7:07d}", time_zone=zone)
    start = datetime(2026, 11, 1, tzinfo=ZoneInfo(zone))
    async with sessions() as session, session.begin():
        session.add(user)
        await session.flush()
        await record_usage(session, user_id=user.id, kind=UsageKind.CALL_SECONDS_OUT, quantity=seconds,
                           source=f"test:{user.id}:1", occurred_at=start + timedelta(hours=1))
        # Just before November in their zone (still October there): not November's.
        await record_usage(session, user_id=user.id, kind=UsageKind.CALL_SECONDS_OUT, quantity=7777,
                           source=f"test:{user.id}:0", occurred_at=start - timedelta(minutes=1))
    return user


async def test_closing_a_month_records_each_users_statement_once(
        time_skipping_env: WorkflowEnvironment, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
    tokyo = await _user_with_usage(sessions, "Asia/Tokyo", 4000)
    honolulu = await _user_with_usage(sessions, "Pacific/Honolulu", 9000)
    queue = f"close-{uuid.uuid4().hex[:6]}"
    activities = StatementActivities(sessions, LocalBilling(sessions), settings)
    async with Worker(time_skipping_env.client, task_queue=queue, workflows=[CloseMonthWorkflow],
                      activities=activities.all()):
        first = await time_skipping_env.client.execute_workflow(
            CloseMonthWorkflow.run, CloseMonthInput(month=NOVEMBER), id=f"close-{uuid.uuid4()}", task_queue=queue)
        again = await time_skipping_env.client.execute_workflow(
            CloseMonthWorkflow.run, CloseMonthInput(month=NOVEMBER), id=f"close-{uuid.uuid4()}", task_queue=queue)
    assert first >= 2 and again == 0  # every user once (other tests' users too), and nothing twice
    plan = load_plan(settings.price_plan)
    async with sessions() as session:
        for user, zone in ((tokyo, "Asia/Tokyo"), (honolulu, "Pacific/Honolulu")):
            row = (await session.execute(select(BillingStatement).where(
                BillingStatement.user_id == user.id, BillingStatement.month == NOVEMBER))).scalar_one()
            expected = await month_statement(session, plan, user.id, NOVEMBER, zone)
            assert row.total_cents == expected.total_cents and row.records == 1  # October's minute left out
            calls_out = next(line for line in row.lines if line["kind"] == "call_seconds_out")
            assert calls_out["quantity"] == str(4000 if user is tokyo else 9000)


def test_the_month_closed_is_the_one_before() -> None:
    assert previous_month(date(2027, 1, 1)) == date(2026, 12, 1)
    assert previous_month(date(2026, 12, 1)) == NOVEMBER


async def test_the_worker_keeps_one_schedule_that_closes_every_month(temporal_env: WorkflowEnvironment,
                                                                     settings: Settings) -> None:
    client = temporal_env.client
    await ensure_statement_schedule(client, settings)
    await ensure_statement_schedule(client, settings)  # a second worker (or a restart) changes nothing
    described = await client.get_schedule_handle(SCHEDULE_ID).describe()
    assert described.schedule.action.workflow == "CloseMonthWorkflow"  # type: ignore[union-attr]
    # CRON ("0 14 1 * *"): the 1st of each month at 14:00 UTC, when the month has ended everywhere.
    upcoming = described.info.next_action_times
    assert upcoming and all((t.astimezone(UTC).day, t.astimezone(UTC).hour, t.minute) == (1, 14, 0) for t in upcoming)
    assert CRON == "0 14 1 * *"
