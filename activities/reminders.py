"""Reminders the user's agent sets through the platform MCP server (workflows/reminder.py): the
agent phrases each one shortly before it is due, and the `reminders` row follows the workflow
(next due time, occurrences delivered, final state). Delivery itself is activities/delivery.py."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from activities.agent_chat import AgentChat
from core.db import transaction
from core.models import Channel, Reminder
from core.texts import reminder_prompt

REMINDER_SESSION = "reminders"  # the agent's session for phrasing reminders (its memory is shared)


class PhraseRequest(BaseModel):
    user_id: uuid.UUID
    text: str
    channel: Channel


class ReminderRow(BaseModel):
    """What changed on a reminder's row; None leaves a column as it is."""

    reminder_id: uuid.UUID
    state: str | None = None
    due_at: datetime | None = None
    occurrences: int | None = None


class ReminderActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], agent: AgentChat) -> None:
        self.sessions = sessions
        self.agent = agent

    @activity.defn
    async def phrase_reminder(self, request: PhraseRequest) -> str:
        """The agent's words for the reminder (woken first): the text, or how the call opens."""
        words = await self.agent.ask(request.user_id, [
            {"role": "user", "content": reminder_prompt(request.text, by_call=request.channel == Channel.CALL)}],
            session_key=REMINDER_SESSION)
        if not words:
            raise ValueError("the agent answered with nothing")
        return " ".join(words.split())[:600]

    @activity.defn
    async def update_reminder(self, change: ReminderRow) -> None:
        values = {k: v for k, v in change.model_dump(exclude={"reminder_id"}).items() if v is not None}
        async with transaction(self.sessions) as session:
            await session.execute(update(Reminder).where(Reminder.id == change.reminder_id).values(**values))

    def all(self) -> list[object]:
        return [self.phrase_reminder, self.update_reminder]
