"""What the platform's task queue runs. One place, so the worker process and tests agree."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import composition
from activities.accounts import AccountActivities
from activities.agent_chat import AgentChat
from activities.integrations.credentials import Credentials
from activities.delivery import DeliveryActivities
from activities.follow_ups import FollowUpActivities
from activities.numbers.pool import NumberPoolActivities
from activities.onboarding.calls import HotlineCallActivities
from activities.onboarding.verification import VerificationActivities
from activities.reminders import ReminderActivities
from activities.retention import RetentionActivities
from activities.statements import StatementActivities
from activities.runtime.activities import RuntimeActivities
from activities.store import StoreActivities
from activities.texts import TextActivities
from activities.users import UserActivities
from core.callbacks import agent_mcp_servers
from core.ports import AgentRuntime
from core.settings import Settings
from workflows.agent_lifecycle import AgentLifecycleWorkflow
from workflows.close_month import CloseMonthWorkflow
from workflows.delete_user import DeleteUserWorkflow
from workflows.delivery import DeliveryWorkflow
from workflows.export_memory import ExportMemoryWorkflow
from workflows.follow_up import FollowUpWorkflow
from workflows.hotline_setup import HotlineSetupWorkflow
from workflows.number_pool import NumberPoolWorkflow
from workflows.onboarding import OnboardingWorkflow
from workflows.provision_user import ProvisionUserWorkflow
from workflows.reminder import ReminderWorkflow
from workflows.retention import RetentionWorkflow
from workflows.sms_conversation import SmsConversationWorkflow

WORKFLOWS: Sequence[type] = (AgentLifecycleWorkflow, CloseMonthWorkflow, DeleteUserWorkflow, DeliveryWorkflow, ExportMemoryWorkflow,
                             FollowUpWorkflow, HotlineSetupWorkflow, NumberPoolWorkflow, OnboardingWorkflow, ProvisionUserWorkflow,
                             ReminderWorkflow, RetentionWorkflow, SmsConversationWorkflow)


@dataclass
class WorkerParts:
    activities: list[object]
    runtime: AgentRuntime  # its warm spares go into the worker's heartbeat


@asynccontextmanager
async def activities(settings: Settings, sessions: async_sessionmaker[AsyncSession], *,
                     runtime: AgentRuntime | None = None) -> AsyncIterator[WorkerParts]:
    """The activities with their adapters, started and, on exit, closed (gateways stopped)."""
    runtime = runtime or composition.agent_runtime(settings, sessions)
    telephony = composition.telephony(settings)
    agent = AgentChat(settings, sessions)
    await runtime.start()
    try:
        store = StoreActivities(sessions)
        runtime_activities = RuntimeActivities(runtime, composition.archive_store(settings), sessions,
                                               settings.agent_runtime.value,
                                               mcp_servers=lambda user_id: agent_mcp_servers(settings, sessions, user_id))
        pool = NumberPoolActivities(telephony, sessions, voice_url=f"{settings.api_base_url}/twilio/voice",
                                    sms_url=f"{settings.api_base_url}/twilio/sms")
        verification = VerificationActivities(telephony, composition.mailer(settings, sessions), keyring=settings.keyring)
        yield WorkerParts([store.record_audit_event, *runtime_activities.all(), *pool.all(), *verification.all(),
                           *HotlineCallActivities(telephony, settings).all(), *UserActivities(sessions).all(),
                           *ReminderActivities(sessions, agent).all(), *DeliveryActivities(telephony, sessions, settings).all(),
                           *TextActivities(telephony, sessions, settings, agent).all(),
                           *FollowUpActivities(agent).all(), *AccountActivities(sessions, Credentials(settings, sessions)).all(),
                           *StatementActivities(sessions, composition.billing(sessions), settings).all(),
                           *RetentionActivities(sessions, settings).all()], runtime)
    finally:
        await runtime.close()
        await agent.close()
        await telephony.close()
