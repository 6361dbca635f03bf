"""Database activities shared by every workflow."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from core.db import transaction
from core.models import AuditEvent


class AuditEventInput(BaseModel):
    actor: str
    action: str
    user_id: uuid.UUID | None = None
    workflow_id: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class StoreActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    @activity.defn
    async def record_audit_event(self, event: AuditEventInput) -> int:
        """Append one audit row; returns its id. Workflows call this on every state transition."""
        async with transaction(self.sessions) as session:
            row = AuditEvent(**event.model_dump())
            session.add(row)
            await session.flush()
            assert row.id is not None
            activity.logger.info("audit %s %s", event.actor, event.action)
            return row.id
