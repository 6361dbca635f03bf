"""ReminderWorkflow with time skipping: a repeating reminder continues as new for each occurrence
and is delivered once per occurrence; cancel is an Update that says whether it took effect."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.enums.v1 import EventType
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.delivery import DeliveryActivities
from activities.reminders import ReminderActivities
from core.models import Delivery, Reminder, User
from core.settings import Settings
from emulators.demo_model import answer_words
from tests.conftest import LocalCarrier
from workflows.delivery import DeliveryWorkflow
from workflows.reminder import ReminderInput, ReminderWorkflow, workflow_id


class DemoAgent:
    async def ask(self, user_id: uuid.UUID, messages: list[dict[str, Any]], *, session_key: str) -> str:
        return answer_words(messages[-1]["content"], [], on_a_call=False).text


@pytest.fixture
def user(owner: tuple[User, str]) -> User:
    return owner[0]


async def _reminder(sessions: async_sessionmaker[AsyncSession], user: User, text: str, due: datetime,
                    recurrence: str | None = None) -> Reminder:
    reminder = Reminder(user_id=user.id, due_at=due, text=text, recurrence=recurrence, time_zone="America/New_York")
    async with sessions() as session, session.begin():
        session.add(reminder)
    return reminder


async def test_a_repeating_reminder_is_delivered_once_per_occurrence(
        time_skipping_env: WorkflowEnvironment, settings: Settings, sessions: async_sessionmaker[AsyncSession],
        local_carrier: LocalCarrier, user: User) -> None:
    client = time_skipping_env.client
    queue = f"reminders-{uuid.uuid4().hex[:6]}"
    first = (await time_skipping_env.get_current_time() + timedelta(days=1)).replace(microsecond=0)
    reminder = await _reminder(sessions, user, "take your vitamins", first, "FREQ=DAILY;COUNT=3")
    async with Worker(client, task_queue=queue, workflows=[ReminderWorkflow, DeliveryWorkflow],
                      activities=[*ReminderActivities(sessions, DemoAgent()).all(),  # type: ignore[arg-type]
                                  *DeliveryActivities(local_carrier.telephony, sessions, settings).all()]):
        handle = await client.start_workflow(ReminderWorkflow.run, ReminderInput(
            reminder_id=reminder.id, user_id=user.id, text=reminder.text, due_at=first, time_zone="America/New_York",
            recurrence=reminder.recurrence), id=workflow_id(reminder.id), task_queue=queue)
        assert await handle.result() == "fired"  # three days skipped, one run per occurrence
        first_run = await client.get_workflow_handle(workflow_id(reminder.id), run_id=handle.first_execution_run_id).fetch_history()
        last_run = await client.get_workflow_handle(workflow_id(reminder.id)).describe()
    assert first_run.events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
    assert last_run.run_id != handle.first_execution_run_id
    assert local_carrier.texts_to(user.phone_e164) == ["Hi! Here's your reminder: take your vitamins."] * 3
    async with sessions() as session:
        deliveries = (await session.scalars(select(Delivery).where(Delivery.reminder_id == reminder.id)
                                            .order_by(Delivery.occurrence))).all()
        row = await session.get(Reminder, reminder.id)
    assert [(d.occurrence, d.outcome) for d in deliveries] == [(0, "texted"), (1, "texted"), (2, "texted")]
    assert row is not None and (row.state, row.occurrences) == ("fired", 3)


async def test_cancel_says_whether_it_took_effect(
        time_skipping_env: WorkflowEnvironment, settings: Settings, sessions: async_sessionmaker[AsyncSession],
        local_carrier: LocalCarrier, user: User) -> None:
    client = time_skipping_env.client
    queue = f"reminders-{uuid.uuid4().hex[:6]}"
    due = await time_skipping_env.get_current_time() + timedelta(hours=5)  # the server's clock has skipped ahead
    reminder = await _reminder(sessions, user, "call the plumber", due)
    async with Worker(client, task_queue=queue, workflows=[ReminderWorkflow, DeliveryWorkflow],
                      activities=[*ReminderActivities(sessions, DemoAgent()).all(),  # type: ignore[arg-type]
                                  *DeliveryActivities(local_carrier.telephony, sessions, settings).all()]):
        handle = await client.start_workflow(ReminderWorkflow.run, ReminderInput(
            reminder_id=reminder.id, user_id=user.id, text=reminder.text, due_at=due), id=workflow_id(reminder.id),
            task_queue=queue)
        change = await handle.execute_update(ReminderWorkflow.cancel)
        assert change.took_effect and change.state == "cancelled"
        assert await handle.result() == "cancelled"
        with pytest.raises(RPCError):  # it is over: nothing left to change
            await handle.execute_update(ReminderWorkflow.cancel)
    assert local_carrier.texts_to(user.phone_e164) == []
    async with sessions() as session:
        assert (await session.get(Reminder, reminder.id)).state == "cancelled"  # type: ignore[union-attr]
