"""User records: created by provisioning, removed by its compensation."""

from __future__ import annotations

import uuid

from pydantic import BaseModel
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.db import transaction
from core.models import User


class NewUser(BaseModel):
    user_id: uuid.UUID
    phone: str
    email: str
    voice: str
    personality: str
    agent_name: str
    pin_digest: str | None = None  # core.callers.pin_digest; a returning user keeps theirs


class UserActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    @activity.defn
    async def create_user(self, new: NewUser) -> bool:
        """Creates the verified user; False if this very user exists already (a retry or a re-run).
        A different user on the same phone is a non-retryable `PhoneTaken`."""
        async with transaction(self.sessions) as session:
            existing = (await session.execute(select(User).where(User.phone_e164 == new.phone))).scalar_one_or_none()
            if existing is not None:
                if existing.id != new.user_id:
                    raise ApplicationError(f"{new.phone} belongs to another user", type="PhoneTaken",
                                           non_retryable=True)
                return False
            session.add(User(id=new.user_id, phone_e164=new.phone, phone_verified=True, email=new.email,
                             email_verified=True, voice=new.voice, personality=new.personality,
                             agent_name=new.agent_name, pin_digest=new.pin_digest))
            return True

    @activity.defn
    async def remove_user(self, user_id: uuid.UUID) -> None:
        """Compensation: the partial user goes (their rows cascade). Idempotent."""
        async with transaction(self.sessions) as session:
            await session.execute(delete(User).where(User.id == user_id))

    def all(self) -> list[object]:
        return [self.create_user, self.remove_user]
