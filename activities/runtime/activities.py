"""Agent runtime activities: the side effects of AgentLifecycleWorkflow, behind the AgentRuntime port."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeats import heartbeating
from core.db import transaction
from core.models import AgentInstance, AuditEvent, utcnow
from core.usage import UsageKind, record_usage, started_seconds
from core.ports import AgentEndpoint, AgentRuntime, AgentSpec, ArchiveStore, McpServerSpec, archive_key, export_key


class RestoreInput(BaseModel):
    user_id: uuid.UUID
    key: str


AWAKE_STATES = ("running", "idle")  # a gateway is up (and counted as usage)


class AgentStateChange(BaseModel):
    user_id: uuid.UUID
    from_state: str | None
    to_state: str
    runtime: str
    endpoint: str | None = None
    detail: dict[str, str] = {}
    at: datetime | None = None  # when, by the workflow's clock (awake time is measured on it)


class MemoryExport(BaseModel):
    """Where the agent's memory files wait in the archive store: an export's copy of its
    workspace, or (archived) its whole state, whose workspace/ holds them; None: it has none."""

    key: str | None
    whole_state: bool


def _not_found(error: LookupError) -> ApplicationError:
    return ApplicationError(str(error), type="AgentNotFound", non_retryable=True)


class RuntimeActivities:
    def __init__(self, runtime: AgentRuntime, store: ArchiveStore, sessions: async_sessionmaker[AsyncSession],
                 runtime_name: str,
                 mcp_servers: Callable[[uuid.UUID], Awaitable[list[McpServerSpec]]] | None = None) -> None:
        self.runtime = runtime
        self.store = store
        self.sessions = sessions
        self.runtime_name = runtime_name
        # The platform's own MCP server, first in every agent's config, then the user's own (relayed):
        # loaded here, by the activity, so no token or server of theirs is in Temporal's history.
        self.mcp_servers = mcp_servers

    async def _rendered(self, spec: AgentSpec) -> AgentSpec:
        if self.mcp_servers is None:
            return spec
        return spec.model_copy(update={"mcp_servers": await self.mcp_servers(spec.user_id)})

    @activity.defn
    async def create_agent(self, spec: AgentSpec) -> None:
        await self.runtime.create(await self._rendered(spec))

    @activity.defn
    async def wake_agent(self, user_id: uuid.UUID) -> AgentEndpoint:
        """Idempotent: returns the live endpoint, starting or resuming the gateway if needed."""
        try:
            return await heartbeating(self.runtime.wake(user_id))
        except LookupError as error:
            raise _not_found(error) from None

    @activity.defn
    async def pause_agent(self, user_id: uuid.UUID) -> None:
        await self.runtime.pause(user_id)

    @activity.defn
    async def sleep_agent(self, user_id: uuid.UUID) -> None:
        await heartbeating(self.runtime.sleep(user_id))

    @activity.defn
    async def archive_agent(self, user_id: uuid.UUID) -> str:
        try:
            return await heartbeating(self.runtime.archive(user_id, self.store))
        except LookupError as error:
            raise _not_found(error) from None

    @activity.defn
    async def restore_agent(self, request: RestoreInput) -> None:
        try:
            await heartbeating(self.runtime.restore(request.user_id, self.store, request.key))
        except FileNotFoundError as error:
            raise ApplicationError(str(error), type="ArchiveMissing", non_retryable=True) from None

    @activity.defn
    async def apply_agent_settings(self, spec: AgentSpec) -> None:
        await self.runtime.apply(await self._rendered(spec))

    @activity.defn
    async def export_agent_memory(self, user_id: uuid.UUID) -> MemoryExport:
        """A copy of the agent's memory files in the archive store, for the user's data export."""
        if await heartbeating(self.runtime.export_memory(user_id, self.store)):
            return MemoryExport(key=export_key(user_id), whole_state=False)
        if await self.store.exists(archive_key(user_id)):  # archived: the files are in the archive
            return MemoryExport(key=archive_key(user_id), whole_state=True)
        return MemoryExport(key=None, whole_state=False)

    @activity.defn
    async def delete_agent(self, user_id: uuid.UUID) -> None:
        """Removes the agent, its state, its archive and its row, and audits it (idempotent)."""
        await heartbeating(self.runtime.delete(user_id))
        await self.store.delete(archive_key(user_id))
        await self.store.delete(export_key(user_id))
        info = activity.info()
        async with transaction(self.sessions) as session:
            gone = await session.execute(delete(AgentInstance).where(AgentInstance.user_id == user_id))
            if gone.rowcount:  # type: ignore[attr-defined]
                session.add(AuditEvent(user_id=user_id, actor=info.workflow_type, action="agent.deleted",
                                       workflow_id=info.workflow_id, detail={"run_id": info.workflow_run_id}))

    @activity.defn
    async def record_agent_state(self, change: AgentStateChange) -> None:
        """The agent row follows the workflow's state, and every transition is audited."""
        info = activity.info()
        now = change.at or utcnow()
        row = {"id": uuid.uuid4(), "user_id": change.user_id, "runtime": self.runtime_name,
               "state": change.to_state.lower(), "endpoint": change.endpoint, "created_at": now, "updated_at": now}
        upsert = insert(AgentInstance).values(**row).on_conflict_do_update(
            index_elements=["user_id"],
            set_={"state": row["state"], "endpoint": change.endpoint, "updated_at": now})
        async with transaction(self.sessions) as session:
            await self._count_awake(session, change, now)
            await session.execute(upsert)
            session.add(AuditEvent(
                user_id=change.user_id, actor=info.workflow_type, action=f"agent.{change.to_state.lower()}",
                workflow_id=info.workflow_id,
                detail={"from": change.from_state, "to": change.to_state, "run_id": info.workflow_run_id, **change.detail},
            ))

    @staticmethod
    async def _count_awake(session: AsyncSession, change: AgentStateChange, now: datetime) -> None:
        """Awake time (Running or Idle) is usage: an awake period is recorded when the agent sleeps."""
        since = (await session.execute(select(AgentInstance.awake_since).where(
            AgentInstance.user_id == change.user_id).with_for_update())).scalar_one_or_none()
        state = change.to_state.lower()
        if state in AWAKE_STATES and since is None:
            await session.execute(update(AgentInstance).where(AgentInstance.user_id == change.user_id)
                                  .values(awake_since=now))
        elif state not in AWAKE_STATES and since is not None:
            await record_usage(session, user_id=change.user_id, kind=UsageKind.AWAKE_SECONDS,
                               quantity=started_seconds((now - since).total_seconds()),
                               source=f"awake:{change.user_id}:{since.isoformat()}", occurred_at=now)
            await session.execute(update(AgentInstance).where(AgentInstance.user_id == change.user_id)
                                  .values(awake_since=None))

    def all(self) -> list[object]:
        return [self.create_agent, self.wake_agent, self.pause_agent, self.sleep_agent, self.archive_agent,
                self.restore_agent, self.apply_agent_settings, self.delete_agent, self.record_agent_state,
                self.export_agent_memory]
