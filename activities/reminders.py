"""Reminders the user's agent sets through the platform MCP server: delivered by text or by a call
from the user's own number, and their state kept in the `reminders` table."""

from __future__ import annotations

import uuid

from pydantic import BaseModel
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.callbacks import call_user_with_agent
from core.db import transaction
from core.models import PhoneNumber, Reminder, User
from core.ports import Telephony
from core.settings import Settings


class ReminderState(BaseModel):
    reminder_id: uuid.UUID
    state: str  # fired | cancelled | failed


class ReminderActivities:
    def __init__(self, telephony: Telephony, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        self.telephony = telephony
        self.sessions = sessions
        self.settings = settings

    @activity.defn
    async def deliver_reminder(self, reminder_id: uuid.UUID) -> str:
        """Texts the reminder, or calls the user with their agent opening with it; returns the SID."""
        async with self.sessions() as session:
            row = (await session.execute(
                select(Reminder, User, PhoneNumber.e164).join(User, Reminder.user_id == User.id)
                .outerjoin(PhoneNumber, (PhoneNumber.user_id == User.id) & (PhoneNumber.state == "assigned"))
                .where(Reminder.id == reminder_id))).one_or_none()
        if row is None:
            raise ApplicationError(f"reminder {reminder_id} is gone", type="ReminderMissing", non_retryable=True)
        reminder, user, number = row
        if number is None:
            raise ApplicationError("the user has no number to send from", type="NoNumber", non_retryable=True)
        if user.sms_opted_out_at is not None:
            raise ApplicationError("the user opted out of texts and calls (STOP)", type="OptedOut", non_retryable=True)
        if reminder.channel == "call":
            return await call_user_with_agent(
                self.telephony, self.settings, user_id=user.id, to=user.phone_e164, from_=number,
                greeting=f"Hi, it's {user.agent_name} with your reminder: {reminder.text}",
                purpose=f"to remind them: {reminder.text}. Help with anything it needs.")
        return await self.telephony.send_sms(to=user.phone_e164, from_=number, body=f"Reminder: {reminder.text}")

    @activity.defn
    async def set_reminder_state(self, change: ReminderState) -> None:
        async with transaction(self.sessions) as session:
            await session.execute(update(Reminder).where(Reminder.id == change.reminder_id).values(state=change.state))

    def all(self) -> list[object]:
        return [self.deliver_reminder, self.set_reminder_state]
