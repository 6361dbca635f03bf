"""SmsConversationWorkflow on a real Temporal server and PostgreSQL: a text that comes in while the
turn's first text is still being recorded (a pair sent back to back) joins that turn, so both get
one answer and neither waits for a turn of its own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.texts import InboundText, Recorded, TextActivities
from core.models import Conversation, Message, User
from core.settings import Settings
from tests.conftest import LocalCarrier
from tests.polling import until
from workflows.sms_conversation import SmsConversationInput, SmsConversationWorkflow, workflow_id


class Agent:
    """Answers each question with what it was asked, and keeps the questions."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def ask(self, user_id: uuid.UUID, messages: list[dict[str, Any]], *, session_key: str) -> str:
        self.asked.append(messages[-1]["content"])
        return f"Answering: {messages[-1]['content']}"


class GatedTexts(TextActivities):
    """Recording a turn's texts waits until the test lets it go on."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.recording = asyncio.Event()
        self.go_on = asyncio.Event()

    @activity.defn(name="record_inbound_texts")
    async def record_inbound_texts(self, texts: list[InboundText]) -> list[Recorded]:
        self.recording.set()
        await self.go_on.wait()
        return await super().record_inbound_texts(texts)


async def test_a_text_that_comes_in_while_the_first_is_recorded_joins_its_turn(
        temporal_env: WorkflowEnvironment, settings: Settings, sessions: async_sessionmaker[AsyncSession],
        local_carrier: LocalCarrier, owner: tuple[User, str]) -> None:
    user, number = owner
    client, queue, agent = temporal_env.client, f"sms-{uuid.uuid4().hex[:6]}", Agent()
    texts = GatedTexts(local_carrier.telephony, sessions, settings, agent)

    def text(body: str) -> InboundText:
        return InboundText(message_sid=f"SM{uuid.uuid4().hex}", user_id=user.id, from_=user.phone_e164, to=number,
                           body=body, received_at=datetime.now(UTC))

    async def answered() -> list[str]:
        async with sessions() as session:
            return list((await session.scalars(select(Message.content).join(
                Conversation, Conversation.id == Message.conversation_id).where(
                Conversation.user_id == user.id, Message.role == "user", Message.status == "answered"))).all())

    async with Worker(client, task_queue=queue, workflows=[SmsConversationWorkflow], activities=texts.all()):
        handle = await client.start_workflow(
            SmsConversationWorkflow.run, SmsConversationInput(user_id=user.id), id=workflow_id(user.id),
            task_queue=queue, start_signal="text_received", start_signal_args=[text("are you there?")])
        try:
            await asyncio.wait_for(texts.recording.wait(), 30)
            await handle.signal(SmsConversationWorkflow.text_received, text("what's on today?"))
            await until(lambda: _waiting(handle, 1), "the second text in the queue")
            texts.go_on.set()
            await until(lambda: _answered_both(answered), "both texts marked answered")
        finally:
            await handle.terminate()
    assert agent.asked == ["are you there?\nwhat's on today?"], "one turn for both texts"
    assert local_carrier.texts_to(user.phone_e164) == ["Answering: are you there? what's on today?"]


async def _waiting(handle: Any, count: int) -> bool:
    return await handle.query(SmsConversationWorkflow.waiting) == count


async def _answered_both(answered: Callable[[], Awaitable[list[str]]]) -> bool:
    return sorted(await answered()) == ["are you there?", "what's on today?"]
