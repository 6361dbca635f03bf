"""The warm number pool against the local carrier (through the real twilio client) and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.numbers.pool import BuyRequest, ClaimRequest, NumberPoolActivities
from activities.telephony.twilio import TwilioTelephony
from core.models import PhoneNumber, User
from core.settings import Settings
from tests.conftest import LocalCarrier, retire_available_numbers, unique_area_code
from workflows.hotline_setup import HotlineSetupWorkflow
from workflows.number_pool import NumberPoolWorkflow, PoolInput


def _area() -> str:
    return unique_area_code()


async def _available(sessions: async_sessionmaker[AsyncSession], area: str) -> int:
    async with sessions() as session:
        return int((await session.execute(select(func.count()).where(
            PhoneNumber.state == "available", PhoneNumber.area_code == area))).scalar_one())


async def test_pool_fills_and_replenishes_on_signal(
    time_skipping_env: WorkflowEnvironment, telephony: TwilioTelephony, sessions: async_sessionmaker[AsyncSession],
) -> None:
    area = _area()
    pool = NumberPoolActivities(telephony, sessions, voice_url="http://api/twilio/voice", sms_url="http://api/twilio/sms")
    async with Worker(time_skipping_env.client, task_queue="pool-test", workflows=[NumberPoolWorkflow],
                      activities=pool.all()):
        handle = await time_skipping_env.client.start_workflow(
            NumberPoolWorkflow.run, PoolInput(target=3, area_codes=[area]), id=f"number-pool-{area}",
            task_queue="pool-test")
        for _ in range(100):
            if await _available(sessions, area) == 3:
                break
            await asyncio.sleep(0.1)
        assert await _available(sessions, area) == 3
        users = [User(phone_e164=f"+1555{uuid.uuid4().int % 10**7:07d}") for _ in range(2)]
        async with sessions() as session, session.begin():
            session.add_all(users)
        for user in users:
            assert await pool.claim_number(ClaimRequest(user_id=user.id, area_code=area)) is not None
        await handle.signal(NumberPoolWorkflow.replenish)
        for _ in range(100):
            if await _available(sessions, area) == 3:
                break
            await asyncio.sleep(0.1)
        assert await _available(sessions, area) == 3
        # The rows are written by the purchase activity, the count when the workflow takes its result.
        for _ in range(100):
            if await handle.query(NumberPoolWorkflow.numbers_bought) == 5:
                break
            await asyncio.sleep(0.05)
        assert await handle.query(NumberPoolWorkflow.numbers_bought) == 5
        await time_skipping_env.sleep(timedelta(minutes=11))  # the timer finds nothing missing
        assert await handle.query(NumberPoolWorkflow.numbers_bought) == 5
        await handle.terminate()
    owned = [n for n in await telephony.list_numbers() if n.e164[2:5] == area]
    assert len(owned) == 5 and all(n.voice_url == "http://api/twilio/voice" for n in owned)


async def test_a_purchase_whose_database_write_was_lost_is_not_repeated(
    telephony: TwilioTelephony, sessions: async_sessionmaker[AsyncSession],
) -> None:
    area = _area()
    pool = NumberPoolActivities(telephony, sessions, voice_url="http://api/voice", sms_url="http://api/sms")
    key = f"pool-crash-{uuid.uuid4().hex[:8]}"
    [candidate] = await telephony.search_numbers(area_code=area, limit=1)
    # The worker bought the number, then died before writing it down.
    bought = await telephony.buy_number(candidate, voice_url="http://api/voice", sms_url="http://api/sms",
                                        friendly_name=key)
    retried = await pool.buy_pool_number(BuyRequest(purchase_key=key, area_code=area))
    again = await pool.buy_pool_number(BuyRequest(purchase_key=key, area_code=area))
    assert retried.provider_sid == again.provider_sid == bought.sid
    assert [n.sid for n in await telephony.list_numbers() if n.e164[2:5] == area] == [bought.sid], "nothing bought twice"
    assert await _available(sessions, area) == 1


async def test_concurrent_claims_never_share_a_number(sessions: async_sessionmaker[AsyncSession]) -> None:
    area = _area()
    async with sessions() as session, session.begin():
        session.add_all([PhoneNumber(e164=f"+1{area}555{i:04d}", provider_sid=f"PN{uuid.uuid4().hex}",
                                     state="available", area_code=area) for i in range(5)])
        users = [User(phone_e164=f"+1555{uuid.uuid4().int % 10**7:07d}") for _ in range(20)]
        session.add_all(users)
    pool = NumberPoolActivities(None, sessions, voice_url="", sms_url="")  # type: ignore[arg-type]
    claims = await asyncio.gather(*(pool.claim_number(ClaimRequest(user_id=u.id, area_code=area)) for u in users))
    won = [c for c in claims if c is not None and c.e164.startswith(f"+1{area}")]
    assert len(won) == 5 and len({c.e164 for c in won}) == 5
    again = await pool.claim_number(ClaimRequest(user_id=users[claims.index(won[0])].id, area_code=area))
    assert again is not None and again.e164 == won[0].e164, "a retried claim returns the same number"
    assert won[0].newly_claimed and not again.newly_claimed


async def test_a_claim_takes_a_number_of_the_callers_area_before_one_without_an_area(
        sessions: async_sessionmaker[AsyncSession]) -> None:
    area = _area()
    async with sessions() as session, session.begin():
        session.add(PhoneNumber(e164=f"+1999{uuid.uuid4().int % 10**7:07d}", provider_sid=f"PN{uuid.uuid4().hex}",
                                state="available", area_code=None))  # older, and of no area
        await session.flush()
        session.add(PhoneNumber(e164=f"+1{area}555{uuid.uuid4().int % 10**4:04d}", provider_sid=f"PN{uuid.uuid4().hex}",
                                state="available", area_code=area))
        user = User(phone_e164=f"+1555{uuid.uuid4().int % 10**7:07d}")
        session.add(user)
    pool = NumberPoolActivities(None, sessions, voice_url="", sms_url="")  # type: ignore[arg-type]
    claimed = await pool.claim_number(ClaimRequest(user_id=user.id, area_code=area))
    assert claimed is not None and claimed.e164.startswith(f"+1{area}")
    await retire_available_numbers(sessions)


async def test_the_pool_keeps_its_target_in_each_area_code(
    time_skipping_env: WorkflowEnvironment, telephony: TwilioTelephony, sessions: async_sessionmaker[AsyncSession],
) -> None:
    areas = [_area(), _area()]
    pool = NumberPoolActivities(telephony, sessions, voice_url="http://api/twilio/voice", sms_url="http://api/twilio/sms")
    async with Worker(time_skipping_env.client, task_queue="pool-areas-test", workflows=[NumberPoolWorkflow],
                      activities=pool.all()):
        handle = await time_skipping_env.client.start_workflow(
            NumberPoolWorkflow.run, PoolInput(target=2, area_codes=areas), id=f"number-pool-{areas[0]}",
            task_queue="pool-areas-test")
        for _ in range(100):
            if [await _available(sessions, a) for a in areas] == [2, 2]:
                break
            await asyncio.sleep(0.1)
        assert [await _available(sessions, a) for a in areas] == [2, 2]
        await handle.terminate()


async def test_the_hotline_is_pointed_at_the_platform_once(
    temporal_env: WorkflowEnvironment, local_carrier: LocalCarrier, sessions: async_sessionmaker[AsyncSession],
) -> None:
    """What the worker does at start (HotlineSetupWorkflow): the hotline bought in the console, not yet
    pointed anywhere, gets the platform's voice and SMS webhooks; a second run changes nothing; a number
    the account does not own is a clear failure, not retried."""
    settings = Settings(_env_file=None)
    hotline = next(n for n in local_carrier.carrier.numbers.owned.values() if n.phone_number == settings.hotline_number)
    assert hotline.voice_url is None
    pool = NumberPoolActivities(local_carrier.telephony, sessions, voice_url="https://api.example/twilio/voice",
                                sms_url="https://api.example/twilio/sms")
    queue = f"hotline-{uuid.uuid4().hex[:6]}"
    async with Worker(temporal_env.client, task_queue=queue, workflows=[HotlineSetupWorkflow],
                      activities=pool.all()):
        async def setup(number: str) -> bool:
            return await temporal_env.client.execute_workflow(
                HotlineSetupWorkflow.run, number, id=f"hotline-setup-{uuid.uuid4().hex[:6]}", task_queue=queue)

        assert await setup(settings.hotline_number) is True
        assert (hotline.voice_url, hotline.sms_url) == ("https://api.example/twilio/voice",
                                                         "https://api.example/twilio/sms")
        assert await setup(settings.hotline_number) is False, "idempotent: nothing to change the second time"
        with pytest.raises(WorkflowFailureError) as failed:
            await setup("+15550009998")
        assert "not a number of this Twilio account" in str(failed.value.cause.cause)
