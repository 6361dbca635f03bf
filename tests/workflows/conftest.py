"""Fixtures the workflow tests share."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.models import PhoneNumber, User
from tests.conftest import LocalCarrier, unique_area_code


@pytest.fixture
async def owner(sessions: async_sessionmaker[AsyncSession], local_carrier: LocalCarrier) -> tuple[User, str]:
    """A user with a number of their own, bought from the local carrier: (the user, their number)."""
    [number] = await local_carrier.telephony.search_numbers(area_code=unique_area_code(), limit=1)
    owned = await local_carrier.telephony.buy_number(number, voice_url="http://127.0.0.1:9/voice", sms_url="")
    user = User(phone_e164=f"+1555{uuid.uuid4().int % 10**7:07d}", agent_name="Nova")
    async with sessions() as session, session.begin():
        session.add(user)
        await session.flush()
        session.add(PhoneNumber(e164=owned.e164, provider_sid=owned.sid, state="assigned", user_id=user.id))
    return user, owned.e164
