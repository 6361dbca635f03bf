"""A reminder a few seconds out survives a worker restart and a Temporal restart (the dev server on
its own database file, as `make run` keeps it; the time-skipping server keeps nothing across a
restart) and fires exactly once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker

from activities.delivery import DeliveryActivities
from activities.reminders import ReminderActivities
from core.models import Delivery, PhoneNumber, Reminder, User
from core.process import free_port
from core.settings import Settings
from devstack.temporal import TemporalDevServer
from tests.conftest import PLATFORM_CONVERTER, LocalCarrier, unique_area_code
from workflows.delivery import DeliveryWorkflow
from workflows.reminder import ReminderInput, ReminderWorkflow, workflow_id


class SleepingAgent:
    """An agent that cannot answer: the reminder goes out plain."""

    async def ask(self, user_id: uuid.UUID, messages: list[dict[str, Any]], *, session_key: str) -> str:
        raise RuntimeError("the agent is not there")


async def test_a_reminder_survives_worker_and_temporal_restarts_and_fires_once(
        tmp_path: Path, settings: Settings, sessions: async_sessionmaker[AsyncSession],
        local_carrier: LocalCarrier) -> None:
    server = TemporalDevServer(tmp_path / "temporal.db", host="127.0.0.1", port=free_port(), ui_port=free_port(),
                               log_path=tmp_path / "temporal.log")
    telephony = local_carrier.telephony
    [number] = await telephony.search_numbers(area_code=unique_area_code(), limit=1)
    owned = await telephony.buy_number(number, voice_url="http://127.0.0.1:9/voice", sms_url="")
    user = User(phone_e164=f"+1555{uuid.uuid4().int % 10**7:07d}", agent_name="Nova")
    async with sessions() as session, session.begin():
        session.add(user)
        await session.flush()
        session.add(PhoneNumber(e164=owned.e164, provider_sid=owned.sid, state="assigned", user_id=user.id))
    due = datetime.now(UTC) + timedelta(seconds=8)
    reminder = Reminder(user_id=user.id, due_at=due, text="take the bread out")
    async with sessions() as session, session.begin():
        session.add(reminder)
    activities = [*ReminderActivities(sessions, SleepingAgent()).all(),  # type: ignore[arg-type]
                  *DeliveryActivities(telephony, sessions, settings).all()]

    def worker(client: Client) -> Worker:
        return Worker(client, task_queue="restarts", workflows=[ReminderWorkflow, DeliveryWorkflow],
                      activities=activities)

    async def connect() -> Client:
        return await Client.connect(server.address, data_converter=PLATFORM_CONVERTER)

    await server.start()
    try:
        client = await connect()
        await client.start_workflow(ReminderWorkflow.run, ReminderInput(
            reminder_id=reminder.id, user_id=user.id, text=reminder.text, due_at=due, lead_s=0),
            id=workflow_id(reminder.id), task_queue="restarts")
        async with worker(client):
            await asyncio.sleep(1)  # it takes the workflow and starts its timer
        await server.stop()  # the worker went first; now Temporal goes too
        assert not local_carrier.texts_to(user.phone_e164), "nothing fired while they were down"
        await server.start()
        client = await connect()
        async with worker(client):
            result = await asyncio.wait_for(client.get_workflow_handle(workflow_id(reminder.id)).result(), 60)
            await asyncio.sleep(2)  # time for a second text, were one to come
    finally:
        await server.stop()
    assert result == "fired"
    assert local_carrier.texts_to(user.phone_e164) == ["Reminder: take the bread out"]
    async with sessions() as session:
        deliveries = (await session.execute(select(func.count()).where(Delivery.user_id == user.id))).scalar_one()
        row = await session.get(Reminder, reminder.id)
    assert deliveries == 1 and row is not None and (row.state, row.occurrences) == ("fired", 1)
