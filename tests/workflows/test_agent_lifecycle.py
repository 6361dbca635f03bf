"""AgentLifecycleWorkflow on Temporal's time-skipping server and real PostgreSQL.

The runtime behind the activities is an in-memory AgentRuntime (the real local runtime is tested
with real OpenClaw in tests/activities/test_local_runtime.py); here the subject is orchestration.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateStage
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.archive.stores import FolderArchiveStore
from activities.runtime.activities import RuntimeActivities
from api.routes.mcp import user_of_token
from core.callbacks import PLATFORM_MCP_NAME, agent_mcp_servers, revoke_mcp_tokens
from core.models import AgentInstance, AuditEvent, UsageRecord, User
from core.ports import AgentSpec, RuntimeState
from core.settings import Settings
from core.temporal import AGENT_NUMBER, LIFECYCLE_STATE, USER_ID, USER_PHONE
from tests.memory_runtime import MemoryRuntime
from workflows.agent_lifecycle import (
    AgentLifecycleInput,
    AgentLifecycleWorkflow,
    LifecycleState,
    workflow_id,
)

TASK_QUEUE = "lifecycle-test"


@pytest.fixture
async def runtime() -> MemoryRuntime:
    return MemoryRuntime()


@pytest.fixture
async def worker(
    time_skipping_env: WorkflowEnvironment, runtime: MemoryRuntime, sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> AsyncIterator[Client]:
    activities = RuntimeActivities(runtime, FolderArchiveStore(tmp_path), sessions, "local")
    async with Worker(time_skipping_env.client, task_queue=TASK_QUEUE, workflows=[AgentLifecycleWorkflow],
                      activities=activities.all()):
        yield time_skipping_env.client


async def _new_user(sessions: async_sessionmaker[AsyncSession]) -> User:
    user = User(phone_e164=f"+1555{uuid.uuid4().int % 10**7:07d}")
    async with sessions() as session, session.begin():
        session.add(user)
    return user


async def _start(client: Client, user: User, **extra: object) -> WorkflowHandle:
    spec = AgentSpec(user_id=user.id, agent_name="Nova")
    return await client.start_workflow(
        AgentLifecycleWorkflow.run,
        AgentLifecycleInput(spec=spec, user_phone=user.phone_e164, agent_number="+14155550123", **extra),
        id=workflow_id(user.id), task_queue=TASK_QUEUE)


async def _state(handle: WorkflowHandle) -> LifecycleState:
    return await handle.query(AgentLifecycleWorkflow.current_state)


async def _eventually(handle: WorkflowHandle, state: LifecycleState) -> None:
    for _ in range(100):
        if await _state(handle) == state:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never reached {state}; still {await _state(handle)}")


async def test_a_user_walks_through_every_state_and_back(
    worker: Client, time_skipping_env: WorkflowEnvironment, runtime: MemoryRuntime,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    user = await _new_user(sessions)
    handle = await _start(worker, user)
    endpoint = await handle.execute_update(AgentLifecycleWorkflow.ensure_awake)
    assert endpoint.base_url.startswith("http://127.0.0.1")
    assert await _state(handle) == LifecycleState.RUNNING

    # Activity keeps it running; ten quiet minutes make it Idle.
    await time_skipping_env.sleep(timedelta(minutes=8))
    await handle.signal(AgentLifecycleWorkflow.touch)
    await time_skipping_env.sleep(timedelta(minutes=8))
    assert await _state(handle) == LifecycleState.RUNNING
    await time_skipping_env.sleep(timedelta(minutes=3))
    await _eventually(handle, LifecycleState.IDLE)
    assert runtime.states[user.id] == RuntimeState.PAUSED

    await handle.execute_update(AgentLifecycleWorkflow.ensure_awake)
    assert await _state(handle) == LifecycleState.RUNNING

    await time_skipping_env.sleep(timedelta(hours=2, minutes=1))
    await _eventually(handle, LifecycleState.SLEEPING)
    assert runtime.states[user.id] == RuntimeState.STOPPED
    await handle.execute_update(AgentLifecycleWorkflow.ensure_awake)
    assert await _state(handle) == LifecycleState.RUNNING

    await time_skipping_env.sleep(timedelta(days=31))
    await _eventually(handle, LifecycleState.ARCHIVED)
    assert runtime.calls["archive"] == 1

    # Two callers at once share one restore and one wake.
    wakes_before = runtime.calls["wake"]
    first, second = await asyncio.gather(
        handle.execute_update(AgentLifecycleWorkflow.ensure_awake),
        handle.execute_update(AgentLifecycleWorkflow.ensure_awake),
    )
    assert first == second
    assert runtime.calls["restore"] == 1 and runtime.calls["wake"] - wakes_before == 1
    assert await _state(handle) == LifecycleState.RUNNING

    description = await handle.describe()
    attributes = description.typed_search_attributes
    assert attributes.get(LIFECYCLE_STATE) == "Running" and attributes.get(USER_ID) == str(user.id)
    assert attributes.get(USER_PHONE) == user.phone_e164 and attributes.get(AGENT_NUMBER) == "+14155550123"

    async with sessions() as session:
        actions = (await session.execute(select(AuditEvent.action).where(AuditEvent.user_id == user.id)
                                         .order_by(AuditEvent.id))).scalars().all()
        agent = (await session.execute(select(AgentInstance).where(AgentInstance.user_id == user.id))).scalar_one()
    assert actions == ["agent.provisioning", "agent.running", "agent.idle", "agent.running", "agent.idle",
                       "agent.sleeping", "agent.running", "agent.idle", "agent.sleeping", "agent.archived",
                       "agent.running"]
    assert agent.state == "running" and agent.endpoint == endpoint.base_url
    # Awake time (Running and Idle) is usage, measured on the workflow's clock: two periods ended in
    # Sleeping, each over two hours (the idle stretch alone is two); the third is still open.
    async with sessions() as session:
        awake = (await session.execute(select(UsageRecord).where(UsageRecord.user_id == user.id)
                                       .order_by(UsageRecord.occurred_at))).scalars().all()
    assert [r.kind for r in awake] == ["awake_seconds", "awake_seconds"]
    assert all(2 * 3600 <= r.quantity < 3 * 3600 for r in awake), [r.quantity for r in awake]
    assert agent.awake_since is not None
    await handle.terminate()


async def test_a_sleeping_agent_wakes_on_the_configuration_the_platform_renders_today(
    time_skipping_env: WorkflowEnvironment, runtime: MemoryRuntime, sessions: async_sessionmaker[AsyncSession],
    settings: Settings, tmp_path: Path,
) -> None:
    """An agent created, then asleep while the platform's rendering changed (here: its MCP token was
    revoked): its next wake runs on a config rendered again, with the platform's MCP server as today."""
    activities = RuntimeActivities(runtime, FolderArchiveStore(tmp_path), sessions, "local",
                                   mcp_servers=lambda user_id: agent_mcp_servers(settings, sessions, user_id))
    user = await _new_user(sessions)
    async with Worker(time_skipping_env.client, task_queue=TASK_QUEUE, workflows=[AgentLifecycleWorkflow],
                      activities=activities.all()):
        handle = await _start(time_skipping_env.client, user)
        await handle.execute_update(AgentLifecycleWorkflow.ensure_awake)
        created = runtime.specs[user.id].mcp_servers[0]
        await time_skipping_env.sleep(timedelta(hours=2, minutes=15))
        await _eventually(handle, LifecycleState.SLEEPING)
        await revoke_mcp_tokens(sessions, user.id)
        await handle.execute_update(AgentLifecycleWorkflow.ensure_awake)
        woken = runtime.specs[user.id].mcp_servers[0]
        assert woken.name == PLATFORM_MCP_NAME and woken.url == created.url
        assert woken.headers != created.headers, "the wake rendered the platform's server again"
        bearer = woken.headers["Authorization"].removeprefix("Bearer ")
        assert await user_of_token(bearer, settings, sessions) == user.id, "a token of the current generation"
        await handle.terminate()


async def test_settings_and_continue_as_new_keep_the_state(
    worker: Client, time_skipping_env: WorkflowEnvironment, runtime: MemoryRuntime,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    user = await _new_user(sessions)
    handle = await _start(worker, user, max_history_events=60)
    await handle.execute_update(AgentLifecycleWorkflow.ensure_awake)
    first_run = (await handle.describe()).run_id
    for _ in range(15):
        await handle.execute_update(AgentLifecycleWorkflow.ensure_awake)
    renamed = AgentSpec(user_id=user.id, agent_name="Orion", personality="formal")
    await handle.execute_update(AgentLifecycleWorkflow.apply_settings, renamed)
    assert runtime.specs[user.id].agent_name == "Orion"
    latest = worker.get_workflow_handle(workflow_id(user.id))
    assert (await latest.describe()).run_id != first_run, "long histories continue as new"
    assert await _state(latest) == LifecycleState.RUNNING
    await time_skipping_env.sleep(timedelta(minutes=11))
    await _eventually(latest, LifecycleState.IDLE)
    await latest.terminate()


async def test_waking_an_unknown_agent_fails_clearly(
    worker: Client, runtime: MemoryRuntime, sessions: async_sessionmaker[AsyncSession],
) -> None:
    user = await _new_user(sessions)
    handle = await _start(worker, user)
    await handle.execute_update(AgentLifecycleWorkflow.ensure_awake)  # provisioned and awake
    runtime.states.pop(user.id)  # the agent's state vanished underneath
    from temporalio.client import WorkflowUpdateFailedError

    with pytest.raises(WorkflowUpdateFailedError) as failed:
        await handle.execute_update(AgentLifecycleWorkflow.ensure_awake)
    assert "could not be woken" in str(failed.value.cause)
    assert await _state(handle) == LifecycleState.RUNNING
    await handle.terminate()


async def test_removal_waits_for_the_step_in_flight_then_deletes_the_agent(
    worker: Client, runtime: MemoryRuntime, sessions: async_sessionmaker[AsyncSession],
) -> None:
    from temporalio.client import WorkflowUpdateFailedError

    runtime.wake_s = 1.0  # the new agent's first wake is still running when the removal comes
    user = await _new_user(sessions)
    handle = await _start(worker, user)
    waiting = await handle.start_update(AgentLifecycleWorkflow.ensure_awake,
                                        wait_for_stage=WorkflowUpdateStage.ACCEPTED)
    for _ in range(1500):  # the wake has begun (30 s at most)
        if runtime.calls["wake"]:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError(f"the wake never began: {runtime.calls}, {await handle.describe()}")
    await handle.signal(AgentLifecycleWorkflow.remove)
    await handle.result()  # the workflow ends once the agent is gone
    assert user.id not in runtime.states, "the wake in flight finished first; nothing was recreated after the delete"
    with pytest.raises(WorkflowUpdateFailedError):
        await waiting.result()  # a caller still waiting is told, not left hanging
    async with sessions() as session:
        assert await session.scalar(select(AgentInstance).where(AgentInstance.user_id == user.id)) is None
        actions = (await session.scalars(select(AuditEvent.action).where(AuditEvent.user_id == user.id))).all()
    assert actions[-1] == "agent.deleted"
    described = await handle.describe()
    assert described.search_attributes.get(LIFECYCLE_STATE.name) == ["Deleted"]


async def test_an_agent_held_by_someone_waiting_on_its_answer_is_not_paused(
    worker: Client, time_skipping_env: WorkflowEnvironment, runtime: MemoryRuntime,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """An answer that takes longer than the quiet before Idle (a long task asked by text) is not
    frozen by a pause: the asker holds the agent while it waits, and it idles as usual once released."""
    user = await _new_user(sessions)
    handle = await _start(worker, user)
    await handle.execute_update(AgentLifecycleWorkflow.ensure_awake)
    for _ in range(3):  # a 45-minute answer, the hold renewed less often than ten minutes: the hold, not
        await handle.signal(AgentLifecycleWorkflow.hold, 1200.0)  # the renewal's touch, keeps it up
        await time_skipping_env.sleep(timedelta(minutes=15))
        assert await _state(handle) == LifecycleState.RUNNING
    assert runtime.states[user.id] == RuntimeState.RUNNING
    await handle.signal(AgentLifecycleWorkflow.release)
    await time_skipping_env.sleep(timedelta(minutes=9))
    assert await _state(handle) == LifecycleState.RUNNING, "ten quiet minutes from the answer, not from the hold"
    await time_skipping_env.sleep(timedelta(minutes=2))
    await _eventually(handle, LifecycleState.IDLE)

    # An asker that went away without releasing: the hold lapses, and the agent idles after it.
    await handle.execute_update(AgentLifecycleWorkflow.ensure_awake)
    await handle.signal(AgentLifecycleWorkflow.hold, 1800.0)
    await time_skipping_env.sleep(timedelta(minutes=25))
    assert await _state(handle) == LifecycleState.RUNNING
    await time_skipping_env.sleep(timedelta(minutes=16))
    await _eventually(handle, LifecycleState.IDLE)
    await handle.terminate()
