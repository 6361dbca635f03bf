"""What the platform's task queue runs. One place, so the worker process and tests agree."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activities import adapters
from activities.numbers.pool import NumberPoolActivities
from activities.runtime.activities import RuntimeActivities
from activities.store import StoreActivities
from core.settings import Settings
from workflows.agent_lifecycle import AgentLifecycleWorkflow
from workflows.number_pool import NumberPoolWorkflow

WORKFLOWS: Sequence[type] = (AgentLifecycleWorkflow, NumberPoolWorkflow)


@asynccontextmanager
async def activities(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[list[object]]:
    """The activities with their adapters, started and, on exit, closed (gateways stopped)."""
    runtime = adapters.agent_runtime(settings)
    telephony = adapters.telephony(settings)
    await runtime.start()
    try:
        store = StoreActivities(sessions)
        runtime_activities = RuntimeActivities(runtime, adapters.archive_store(settings), sessions,
                                               settings.agent_runtime.value)
        pool = NumberPoolActivities(telephony, sessions, voice_url=f"{settings.api_base_url}/twilio/voice",
                                    sms_url=f"{settings.api_base_url}/twilio/sms")
        yield [store.record_audit_event, *runtime_activities.all(), *pool.all()]
    finally:
        await runtime.close()
        await telephony.close()
