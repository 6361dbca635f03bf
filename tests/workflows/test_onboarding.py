"""The setup hotline's workflows on Temporal's time-skipping server, real PostgreSQL and the local
carrier (real twilio client): the dialog, codes and their expiry, resuming, the provisioning saga,
a worker restart mid-provisioning, and 20 callers racing for a pool of 5."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.archive.stores import FolderArchiveStore
from activities.email.mailers import OutboxMailer
from activities.numbers.pool import NumberPoolActivities
from activities.onboarding.calls import HotlineCallActivities
from activities.onboarding.verification import VerificationActivities
from activities.runtime.activities import RuntimeActivities
from activities.users import NewUser, UserActivities
from core.models import OutboxEmail, PhoneNumber, User
from core.callers import pin_digest
from core.settings import Settings
from core.tokens import Keyring
from tests.conftest import LocalCarrier, retire_available_numbers, unique_area_code
from tests.memory_runtime import MemoryRuntime
from workflows import onboarding_lines as lines
from workflows.agent_lifecycle import AgentLifecycleWorkflow, LifecycleState, Thresholds
from workflows.agent_lifecycle import workflow_id as lifecycle_id
from workflows.number_pool import NumberPoolWorkflow, PoolInput
from workflows.onboarding import (
    CallStarted,
    Heard,
    Line,
    OnboardingInput,
    OnboardingPolicy,
    OnboardingResult,
    OnboardingWorkflow,
    ReturningUser,
    Step,
    workflow_id,
)
from workflows.provision_user import ProvisionInput, ProvisionUserWorkflow
from workflows.provision_user import workflow_id as provision_id

HOTLINE = "+15550000100"
# No bridge here to say the "All set" line has played: hand off on a short estimate.
QUICK_HANDOFF = OnboardingPolicy(words_per_second=25, handoff_grace=timedelta(0))
CALLERS = int(os.environ.get("ONBOARD_CALLERS", "20"))
WORKFLOWS = [OnboardingWorkflow, ProvisionUserWorkflow, AgentLifecycleWorkflow, NumberPoolWorkflow]


@dataclass
class Hotline:
    env: WorkflowEnvironment
    client: Client
    carrier: LocalCarrier
    sessions: async_sessionmaker[AsyncSession]
    runtime: MemoryRuntime
    area: str
    task_queue: str
    pool_id: str

    async def call(self, caller: str, returning: ReturningUser | None = None) -> tuple[WorkflowHandle, Line]:
        handle = await self.client.start_workflow(
            OnboardingWorkflow.run,
            OnboardingInput(caller=caller, hotline_number=HOTLINE, pool_workflow_id=self.pool_id, returning=returning,
                            policy=QUICK_HANDOFF),
            id=workflow_id(Keyring.of("test-secret"), caller), task_queue=self.task_queue)
        return handle, await handle.execute_update(OnboardingWorkflow.call_started, CallStarted(call_sid="CAtest"))

    async def finished(self, handle: WorkflowHandle) -> Any:
        """The result in real time. Skipping time here would also race the new agents' lifecycle
        timers ahead, and a lifecycle stopped mid-activity stalls later skipping on the test server."""
        with self.env.auto_time_skipping_disabled():
            return await handle.result()

    def sms_code(self, caller: str) -> str:
        return re.findall(r"\b\d{6}\b", self.carrier.texts_to(caller)[-1])[0]

    async def email_code(self, address: str) -> str:
        async with self.sessions() as session:
            mail = (await session.execute(select(OutboxEmail).where(OutboxEmail.to_address == address)
                                          .order_by(OutboxEmail.id.desc()).limit(1))).scalar_one()
        return re.findall(r"\b\d{6}\b", mail.subject)[0]

    async def add_pool_numbers(self, count: int) -> None:
        pool = NumberPoolActivities(self.carrier.telephony, self.sessions, voice_url="http://api/twilio/voice",
                                    sms_url="http://api/twilio/sms")
        from activities.numbers.pool import BuyRequest
        for _ in range(count):
            await pool.buy_pool_number(BuyRequest(purchase_key=f"test-{uuid.uuid4().hex}", area_code=self.area))


async def say(handle: WorkflowHandle, text: str) -> str:
    line = await handle.execute_update(OnboardingWorkflow.hear, Heard(call_sid="CAtest", text=text))
    return line.text


def _caller(area: str) -> str:
    return f"+1{area}{uuid.uuid4().int % 10**7:07d}"


@asynccontextmanager
async def _worker(env: WorkflowEnvironment, hotline_parts: dict[str, object], task_queue: str,
                  **options: object) -> AsyncIterator[None]:
    carrier: LocalCarrier = hotline_parts["carrier"]  # type: ignore[assignment]
    sessions: async_sessionmaker[AsyncSession] = hotline_parts["sessions"]  # type: ignore[assignment]
    runtime: MemoryRuntime = hotline_parts["runtime"]  # type: ignore[assignment]
    settings = Settings(_env_file=None)
    telephony = carrier.telephony
    activities = [
        *VerificationActivities(telephony, OutboxMailer(sessions), keyring=Keyring.of("test-secret")).all(),
        *HotlineCallActivities(telephony, settings).all(),
        *UserActivities(sessions).all(),
        *NumberPoolActivities(telephony, sessions, voice_url="http://api/twilio/voice",
                              sms_url="http://api/twilio/sms").all(),
        *RuntimeActivities(runtime, FolderArchiveStore(hotline_parts["archive"]), sessions, "local").all(),  # type: ignore[arg-type]
    ]
    async with Worker(env.client, task_queue=task_queue, workflows=WORKFLOWS, activities=activities,
                      max_concurrent_activities=50, **options):  # type: ignore[arg-type]
        yield


@pytest.fixture
async def hotline(time_skipping_env: WorkflowEnvironment, local_carrier: LocalCarrier,
                  sessions: async_sessionmaker[AsyncSession], tmp_path: Path) -> AsyncIterator[Hotline]:
    area = unique_area_code()
    await retire_available_numbers(sessions)
    parts = {"carrier": local_carrier, "sessions": sessions, "runtime": MemoryRuntime(), "archive": tmp_path}
    task_queue = f"hotline-{area}-{uuid.uuid4().hex[:6]}"
    async with _worker(time_skipping_env, parts, task_queue):
        yield Hotline(time_skipping_env, time_skipping_env.client, local_carrier, sessions, parts["runtime"], area,  # type: ignore[arg-type]
                      task_queue, pool_id=f"number-pool-{area}")


async def _complete_dialog(hotline: Hotline, handle: WorkflowHandle, caller: str, *, name: str = "call it Nova") -> str:
    """From a verified-phone prompt to the final line, the straightforward way."""
    assert "verified" in await say(handle, " ".join(hotline.sms_code(caller)))
    address = f"user.{uuid.uuid4().hex[:8]}@example.com"
    spoken_address = address.replace(".", " dot ").replace("@", " at ")
    assert "Is that right?" in await say(handle, spoken_address)
    assert "emailed" in await say(handle, "yes")
    assert "verified" in await say(handle, await hotline.email_code(address))
    assert "Orion it is" in await say(handle, "orion")
    assert "Formal, got it" in await say(handle, "2")
    assert "key in a PIN" in await say(handle, name)
    return await say(handle, "skip")


async def test_a_caller_is_onboarded_end_to_end(hotline: Hotline) -> None:
    await hotline.add_pool_numbers(2)
    caller = _caller(hotline.area)
    handle, opening = await hotline.call(caller)
    assert opening.text == lines.WELCOME
    [sms] = hotline.carrier.texts_to(caller)
    assert "Your DeepClaw code is" in sms

    # Bad input gets a specific answer, never silence.
    assert await say(handle, "I don't know") == lines.CODE_NOT_HEARD
    code = hotline.sms_code(caller)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    assert await say(handle, wrong) == lines.code_wrong(2)
    assert await say(handle, code) == lines.PHONE_VERIFIED + lines.ASK_EMAIL
    assert await say(handle, "jane doe gmail") == lines.EMAIL_NOT_HEARD
    assert await say(handle, "jane dot doe at gmail dot com") == lines.confirm_email("jane.doe@gmail.com")
    assert await say(handle, "maybe") == "Sorry, was that a yes or a no? " + lines.confirm_email("jane.doe@gmail.com")
    assert await say(handle, "no") == lines.EMAIL_RETRY
    address = f"jane.{uuid.uuid4().hex[:6]}@gmail.com"
    spoken_address = address.replace(".", " dot ").replace("@", " at ")
    assert await say(handle, spoken_address) == lines.confirm_email(address)
    assert await say(handle, "yes that's right") == lines.EMAIL_CODE_SENT
    assert await say(handle, await hotline.email_code(address)) == lines.EMAIL_VERIFIED + lines.ASK_VOICE
    assert await say(handle, "the robot one") == lines.VOICE_NOT_HEARD
    assert (await say(handle, "Luna please")).startswith("Luna it is.")
    assert await say(handle, "whatever") == lines.PERSONALITY_NOT_HEARD
    assert (await say(handle, "casual")).startswith("Casual, got it.")
    assert await say(handle, "I really can't decide on a good name") == lines.NAME_NOT_HEARD
    assert await say(handle, "call it Nova") == lines.name_chosen("Nova")
    assert await say(handle, "one two") == lines.PIN_NOT_HEARD
    # The conductor sends the PIN's keyed digest, never its digits (an Update's input stays in history).
    pin = pin_digest(Keyring.of("test-secret"), caller, "2468")
    final = (await handle.execute_update(OnboardingWorkflow.hear, Heard(call_sid="CAtest", text="", pin_digest=pin))).text
    assert final.startswith("All set! Nova's number is")

    result: OnboardingResult = await hotline.finished(handle)  # the hand-off (a call that has ended) and the welcome
    assert result.step == Step.DONE and result.number and result.user_id
    assert lines.say_number(result.number) in final
    async with hotline.sessions() as session:
        user = await session.get(User, result.user_id)
        number = (await session.execute(select(PhoneNumber).where(PhoneNumber.user_id == result.user_id))).scalar_one()
    assert user is not None and user.phone_e164 == caller and user.email == address
    assert user.phone_verified and user.email_verified
    assert (user.voice, user.personality, user.agent_name) == ("aura-2-luna-en", "casual", "Nova")
    assert user.pin_digest == pin
    assert number.e164 == result.number and number.state == "assigned"
    welcome = [m for m in hotline.carrier.carrier.messages.values() if m.to == caller and m.from_ == result.number]
    assert len(welcome) == 1 and "Nova" in welcome[0].body
    lifecycle = hotline.client.get_workflow_handle(lifecycle_id(result.user_id))
    assert (await lifecycle.describe()).status.name == "RUNNING"
    assert hotline.runtime.calls["create"] == 1
    await lifecycle.terminate()


async def test_codes_expire_lock_after_three_tries_and_can_be_renewed(
    hotline: Hotline, time_skipping_env: WorkflowEnvironment,
) -> None:
    caller = _caller(hotline.area)
    handle, _ = await hotline.call(caller)
    code = hotline.sms_code(caller)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    assert await say(handle, wrong) == lines.code_wrong(2)
    assert await say(handle, wrong) == lines.code_wrong(1)
    assert await say(handle, wrong) == lines.code_wrong(0)
    assert await say(handle, code) == lines.CODE_LOCKED, "even the right code is refused after three misses"
    assert await say(handle, "can you send me a new code") == lines.CODE_SENT_AGAIN
    fresh = hotline.sms_code(caller)
    assert len(hotline.carrier.texts_to(caller)) == 2
    await time_skipping_env.sleep(timedelta(minutes=11))
    assert await say(handle, " ".join(fresh)) == lines.CODE_EXPIRED
    assert await say(handle, "*") == lines.CODE_SENT_AGAIN  # the star key asks for one too
    assert "verified" in await say(handle, hotline.sms_code(caller))
    assert await handle.query(OnboardingWorkflow.current_step) == Step.EMAIL
    await handle.terminate()


async def test_too_many_codes_end_the_call(hotline: Hotline) -> None:
    caller = _caller(hotline.area)
    handle, _ = await hotline.call(caller)
    for _ in range(4):
        assert await say(handle, "new code") == lines.CODE_SENT_AGAIN
    line = await handle.execute_update(OnboardingWorkflow.hear, Heard(call_sid="CAtest", text="new code"))
    assert line.end_call and line.text == lines.TOO_MANY_CODES
    assert len(hotline.carrier.texts_to(caller)) == 5
    again = await handle.execute_update(OnboardingWorkflow.call_started, CallStarted(call_sid="CAnext"))
    assert again.end_call, "calling back does not lift the lock-out"
    await handle.terminate()


async def test_a_caller_who_hung_up_resumes_at_the_same_step_for_a_day(
    hotline: Hotline, time_skipping_env: WorkflowEnvironment,
) -> None:
    caller = _caller(hotline.area)
    handle, _ = await hotline.call(caller)
    await say(handle, hotline.sms_code(caller))
    assert await say(handle, "jane dot doe at gmail dot com") == lines.confirm_email("jane.doe@gmail.com")
    # The caller hangs up, and calls again two hours later.
    await time_skipping_env.sleep(timedelta(hours=2))
    back = await handle.execute_update(OnboardingWorkflow.call_started, CallStarted(call_sid="CAsecond"))
    assert back.text == lines.WELCOME_BACK + lines.confirm_email("jane.doe@gmail.com")
    assert len(hotline.carrier.texts_to(caller)) == 1, "no new phone code: that step is done"
    # Nothing for a day: the session ends, and a call after that starts over.
    await time_skipping_env.sleep(timedelta(hours=25))
    result: OnboardingResult = await handle.result()
    assert result.step == Step.EXPIRED and result.user_id is None
    handle, opening = await hotline.call(caller)
    assert opening.text == lines.WELCOME
    await handle.terminate()


async def test_an_expired_phone_code_is_renewed_when_the_caller_calls_back(
    hotline: Hotline, time_skipping_env: WorkflowEnvironment,
) -> None:
    caller = _caller(hotline.area)
    handle, _ = await hotline.call(caller)
    await time_skipping_env.sleep(timedelta(minutes=30))
    back = await handle.execute_update(OnboardingWorkflow.call_started, CallStarted(call_sid="CAsecond"))
    assert back.text == lines.WELCOME_BACK + lines.CODE_SENT_AGAIN
    assert "verified" in await say(handle, hotline.sms_code(caller))
    await handle.terminate()


def _new_user(area: str) -> NewUser:
    return NewUser(user_id=uuid.uuid4(), phone=_caller(area), email="x@example.com", voice="aura-2-orion-en",
                   personality="formal", agent_name="Max")


async def _provision(hotline: Hotline, user: NewUser, **extra: object) -> WorkflowHandle:
    return await hotline.client.start_workflow(
        ProvisionUserWorkflow.run,
        ProvisionInput(user=user, area_code=hotline.area, pool_workflow_id=hotline.pool_id, **extra),  # type: ignore[arg-type]
        id=provision_id(user.user_id), task_queue=hotline.task_queue)


async def _numbers_of(hotline: Hotline, user_id: uuid.UUID) -> list[str]:
    async with hotline.sessions() as session:
        return list((await session.execute(select(PhoneNumber.e164).where(PhoneNumber.user_id == user_id))).scalars())


async def test_provisioning_twice_changes_nothing(hotline: Hotline) -> None:
    await hotline.add_pool_numbers(2)
    user = _new_user(hotline.area)
    first = await hotline.finished(await _provision(hotline, user))
    second = await hotline.finished(await _provision(hotline, user))
    assert first == second
    assert await _numbers_of(hotline, user.user_id) == [first.number]
    assert hotline.runtime.calls["create"] == 1, "one agent"
    await hotline.client.get_workflow_handle(lifecycle_id(user.user_id)).terminate()


async def test_a_failed_provisioning_undoes_its_steps(hotline: Hotline) -> None:
    await hotline.add_pool_numbers(1)
    async with hotline.sessions() as session:
        number = (await session.execute(select(PhoneNumber).where(
            PhoneNumber.area_code == hotline.area, PhoneNumber.state == "available"))).scalar_one()
    await hotline.carrier.telephony.release_number(number.provider_sid)  # the provider lost it: webhooks fail
    user = _new_user(hotline.area)
    handle = await _provision(hotline, user)
    with pytest.raises(WorkflowFailureError):
        await hotline.finished(handle)
    async with hotline.sessions() as session:
        assert await session.get(User, user.user_id) is None
        back = await session.get(PhoneNumber, number.id)
    assert back is not None and back.state == "releasing" and back.user_id is None, "retired, not given to the next"
    assert hotline.runtime.states.get(user.user_id) is None, "the partial agent was deleted"
    lifecycle = await hotline.client.get_workflow_handle(lifecycle_id(user.user_id)).describe()
    assert lifecycle.status.name == "COMPLETED", "the agent's workflow deleted it and ended"


class FaultyWebhooks:
    """Telephony whose webhook configuration misbehaves as `configure` says (outage, hang)."""

    def __init__(self, telephony: object, configure: Callable[[], Awaitable[None]]) -> None:
        self._telephony = telephony
        self._configure = configure

    def __getattr__(self, name: str) -> object:
        return getattr(self._telephony, name)

    async def configure_number(self, sid: str, *, voice_url: str, sms_url: str) -> None:
        await self._configure()


async def _outage() -> None:
    raise ConnectionError("provider unavailable")


async def _hang() -> None:
    await asyncio.Event().wait()


async def test_a_provider_outage_returns_the_claimed_number_to_the_pool(
    time_skipping_env: WorkflowEnvironment, hotline: Hotline, tmp_path: Path,
) -> None:
    await hotline.add_pool_numbers(1)
    queue = f"{hotline.task_queue}-outage"
    broken = {"carrier": LocalCarrier(hotline.carrier.carrier, FaultyWebhooks(hotline.carrier.telephony, _outage), hotline.carrier.port),  # type: ignore[arg-type]
              "sessions": hotline.sessions, "runtime": hotline.runtime, "archive": tmp_path}
    user = _new_user(hotline.area)
    async with _worker(time_skipping_env, broken, queue):
        handle = await hotline.client.start_workflow(
            ProvisionUserWorkflow.run,
            ProvisionInput(user=user, area_code=hotline.area, pool_workflow_id=hotline.pool_id, step_attempts=2),
            id=provision_id(user.user_id), task_queue=queue)
        with pytest.raises(WorkflowFailureError):
            await hotline.finished(handle)
    async with hotline.sessions() as session:
        assert await session.get(User, user.user_id) is None
        available = (await session.execute(select(func.count()).where(
            PhoneNumber.area_code == hotline.area, PhoneNumber.state == "available"))).scalar_one()
    assert available == 1, "the number is back in the pool for the next caller"
    assert hotline.runtime.states.get(user.user_id) is None


async def test_a_worker_restart_mid_provisioning_loses_and_doubles_nothing(
    time_skipping_env: WorkflowEnvironment, hotline: Hotline, tmp_path: Path,
) -> None:
    await hotline.add_pool_numbers(1)
    queue = f"{hotline.task_queue}-restart"
    parts = {"carrier": hotline.carrier, "sessions": hotline.sessions, "runtime": hotline.runtime, "archive": tmp_path}
    stuck = {**parts, "carrier": LocalCarrier(hotline.carrier.carrier, FaultyWebhooks(hotline.carrier.telephony, _hang), hotline.carrier.port)}  # type: ignore[arg-type]
    user = _new_user(hotline.area)
    # No workflow cache: the replacement worker replays the history, like a fresh process would.
    # A dead worker's step is retried after the step's timeout (the test server can also hand the
    # retry to the dead worker's last poll, Temporal's known shutdown race): a short one here.
    async with _worker(time_skipping_env, stuck, queue, max_cached_workflows=0):
        handle = await hotline.client.start_workflow(
            ProvisionUserWorkflow.run, ProvisionInput(user=user, area_code=hotline.area, pool_workflow_id=hotline.pool_id,
                                                      step_timeout=timedelta(seconds=3)),
            id=provision_id(user.user_id), task_queue=queue)
        for _ in range(200):  # the number is claimed; the last step hangs; the worker dies
            if await handle.query(ProvisionUserWorkflow.current_step) == "point number at platform":
                break
            await asyncio.sleep(0.02)
    assert (await handle.describe()).status.name == "RUNNING"
    assert len(await _numbers_of(hotline, user.user_id)) == 1
    async with _worker(time_skipping_env, parts, queue, max_cached_workflows=0):
        provisioned = await hotline.finished(handle)
    assert await _numbers_of(hotline, user.user_id) == [provisioned.number]
    async with hotline.sessions() as session:
        assigned = (await session.execute(select(func.count()).where(
            PhoneNumber.area_code == hotline.area, PhoneNumber.state == "assigned"))).scalar_one()
    assert assigned == 1
    await hotline.client.get_workflow_handle(lifecycle_id(user.user_id)).terminate()


async def test_twenty_callers_share_a_pool_of_five(hotline: Hotline, time_skipping_env: WorkflowEnvironment) -> None:
    pool = await hotline.client.start_workflow(
        NumberPoolWorkflow.run, PoolInput(target=5, area_codes=[hotline.area]), id=hotline.pool_id,
        task_queue=hotline.task_queue)
    callers = [_caller(hotline.area) for _ in range(CALLERS)]

    async def onboard(caller: str) -> OnboardingResult:
        handle, _ = await hotline.call(caller)
        assert (await _complete_dialog(hotline, handle, caller)).startswith("All set!")
        return await handle.result()

    # Real time: skipping ahead would spin the pool's and the agents' timers while twenty wait.
    with time_skipping_env.auto_time_skipping_disabled():
        results = await asyncio.gather(*(onboard(c) for c in callers))
    numbers = [r.number for r in results]
    assert all(r.step == Step.DONE for r in results)
    assert len(set(numbers)) == CALLERS, "every caller has their own number"
    async with hotline.sessions() as session:
        owners = (await session.execute(select(PhoneNumber.user_id, func.count()).where(
            PhoneNumber.e164.in_(numbers)).group_by(PhoneNumber.user_id))).all()
    assert len(owners) == CALLERS and all(count == 1 for _, count in owners)
    await pool.terminate()
    for result in results:
        assert result.user_id is not None
        await hotline.client.get_workflow_handle(lifecycle_id(result.user_id)).terminate()


async def test_the_number_of_a_long_archived_user_goes_back_to_the_pool(hotline: Hotline) -> None:
    await hotline.add_pool_numbers(1)
    user = _new_user(hotline.area)
    # Seconds instead of days, in real time: skipping ahead would fire every other test's timers too.
    quick = Thresholds(idle_after=timedelta(seconds=1), sleep_after=timedelta(seconds=2),
                       archive_after=timedelta(seconds=3), release_number_after=timedelta(seconds=2))
    provisioned = await hotline.finished(await _provision(hotline, user, thresholds=quick))
    lifecycle = hotline.client.get_workflow_handle(lifecycle_id(user.user_id))
    for _ in range(200):
        if await lifecycle.query(AgentLifecycleWorkflow.current_state) == LifecycleState.ARCHIVED:
            break
        await asyncio.sleep(0.05)
    assert await _numbers_of(hotline, user.user_id) == [provisioned.number], "kept while merely archived"
    for _ in range(200):
        if not await _numbers_of(hotline, user.user_id):
            break
        await asyncio.sleep(0.05)
    assert await _numbers_of(hotline, user.user_id) == []
    async with hotline.sessions() as session:
        number = (await session.execute(select(PhoneNumber).where(PhoneNumber.e164 == provisioned.number))).scalar_one()
    assert number.state == "available", "back in the pool for the next caller"
    await lifecycle.terminate()

