"""Which warm agent pod serves which user, decided in PostgreSQL (the `agent_pods` table).

The Kubernetes runtime runs in every worker at once, so a claim cannot be decided in one process's
memory: as with phone numbers (activities/numbers/pool.py), a claim takes a ready row that no other
transaction holds (`FOR UPDATE SKIP LOCKED`), and the table's constraints keep it exclusive both
ways (one user per pod, once; one pod per user).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db import transaction
from core.models import AgentPod


class PodState(StrEnum):
    STARTING = "starting"  # created, OpenClaw booting and warming up
    READY = "ready"  # warm, nobody's
    LOADING = "loading"  # claimed: the user's state and agent are being loaded into it
    SERVING = "serving"  # the user's agent answers there


@dataclass(frozen=True)
class Claim:
    name: str
    state: PodState
    claimed_at: datetime | None
    key_id: str | None  # the platform secret its gateway token derives from
    new: bool  # this call took it from the pool (else it was the user's already)


class PodClaims:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], pool: str) -> None:
        self.sessions = sessions
        self.pool = pool

    async def add_spares(self, target: int, make_name: Callable[[], str], key_id: str | None) -> list[str]:
        """Rows for the spares this pool lacks (starting + ready < target), named by `make_name()`.
        Workers replenish at once: a transaction-scoped advisory lock per pool makes the count and
        the inserts one step, so the pool never overshoots its target."""
        async with transaction(self.sessions) as session:
            await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"agent-pods:{self.pool}"})
            have = (await session.execute(
                select(func.count()).select_from(AgentPod).where(
                    AgentPod.pool == self.pool, AgentPod.state.in_([PodState.STARTING, PodState.READY])))).scalar_one()
            names = [make_name() for _ in range(max(0, target - have))]
            for name in names:
                session.add(AgentPod(name=name, pool=self.pool, state=PodState.STARTING, key_id=key_id))
        return names

    async def starting(self) -> list[tuple[str, str | None]]:
        """(name, key id) of the pool's pods still starting."""
        async with self.sessions() as session:
            rows = await session.execute(select(AgentPod.name, AgentPod.key_id).where(
                AgentPod.pool == self.pool, AgentPod.state == PodState.STARTING))
            return [(name, key_id) for name, key_id in rows.all()]

    async def mark_ready(self, name: str) -> None:
        async with transaction(self.sessions) as session:
            await session.execute(update(AgentPod).where(AgentPod.name == name, AgentPod.state == PodState.STARTING)
                                  .values(state=PodState.READY))

    async def held_by(self, user_id: uuid.UUID) -> Claim | None:
        async with self.sessions() as session:
            row = (await session.execute(select(AgentPod).where(AgentPod.user_id == user_id))).scalar_one_or_none()
            return _claim(row, new=False) if row else None

    async def claim(self, user_id: uuid.UUID) -> Claim | None:
        """The user's pod: the one they hold already, else a ready spare taken for them; None if no
        spare is ready. Two claims racing for one user: the unique user_id lets one win; the other
        then finds the winner's."""
        try:
            async with transaction(self.sessions) as session:
                mine = (await session.execute(select(AgentPod).where(AgentPod.user_id == user_id))).scalar_one_or_none()
                if mine is not None:
                    return _claim(mine, new=False)
                spare = (await session.execute(
                    select(AgentPod).where(AgentPod.pool == self.pool, AgentPod.state == PodState.READY)
                    .order_by(AgentPod.created_at).limit(1).with_for_update(skip_locked=True))).scalar_one_or_none()
                if spare is None:
                    return None
                spare.state, spare.user_id = PodState.LOADING, user_id
                spare.claimed_at = (await session.execute(text("SELECT now()"))).scalar_one()
                return _claim(spare, new=True)
        except IntegrityError:  # another claim for this user committed first
            return await self.held_by(user_id)

    async def mark_serving(self, name: str, user_id: uuid.UUID) -> None:
        async with transaction(self.sessions) as session:
            await session.execute(update(AgentPod).where(AgentPod.name == name, AgentPod.user_id == user_id)
                                  .values(state=PodState.SERVING))

    async def drop(self, name: str) -> None:
        """The pod is gone or going: its row goes with it (a claimed pod never returns to the pool)."""
        async with transaction(self.sessions) as session:
            await session.execute(delete(AgentPod).where(AgentPod.name == name))

    async def counts(self) -> dict[PodState, int]:
        async with self.sessions() as session:
            rows = await session.execute(select(AgentPod.state, func.count()).where(AgentPod.pool == self.pool)
                                         .group_by(AgentPod.state))
            found = {PodState(state): count for state, count in rows.all()}
        return {state: found.get(state, 0) for state in PodState}


def _claim(row: AgentPod, *, new: bool) -> Claim:
    return Claim(row.name, PodState(row.state), row.claimed_at, row.key_id, new=new)
