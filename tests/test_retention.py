"""Retention: the daily RetentionWorkflow (real Temporal, real PostgreSQL) removes transcripts, texts,
what was sent, answered confirmations and audit events past their periods, and spent codes and
sessions, and keeps everything younger; the worker keeps a Temporal Schedule that runs it daily."""

from __future__ import annotations

import uuid
from datetime import UTC, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import ScheduleActionStartWorkflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.retention import RetentionActivities
from core.models import (
    AuditEvent,
    Conversation,
    Delivery,
    Message,
    PendingAction,
    SignInCode,
    UsageRecord,
    User,
    WebSession,
    utcnow,
)
from core.settings import Settings
from workers.main import ensure_retention_schedule
from workflows.retention import CRON, SCHEDULE_ID, RetentionWorkflow


def _ago(days: float):  # type: ignore[no-untyped-def]
    return utcnow() - timedelta(days=days)


async def test_what_is_past_its_period_goes_and_the_rest_stays(
        temporal_env: WorkflowEnvironment, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
    settings = settings.model_copy(update={"retain_call_transcripts_days": 30, "retain_texts_days": 60,
                                           "retain_audit_days": 90})
    user = User(phone_e164=f"+1555{uuid.uuid4().int % 10**7:07d}", agent_name="Rex", phone_verified=True)
    marker = uuid.uuid4().hex[:8]
    async with sessions() as session, session.begin():
        session.add(user)
        await session.flush()
        rows: dict[str, Conversation] = {}
        for name, kind, age in (("old call", "call", 31), ("new call", "call", 29),
                                ("old text", "sms", 61), ("new text", "sms", 59)):
            conversation = Conversation(user_id=user.id, kind=kind, direction="inbound", started_at=_ago(age))
            session.add(conversation)
            await session.flush()
            session.add(Message(conversation_id=conversation.id, role="user", content=f"{name} {marker}",
                                created_at=_ago(age)))
            rows[name] = conversation
        session.add(UsageRecord(user_id=user.id, kind="call_seconds_in", quantity=60,
                                conversation_id=rows["old call"].id, source=f"call:{marker}"))
        for age in (61, 59):
            session.add(Delivery(id=uuid.uuid4(), user_id=user.id, requested="sms", text=f"sent {age} {marker}",
                                 created_at=_ago(age)))
            session.add(PendingAction(user_id=user.id, provider="google", kind="send_mail", target="d1",
                                      summary=f"send it {age} {marker}", reference=str(age), state="done",
                                      created_at=_ago(age), expires_at=_ago(age - 1)))
        session.add(PendingAction(user_id=user.id, provider="google", kind="send_mail", target="d2",
                                  summary=f"still waiting {marker}", reference="7", created_at=_ago(61),
                                  expires_at=utcnow() + timedelta(hours=1)))
        for age in (91, 89):
            session.add(AuditEvent(user_id=user.id, actor="test", action=f"audit {age} {marker}", created_at=_ago(age)))
        session.add(SignInCode(address_digest=f"spent-{marker}", code_digest="x", expires_at=_ago(8)))
        session.add(SignInCode(address_digest=f"fresh-{marker}", code_digest="x", expires_at=_ago(1)))
        session.add(WebSession(secret_digest="x", user_id=user.id, expires_at=_ago(8)))

    queue = f"retention-{uuid.uuid4().hex[:6]}"
    async with Worker(temporal_env.client, task_queue=queue, workflows=[RetentionWorkflow],
                      activities=RetentionActivities(sessions, settings).all()):
        removed = await temporal_env.client.execute_workflow(RetentionWorkflow.run, id=f"retention-{uuid.uuid4()}",
                                                             task_queue=queue)
    assert removed["calls"] >= 1 and removed["texts"] >= 1 and removed["audit"] >= 1, removed

    async with sessions() as session:
        left = set((await session.execute(select(Message.content).where(
            Message.content.like(f"%{marker}")))).scalars())  # type: ignore[attr-defined]
        assert left == {f"new call {marker}", f"new text {marker}"}
        sent = set((await session.execute(select(Delivery.text).where(Delivery.user_id == user.id))).scalars())
        assert sent == {f"sent 59 {marker}"}
        asked = set((await session.execute(select(PendingAction.summary).where(
            PendingAction.user_id == user.id))).scalars())
        assert asked == {f"send it 59 {marker}", f"still waiting {marker}"}, "a pending one stays however old"
        audit = set((await session.execute(select(AuditEvent.action).where(AuditEvent.user_id == user.id))).scalars())
        assert audit == {f"audit 89 {marker}"}
        codes = set((await session.execute(select(SignInCode.address_digest).where(
            SignInCode.address_digest.like(f"%{marker}")))).scalars())  # type: ignore[attr-defined]
        assert codes == {f"fresh-{marker}"}
        assert (await session.execute(select(func.count()).select_from(WebSession).where(
            WebSession.user_id == user.id))).scalar_one() == 0
        usage = (await session.execute(select(UsageRecord).where(UsageRecord.source == f"call:{marker}"))).scalar_one()
        assert usage.quantity == 60 and usage.conversation_id is None, "billing keeps its records"


async def test_the_worker_keeps_a_daily_schedule_for_it(temporal_env: WorkflowEnvironment, settings: Settings) -> None:
    await ensure_retention_schedule(temporal_env.client, settings)
    await ensure_retention_schedule(temporal_env.client, settings)  # a second worker start changes nothing
    handle = temporal_env.client.get_schedule_handle(SCHEDULE_ID)
    described = await handle.describe()
    upcoming = described.info.next_action_times  # CRON: daily at 03:30 UTC
    assert CRON == "30 3 * * *" and upcoming
    assert all((t.astimezone(UTC).hour, t.minute) == (3, 30) for t in upcoming)
    assert len({t.date() for t in upcoming}) == len(upcoming), "once a day"
    action = described.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow) and action.workflow == "RetentionWorkflow"
    await handle.delete()
