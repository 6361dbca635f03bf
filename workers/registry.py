"""What the platform's task queue runs. One place, so the worker process and tests agree."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activities.store import StoreActivities

WORKFLOWS: Sequence[type] = ()


def activities(sessions: async_sessionmaker[AsyncSession]) -> list[Callable[..., Any]]:
    store = StoreActivities(sessions)
    return [store.record_audit_event]
