"""A user's texts with their agent (SmsConversationWorkflow's side effects): each inbound text recorded
once by its MessageSid, the agent asked in the user's SMS session (one per day, with what was said
lately on calls, core.recall), and the answer sent from the user's number in parts that are each sent
once, whatever retries."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel
from sqlalchemy import case, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.agent_chat import AgentChat
from core.callbacks import media_link
from core.db import transaction
from core.models import Conversation, Message, utcnow
from core.usage import UsageKind, record_usage, sms_segments
from core.ports import Telephony
from core.recall import recall_note
from core.settings import Settings
from core.texts import with_attachments


CARRIER_CLOCK_MARGIN = timedelta(minutes=1)


class InboundText(BaseModel):
    """A text from the user to their number, as the webhook got it."""

    message_sid: str
    user_id: uuid.UUID
    from_: str
    to: str
    body: str
    media: list[str] = []
    received_at: datetime


class Recorded(BaseModel):
    message_id: uuid.UUID
    conversation_id: uuid.UUID
    answered: bool  # a retried webhook's text, answered already


class AgentQuestion(BaseModel):
    user_id: uuid.UUID
    conversation_id: uuid.UUID
    text: str
    media: list[str] = []
    session_key: str


class OutgoingText(BaseModel):
    """Part `part` of the answer to inbound message `reply_to` (part 0: the "working on it" note)."""

    reply_to: uuid.UUID
    conversation_id: uuid.UUID
    part: int
    to: str
    from_: str
    body: str


def sms_session_key(day: datetime) -> str:
    """The user's SMS session in their OpenClaw: one per (UTC) day, like one thread of texts."""
    return f"sms-{day.astimezone(UTC):%Y-%m-%d}"


class TextActivities:
    def __init__(self, telephony: Telephony, sessions: async_sessionmaker[AsyncSession], settings: Settings,
                 agent: AgentChat) -> None:
        self.telephony = telephony
        self.sessions = sessions
        self.settings = settings
        self.agent = agent

    @property
    def status_callback(self) -> str:
        return f"{self.settings.api_base_url}/twilio/sms/status"

    @activity.defn
    async def record_inbound(self, text: InboundText) -> Recorded:
        """One text (histories from before record_inbound_texts replay it)."""
        async with transaction(self.sessions) as session:
            return await self._record(session, text)

    @activity.defn
    async def record_inbound_texts(self, texts: list[InboundText]) -> list[Recorded]:
        """The texts of one turn, in one transaction (each an activity of its own cost a round trip)."""
        async with transaction(self.sessions) as session:
            return [await self._record(session, text) for text in texts]

    async def _record(self, session: AsyncSession, text: InboundText) -> Recorded:
        """The text in the user's conversation of the day; a MessageSid seen before is not recorded twice."""
        conversation_id = await self._day_conversation(session, text)
        await session.execute(insert(Message).values(
            id=uuid.uuid4(), conversation_id=conversation_id, role="user", content=text.body,
            provider_sid=text.message_sid, status="received", media=text.media or None,
            created_at=text.received_at).on_conflict_do_nothing(index_elements=["provider_sid"]))
        await record_usage(session, user_id=text.user_id, kind=UsageKind.SMS_SEGMENTS_IN,
                           quantity=sms_segments(text.body), source=f"sms:{text.message_sid}",
                           conversation_id=conversation_id, occurred_at=text.received_at)
        message = (await session.execute(select(Message).where(Message.provider_sid == text.message_sid))).scalar_one()
        return Recorded(message_id=message.id, conversation_id=message.conversation_id,
                        answered=message.status == "answered")

    async def _day_conversation(self, session: AsyncSession, text: InboundText) -> uuid.UUID:
        day_start = text.received_at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        found = (await session.execute(
            select(Conversation.id).where(Conversation.user_id == text.user_id, Conversation.kind == "sms",
                                          Conversation.started_at >= day_start)
            .order_by(Conversation.started_at).limit(1).with_for_update())).scalar_one_or_none()
        if found is not None:
            return found
        conversation = Conversation(user_id=text.user_id, kind="sms", direction="inbound", from_number=text.from_,
                                    to_number=text.to, started_at=text.received_at)
        session.add(conversation)
        await session.flush()
        return conversation.id

    @activity.defn
    async def ask_agent(self, question: AgentQuestion) -> str:
        """The agent's answer, asked in the SMS session with what was said lately elsewhere."""
        note = await recall_note(self.sessions, question.user_id, conversation_id=question.conversation_id)
        links = [media_link(self.settings, question.user_id, url) for url in question.media]
        return await self.agent.ask(question.user_id, [
            *([note] if note else []),
            {"role": "user", "content": with_attachments(question.text, links)}],
            session_key=question.session_key)

    @activity.defn
    async def send_text(self, text: OutgoingText) -> str | None:
        """Sends one part of an answer unless it was sent already (then None). Its row is written
        first and named in the status callback's URL, so a delivery callback that beats the send's
        own reply still finds it. A retry first asks the carrier whether an earlier attempt sent it
        (the message made, its reply lost: a connection reset): the user gets it once."""
        async with transaction(self.sessions) as session:
            await session.execute(insert(Message).values(
                id=uuid.uuid4(), conversation_id=text.conversation_id, role="agent", content=text.body,
                status="pending", reply_to=text.reply_to, part=text.part, created_at=utcnow(),
            ).on_conflict_do_nothing(constraint="uq_messages_reply_part"))
            row = (await session.execute(select(Message.id, Message.provider_sid, Message.created_at).where(
                Message.reply_to == text.reply_to, Message.part == text.part))).one()
        if row.provider_sid is not None:
            return None
        sid = await self._sent_before(text, row.created_at) if activity.info().attempt > 1 else None
        if sid is not None:
            activity.logger.info("a text part was sent by an earlier attempt whose reply was lost: %s", sid)
        else:
            sid = await self.telephony.send_sms(to=text.to, from_=text.from_, body=text.body,
                                                status_callback=f"{self.status_callback}?message={row.id}")
        async with transaction(self.sessions) as session:
            await session.execute(update(Message).where(Message.id == row.id).values(
                provider_sid=sid, status=case((Message.status == "pending", "queued"), else_=Message.status)))
            user_id = (await session.execute(select(Conversation.user_id).where(
                Conversation.id == text.conversation_id))).scalar_one()
            if user_id is not None:
                await record_usage(session, user_id=user_id, kind=UsageKind.SMS_SEGMENTS_OUT,
                                   quantity=sms_segments(text.body), source=f"sms:{sid}",
                                   conversation_id=text.conversation_id)
        return sid

    async def _sent_before(self, text: OutgoingText, since: datetime) -> str | None:
        """A message of this text's body, to and from its numbers, sent since its row was written and
        recorded for no other row: the one an earlier attempt sent. (The margin is for the carrier's
        clock; a message Twilio still holds queued has no date sent yet and is sent again.)"""
        candidates = await self.telephony.sent_sms(to=text.to, from_=text.from_, body=text.body,
                                                   since=since - CARRIER_CLOCK_MARGIN)
        if not candidates:
            return None
        async with self.sessions() as session:
            recorded = set((await session.execute(select(Message.provider_sid).where(
                Message.provider_sid.in_(candidates)))).scalars())
        return next((sid for sid in candidates if sid not in recorded), None)

    @activity.defn
    async def mark_answered(self, message_id: uuid.UUID) -> None:
        """One text (histories from before mark_texts_answered replay it)."""
        await self.mark_texts_answered([message_id])

    @activity.defn
    async def mark_texts_answered(self, message_ids: list[uuid.UUID]) -> None:
        async with transaction(self.sessions) as session:
            await session.execute(update(Message).where(Message.id.in_(message_ids)).values(status="answered"))

    def all(self) -> list[object]:
        return [self.record_inbound, self.record_inbound_texts, self.ask_agent, self.send_text, self.mark_answered,
                self.mark_texts_answered]
