"""Taking a message for a user from someone who is not them (a caller, or a texter, to the user's
number): their words texted to the user from their own number, within the user's message limit, so a
stranger cannot flood the user through it. Nothing of the user's reaches the stranger."""

from __future__ import annotations

import logging
import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db import transaction
from core.limits import Limit, UserLimiter
from core.models import PhoneNumber, User
from core.usage import UsageKind, record_usage, sms_segments
from core.ports import Telephony

log = logging.getLogger(__name__)

MAX_MESSAGE = 600


class Taken(StrEnum):
    PASSED_ON = "passed on"
    FULL = "full"  # the user's message limit is reached
    FAILED = "failed"


async def pass_message_on(sessions: async_sessionmaker[AsyncSession], telephony: Telephony, limiter: UserLimiter, *,
                          user_id: uuid.UUID, sender: str, words: str, what: str = "Message") -> Taken:
    async with sessions() as session:
        row: Any = (await session.execute(
            select(User.phone_e164, PhoneNumber.e164).join(PhoneNumber, PhoneNumber.user_id == User.id)
            .where(User.id == user_id, PhoneNumber.state == "assigned"))).one_or_none()
    if row is None:
        return Taken.FAILED
    if await limiter.acquire(Limit.MESSAGE, user_id):
        return Taken.FULL
    body = f"{what} from {sender or 'a caller'}: {words[:MAX_MESSAGE]}"
    try:
        sid = await telephony.send_sms(to=row[0], from_=row[1], body=body)
    except Exception as error:  # the stranger is told it failed, never left hanging
        log.warning("could not text a message to user %s: %s", user_id, error)
        return Taken.FAILED
    async with transaction(sessions) as session:
        await record_usage(session, user_id=user_id, kind=UsageKind.SMS_SEGMENTS_OUT, quantity=sms_segments(body),
                           source=f"sms:{sid}")
    log.info("took a message for user %s", user_id)
    return Taken.PASSED_ON
