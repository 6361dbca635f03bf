"""Worker liveness rows: workers beat while they poll; /healthz counts the fresh ones."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db import transaction
from core.models import ServiceHeartbeat, utcnow


async def beat(sessions: async_sessionmaker[AsyncSession], *, instance: str, service: str, task_queue: str,
               detail: dict[str, Any] | None = None) -> None:
    now = utcnow()
    statement = insert(ServiceHeartbeat).values(
        instance=instance, service=service, task_queue=task_queue, last_seen=now, detail=detail or {}
    ).on_conflict_do_update(index_elements=["instance"], set_={"last_seen": now, "detail": detail or {}})
    async with transaction(sessions) as session:
        await session.execute(statement)


async def forget(sessions: async_sessionmaker[AsyncSession], *, instance: str) -> None:
    async with transaction(sessions) as session:
        await session.execute(delete(ServiceHeartbeat).where(ServiceHeartbeat.instance == instance))


async def fresh_details(sessions: async_sessionmaker[AsyncSession], *, service: str,
                        stale_after_s: float) -> list[dict[str, Any]]:
    """What each live instance of `service` last reported (one entry per instance)."""
    cutoff = utcnow() - timedelta(seconds=stale_after_s)
    async with sessions() as session:
        result = await session.execute(
            select(ServiceHeartbeat.detail).where(ServiceHeartbeat.service == service,
                                                  ServiceHeartbeat.last_seen >= cutoff))
        return [dict(detail or {}) for detail in result.scalars()]
