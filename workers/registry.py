"""What the platform's task queue runs. One place, so the worker process and tests agree."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activities import adapters
from activities.runtime.activities import RuntimeActivities
from activities.store import StoreActivities
from core.settings import Settings
from workflows.agent_lifecycle import AgentLifecycleWorkflow

WORKFLOWS: Sequence[type] = (AgentLifecycleWorkflow,)


@asynccontextmanager
async def activities(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[list[object]]:
    """The activities with their adapters, started and, on exit, closed (gateways stopped)."""
    runtime = adapters.agent_runtime(settings)
    await runtime.start()
    try:
        store = StoreActivities(sessions)
        runtime_activities = RuntimeActivities(runtime, adapters.archive_store(settings), sessions,
                                               settings.agent_runtime.value)
        yield [store.record_audit_event, *runtime_activities.all()]
    finally:
        await runtime.close()
