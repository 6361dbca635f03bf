"""Faults, with the platform's worker as the process it is in production (`deepclaw worker`): SIGKILLed
mid-work and started again, and Temporal restarted on its SQLite file under a worker left running.
Nothing is lost and nothing is done twice: each reminder texts once, the number pool ends at its
target with every number bought on the carrier in the database and none assigned twice.

(The user's OpenClaw killed mid-call: tests/voice/test_call_e2e.py; the voice agent's socket dropped:
tests/voice/test_call_limits.py; all of them at once under load: bench/chaos.py.)
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.models import PhoneNumber, Reminder, User
from core.process import ChildProcess, free_port
from core.settings import Settings
from devstack.temporal import TemporalDevServer
from tests.conftest import PLATFORM_CONVERTER, LocalCarrier, unique_area_code
from tests.polling import until
from workflows.reminder import ReminderInput, ReminderWorkflow, workflow_id

POOL_TARGET = 3


@pytest.fixture
async def temporal_server(tmp_path: Path) -> AsyncIterator[TemporalDevServer]:
    """A Temporal dev server of this test's own, on a SQLite file (as `make run` keeps it)."""
    server = TemporalDevServer(tmp_path / "temporal.db", host="127.0.0.1", port=free_port(), ui_port=free_port(),
                               log_path=tmp_path / "temporal.log")
    await server.start()
    yield server
    await server.stop()


def _settings(settings: Settings, server: TemporalDevServer, carrier: LocalCarrier, area: str) -> Settings:
    return settings.model_copy(update={
        "temporal_address": server.address, "carrier_port": carrier.port, "number_pool_target": POOL_TARGET,
        "number_pool_area_codes": [area], "worker_metrics_port": free_port(), "log_format": "json"})


def _worker(settings: Settings, log: Path) -> ChildProcess:
    """`deepclaw worker` with these settings, as the supervisor and Kubernetes start it."""
    return ChildProcess("worker", [sys.executable, "-m", "core.cli", "worker"],
                        env={**os.environ, **settings.as_env()}, log_path=str(log))


async def _user_with_reminders(sessions: async_sessionmaker[AsyncSession], carrier: LocalCarrier, client: Client,
                               settings: Settings, due_in_s: list[float]) -> tuple[User, list[Reminder]]:
    [number] = await carrier.telephony.search_numbers(area_code=unique_area_code(), limit=1)
    owned = await carrier.telephony.buy_number(number, voice_url="http://127.0.0.1:9/voice", sms_url="")
    user = User(phone_e164=f"+1555{uuid.uuid4().int % 10**7:07d}", agent_name="Nova")
    now = datetime.now(UTC)
    reminders = [Reminder(user_id=user.id, due_at=now + timedelta(seconds=s), text=f"stretch number {i}")
                 for i, s in enumerate(due_in_s)]
    async with sessions() as session, session.begin():
        session.add(user)
        await session.flush()
        session.add(PhoneNumber(e164=owned.e164, provider_sid=owned.sid, state="assigned", user_id=user.id))
        session.add_all(reminders)
    for reminder in reminders:  # no agent to phrase them (lead 0): they go out plain
        await client.start_workflow(ReminderWorkflow.run, ReminderInput(
            reminder_id=reminder.id, user_id=user.id, text=reminder.text, due_at=reminder.due_at, lead_s=0),
            id=workflow_id(reminder.id), task_queue=settings.temporal_task_queue)
    return user, reminders


async def _until(condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 60) -> None:
    await until(condition, what, timeout, every=0.2)


async def _all_fired(client: Client, reminders: list[Reminder]) -> None:
    results = await asyncio.wait_for(asyncio.gather(*(
        client.get_workflow_handle(workflow_id(r.id)).result() for r in reminders)), 90)
    assert results == ["fired"] * len(reminders)


def _texts(carrier: LocalCarrier, user: User) -> list[str]:
    return sorted(carrier.texts_to(user.phone_e164))


async def _pool_numbers(sessions: async_sessionmaker[AsyncSession], area: str) -> list[str]:
    async with sessions() as session:
        return list((await session.execute(select(PhoneNumber.e164).where(PhoneNumber.area_code == area))).scalars())


async def test_a_worker_killed_mid_work_loses_nothing_and_doubles_nothing(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], local_carrier: LocalCarrier,
    temporal_server: TemporalDevServer, tmp_path: Path,
) -> None:
    area = unique_area_code()
    settings = _settings(settings, temporal_server, local_carrier, area)
    client = await Client.connect(temporal_server.address, data_converter=PLATFORM_CONVERTER)
    worker = _worker(settings, tmp_path / "worker.log")
    await worker.start()
    try:
        # The pool has begun buying: the worker dies mid-replenishment, without any clean-up, with
        # reminders in flight (made now: how long a worker takes to start is no part of the test).
        await _until(lambda: _has_pool_numbers(sessions, area), "the pool buys its first number", timeout=60)
        user, reminders = await _user_with_reminders(sessions, local_carrier, client, settings, [4, 5, 6])
        os.killpg(worker.pid, signal.SIGKILL)  # type: ignore[arg-type]
        await worker.wait()
        while datetime.now(UTC) < max(r.due_at for r in reminders):  # every reminder falls due while it is down
            await asyncio.sleep(0.2)
        assert not _texts(local_carrier, user), "nothing fires without a worker"
        await worker.start()
        await _all_fired(client, reminders)
        await _until(lambda: _pool_full(sessions, area), f"the pool of {area} refills to {POOL_TARGET}")
    finally:
        await worker.stop()
    assert _texts(local_carrier, user) == sorted(f"Reminder: {r.text}" for r in reminders), "each fired once"
    in_database = sorted(await _pool_numbers(sessions, area))
    on_the_carrier = sorted(n.e164 for n in await local_carrier.telephony.list_numbers() if n.e164 in in_database
                            or n.e164.startswith(f"+1{area}"))
    assert in_database == on_the_carrier, "every number bought is in the pool: none leaked, none bought twice"
    assert len(in_database) == POOL_TARGET


async def test_temporal_restarted_under_a_running_worker_loses_nothing(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], local_carrier: LocalCarrier,
    temporal_server: TemporalDevServer, tmp_path: Path,
) -> None:
    settings = _settings(settings, temporal_server, local_carrier, unique_area_code())
    client = await Client.connect(temporal_server.address, data_converter=PLATFORM_CONVERTER)
    worker = _worker(settings, tmp_path / "worker.log")
    await worker.start()
    try:
        # Reminders made once the worker polls (its start-up, seconds on a busy machine, is no part of
        # the test): their timers are set before they fall due.
        await _until(lambda: _polling(settings), "the worker polls its task queue")
        user, reminders = await _user_with_reminders(sessions, local_carrier, client, settings, [5, 6])
        await _until(lambda: _timers_started(client, reminders), "the reminders' timers are set")
        await temporal_server.stop()  # the worker stays up, its polls failing
        while datetime.now(UTC) < max(r.due_at for r in reminders):
            await asyncio.sleep(0.2)
        await temporal_server.start()  # same SQLite file, same address
        client = await Client.connect(temporal_server.address, data_converter=PLATFORM_CONVERTER)
        await _all_fired(client, reminders)
        # The worker polls the restarted server for new work too.
        _, later = await _user_with_reminders(sessions, local_carrier, client, settings, [1])
        await _all_fired(client, later)
        assert worker.running, "the worker rode out the restart"
    finally:
        await worker.stop()
    assert _texts(local_carrier, user) == sorted(f"Reminder: {r.text}" for r in reminders), "each fired once"


async def _polling(settings: Settings) -> bool:
    """The worker's own health check (Kubernetes' probe): 200 once it polls its task queue."""
    async with httpx.AsyncClient(timeout=2) as http:
        try:
            return (await http.get(f"http://127.0.0.1:{settings.worker_metrics_port}/healthz")).status_code == 200
        except httpx.TransportError:
            return False


async def _has_pool_numbers(sessions: async_sessionmaker[AsyncSession], area: str) -> bool:
    return bool(await _pool_numbers(sessions, area))


async def _pool_full(sessions: async_sessionmaker[AsyncSession], area: str) -> bool:
    async with sessions() as session:
        available = (await session.execute(select(func.count()).where(
            PhoneNumber.area_code == area, PhoneNumber.state == "available"))).scalar_one()
    return available == POOL_TARGET


async def _timers_started(client: Client, reminders: list[Reminder]) -> bool:
    for reminder in reminders:
        history = await client.get_workflow_handle(workflow_id(reminder.id)).fetch_history()
        if not any(event.HasField("timer_started_event_attributes") for event in history.events):
            return False
    return True
