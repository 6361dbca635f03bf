"""DeleteUserWorkflow with time skipping, on a real PostgreSQL: the account closed (signed out
everywhere), its reminders cancelled through their workflows, its agent deleted by its lifecycle
(with its archive), its rows gone and the deletion recorded; the number kept out of use through the
quarantine, then back in the pool; their Google access revoked at Google."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.accounts import AccountActivities
from activities.archive.stores import FolderArchiveStore
from activities.delivery import DeliveryActivities
from activities.integrations.credentials import Credentials
from activities.reminders import ReminderActivities
from activities.runtime.activities import RuntimeActivities
from core.integrations import LOCAL_CLIENTS, Provider
from core.models import AuditEvent, Conversation, Message, OutboxEmail, PhoneNumber, Reminder, User, WebSession, utcnow
from core.ports import AgentSpec, RuntimeState, archive_key
from core.process import free_port
from core.serve import serving
from core.settings import Settings
from emulators.providers import Providers
from emulators.providers import create_app as create_providers_app
from emulators.providers.oauth import Token
from tests.conftest import LocalCarrier, retire_available_numbers
from tests.memory_runtime import MemoryRuntime
from workflows.agent_lifecycle import AgentLifecycleInput, AgentLifecycleWorkflow
from workflows.agent_lifecycle import workflow_id as lifecycle_id
from workflows.delete_user import DeleteUserInput, DeleteUserWorkflow, workflow_id
from workflows.delivery import DeliveryWorkflow
from workflows.reminder import ReminderInput, ReminderWorkflow
from workflows.reminder import workflow_id as reminder_workflow_id

QUARANTINE_DAYS = 90.0


async def test_a_deleted_account_leaves_nothing_and_its_number_returns_only_after_the_quarantine(
        time_skipping_env: WorkflowEnvironment, sessions: async_sessionmaker[AsyncSession], settings: Settings,
        local_carrier: LocalCarrier, tmp_path: Path) -> None:
    client = time_skipping_env.client
    queue = f"delete-{uuid.uuid4().hex[:6]}"
    settings = settings.model_copy(update={"providers_port": free_port()})
    google = Providers(settings.api_base_url)
    user = User(phone_e164=f"+1555{uuid.uuid4().int % 10**7:07d}", agent_name="Nova",
                email=f"nova.{uuid.uuid4().hex[:6]}@example.com")
    number = f"+1628{uuid.uuid4().int % 10**7:07d}"
    async with sessions() as session, session.begin():
        session.add(user)
        await session.flush()
        session.add(PhoneNumber(e164=number, provider_sid=f"PN{uuid.uuid4().hex}", state="assigned", user_id=user.id,
                                assigned_at=utcnow()))
        call = Conversation(user_id=user.id, kind="call", direction="inbound")
        session.add(call)
        await session.flush()
        session.add(Message(conversation_id=call.id, role="user", content="my secret plans"))
        session.add(WebSession(secret_digest="x", user_id=user.id, expires_at=utcnow() + timedelta(days=1)))
        own = AuditEvent(user_id=user.id, actor="api", action="agent.updated", detail={"name": "Nova"})
        viewed = AuditEvent(user_id=user.id, actor="operator", action="operator.viewed_user",
                            detail={"operator": "ops@example.com", "q": user.phone_e164})
        session.add_all([own, viewed])
        session.add(OutboxEmail(to_address=user.email, subject="Your DeepClaw code: 123456", body="..."))
        reminder = Reminder(user_id=user.id, due_at=utcnow() + timedelta(days=200), text="renew passport")
        session.add(reminder)
    # Their Google calendar connected: a grant the Google stand-in issued, sealed in their row.
    client_id = LOCAL_CLIENTS["google"][0]
    issued = Token("access-1", "refresh-1", client_id, "nova@example.com", "calendar", time.time() + 3600)
    google.google_tokens.by_access[issued.access_token] = google.google_tokens.by_refresh["refresh-1"] = issued
    await Credentials(settings, sessions).save(user.id, Provider.GOOGLE, {
        "access_token": "access-1", "refresh_token": "refresh-1", "expires_at": issued.expires_at})
    runtime = MemoryRuntime()
    store = FolderArchiveStore(tmp_path / "archive")
    (tmp_path / "archive" / "agents" / user.id.hex).mkdir(parents=True)
    (tmp_path / "archive" / archive_key(user.id)).write_bytes(b"an old archive")
    async with serving(create_providers_app(google), "127.0.0.1", settings.providers_port), \
            Worker(client, task_queue=queue,
                      workflows=[DeleteUserWorkflow, AgentLifecycleWorkflow, ReminderWorkflow, DeliveryWorkflow],
                      activities=[*AccountActivities(sessions, Credentials(settings, sessions)).all(),
                                  *RuntimeActivities(runtime, store, sessions, "local").all(),
                                  *ReminderActivities(sessions, None).all(),  # type: ignore[arg-type]
                                  *DeliveryActivities(local_carrier.telephony, sessions, settings).all()]):
        lifecycle = await client.start_workflow(
            AgentLifecycleWorkflow.run, AgentLifecycleInput(spec=AgentSpec(user_id=user.id), user_phone=user.phone_e164,
                                                            agent_number=number),
            id=lifecycle_id(user.id), task_queue=queue)
        await client.start_workflow(ReminderWorkflow.run, ReminderInput(
            reminder_id=reminder.id, user_id=user.id, text=reminder.text, due_at=reminder.due_at, time_zone="UTC"),
            id=reminder_workflow_id(reminder.id), task_queue=queue)
        await lifecycle.execute_update(AgentLifecycleWorkflow.ensure_awake)
        assert runtime.states[user.id] == RuntimeState.RUNNING

        deletion = await client.start_workflow(
            DeleteUserWorkflow.run, DeleteUserInput(user_id=user.id, requested_by="user", quarantine_days=QUARANTINE_DAYS),
            id=workflow_id(user.id), task_queue=queue)
        # Before the quarantine ends (time skips only while a result is awaited): the user is gone, the
        # number belongs to no one and is not available.
        for _ in range(400):
            async with sessions() as session:
                if await session.get(User, user.id) is None:
                    break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the user was never deleted")
        async with sessions() as session:
            row = (await session.execute(select(PhoneNumber).where(PhoneNumber.e164 == number))).scalar_one()
            assert await session.get(User, user.id) is None
            assert (row.state, row.user_id) == ("releasing", None)
            assert (await session.execute(select(Message).where(Message.conversation_id == call.id))).all() == []
            assert (await session.execute(select(WebSession).where(WebSession.user_id == user.id))).all() == []
            # Their own audit trail goes; operators' actions on them stay, cut to who did what, when.
            audit = (await session.execute(select(AuditEvent.action, AuditEvent.detail).where(
                AuditEvent.id.in_([own.id, viewed.id])))).all()  # type: ignore[union-attr]
            assert audit == [("operator.viewed_user", {"operator": "ops@example.com"})]
            assert (await session.execute(select(OutboxEmail).where(OutboxEmail.to_address == user.email))).all() == []
        assert runtime.states.get(user.id, RuntimeState.ABSENT) == RuntimeState.ABSENT
        assert google.google_tokens.revoked == ["nova@example.com"], "the calendar access revoked at Google"
        assert not (tmp_path / "archive" / archive_key(user.id)).exists()

        result = await deletion.result()  # the 90 days pass (time skipping)
        assert result.deleted and result.reminders_cancelled == 1 and result.number == number and result.number_returned
        history = await deletion.fetch_history()
        timers = [e for e in history.events if e.HasField("timer_started_event_attributes")]
        assert timers and timers[0].timer_started_event_attributes.start_to_fire_timeout.ToTimedelta() == \
            timedelta(days=QUARANTINE_DAYS)
    async with sessions() as session:
        row = (await session.execute(select(PhoneNumber).where(PhoneNumber.e164 == number))).scalar_one()
        recorded = (await session.execute(select(AuditEvent).where(AuditEvent.action == "user.deleted",
                                                                   AuditEvent.workflow_id == workflow_id(user.id)))
                    ).scalar_one()
        cancelled = await session.get(Reminder, reminder.id)
    assert (row.state, row.user_id) == ("available", None)
    assert recorded.detail == {"user_id": str(user.id), "requested_by": "user"} and recorded.user_id is None
    assert cancelled is None  # deleted with the user, after its workflow cancelled it
    reminder_run = await client.get_workflow_handle(reminder_workflow_id(reminder.id)).result()
    assert reminder_run == "cancelled"
    await retire_available_numbers(sessions)  # the shared database's pool is other tests' to fill
