"""Each part of an answer reaches the user once, even when the carrier made the message and its
reply to the platform was lost (a connection reset): the retry finds it instead of sending again."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import ActivityEnvironment

from activities.telephony.twilio import TwilioTelephony
from activities.texts import OutgoingText, TextActivities
from core.models import Conversation, Message, User
from core.settings import Settings
from tests.conftest import LocalCarrier

HOTLINE = Settings(_env_file=None).hotline_number  # on the local carrier's account from the start


class LosesReplies:
    """The carrier is asked to send; then the connection drops, before (or after) it made the message."""

    def __init__(self, real: TwilioTelephony, *, made: bool) -> None:
        self.real, self.made = real, made

    async def send_sms(self, **kwargs: object) -> str:
        if self.made:
            await self.real.send_sms(**kwargs)  # type: ignore[arg-type]
        raise ConnectionResetError(104, "Connection reset by peer")


async def _question(sessions: async_sessionmaker[AsyncSession]) -> tuple[uuid.UUID, uuid.UUID, str]:
    user = User(phone_e164=f"+1555{uuid.uuid4().int % 10**7:07d}")
    async with sessions() as session, session.begin():
        session.add(user)
        await session.flush()
        conversation = Conversation(user_id=user.id, kind="sms", direction="inbound")
        session.add(conversation)
        await session.flush()
        question = Message(conversation_id=conversation.id, role="user", content="what is on today?")
        session.add(question)
    return conversation.id, question.id, user.phone_e164


def _attempt(number: int) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=number)
    return env


@pytest.mark.parametrize("made", [True, False], ids=["made, reply lost", "never made"])
async def test_a_retried_text_part_reaches_the_user_once(
    local_carrier: LocalCarrier, sessions: async_sessionmaker[AsyncSession], settings: Settings, made: bool,
) -> None:
    conversation, question, phone = await _question(sessions)
    part = OutgoingText(reply_to=question, conversation_id=conversation, part=1, to=phone, from_=HOTLINE,
                        body=f"Your day is free, {uuid.uuid4().hex[:6]}.")
    texts = TextActivities(local_carrier.telephony, sessions, settings, agent=None)  # type: ignore[arg-type]
    lossy = TextActivities(LosesReplies(local_carrier.telephony, made=made), sessions, settings,  # type: ignore[arg-type]
                           agent=None)  # type: ignore[arg-type]
    with pytest.raises(ConnectionResetError):
        await _attempt(1).run(lossy.send_text, part)

    sid = await _attempt(2).run(texts.send_text, part)

    assert local_carrier.texts_to(phone) == [part.body], "the user got the part once"
    [message] = [m for m in local_carrier.carrier.messages.values() if m.to == phone]
    assert sid == message.sid
    async with sessions() as session:
        recorded = (await session.execute(select(Message.provider_sid).where(Message.reply_to == question))).scalars()
        assert list(recorded) == [message.sid]
    assert await _attempt(3).run(texts.send_text, part) is None, "a later retry sends nothing"
    assert local_carrier.texts_to(phone) == [part.body]
