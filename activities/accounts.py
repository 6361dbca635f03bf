"""Closing an account (DeleteUserWorkflow's steps): each idempotent, so a retried or replayed step
does no harm, and each safe to run after the one before it failed half-way."""

from __future__ import annotations

import uuid

from pydantic import BaseModel
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from activities.heartbeats import heartbeating
from activities.integrations.credentials import Credentials
from core.db import transaction
from core.models import AuditEvent, OutboxEmail, PhoneNumber, Reminder, User, WebSession, utcnow
from workflows.agent_lifecycle import AgentLifecycleWorkflow
from workflows.agent_lifecycle import workflow_id as lifecycle_id
from workflows.reminder import ReminderWorkflow
from workflows.reminder import workflow_id as reminder_workflow_id


class QuarantinedNumber(BaseModel):
    e164: str


class Deletion(BaseModel):
    user_id: uuid.UUID
    requested_by: str  # "user", or the operator's address


class AccountActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], credentials: Credentials) -> None:
        self.sessions, self.credentials = sessions, credentials

    @activity.defn
    async def close_account(self, user_id: uuid.UUID) -> None:
        """Nothing reaches or leaves the account from now on: suspended (calls and texts to the
        number, the platform's texts and calls), signed out everywhere, the agent's tokens revoked."""
        async with transaction(self.sessions) as session:
            await session.execute(update(User).where(User.id == user_id).values(
                suspended_at=utcnow(), mcp_token_generation=User.mcp_token_generation + 1))
            await session.execute(update(WebSession).where(WebSession.user_id == user_id,
                                                           WebSession.revoked_at.is_(None))  # type: ignore[union-attr]
                                  .values(revoked_at=utcnow()))

    @activity.defn
    async def cancel_reminders(self, user_id: uuid.UUID) -> int:
        """Cancels every scheduled reminder through its workflow (the only place a reminder changes);
        one being delivered at this moment finishes. Returns how many were cancelled."""
        async with self.sessions() as session:
            ids = (await session.execute(select(Reminder.id).where(Reminder.user_id == user_id,
                                                                   Reminder.state == "scheduled"))).scalars().all()
        client = activity.client()
        cancelled = 0
        for reminder_id in ids:
            try:
                change = await client.get_workflow_handle(reminder_workflow_id(reminder_id)).execute_update(
                    ReminderWorkflow.cancel)
                cancelled += change.took_effect
            except (RPCError, WorkflowUpdateFailedError) as error:  # ended already
                activity.logger.info("reminder %s not cancelled: %s", reminder_id, error)
        return cancelled

    @activity.defn
    async def remove_agent(self, user_id: uuid.UUID) -> None:
        """The agent deleted by its lifecycle (gateway, state and archive), waited for."""
        handle = activity.client().get_workflow_handle(lifecycle_id(user_id))
        try:
            await handle.signal(AgentLifecycleWorkflow.remove)
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND and "already completed" not in str(error):
                raise
            activity.logger.info("no running lifecycle for %s: %s", user_id, error)
            return
        await heartbeating(handle.result())

    @activity.defn
    async def revoke_integrations(self, user_id: uuid.UUID) -> list[str]:
        """The user's Google and Microsoft access revoked at the provider (where it can be) and our
        copies deleted; the providers disconnected, by name (tokens stay inside this activity)."""
        return [provider.value for provider in await self.credentials.disconnect_all(user_id)]

    @activity.defn
    async def quarantine_number(self, user_id: uuid.UUID) -> QuarantinedNumber | None:
        """The number leaves the user but no one gets it yet (callers hear it is not in service)."""
        async with transaction(self.sessions) as session:
            number = (await session.execute(select(PhoneNumber).where(PhoneNumber.user_id == user_id)
                                            .with_for_update())).scalar_one_or_none()
            if number is None:
                return None
            number.state, number.user_id, number.released_at = "releasing", None, utcnow()
            return QuarantinedNumber(e164=number.e164)

    @activity.defn
    async def delete_user(self, deletion: Deletion) -> bool:
        """The user's row and, by cascade, everything of theirs in the database; their own audit
        trail too, except operators' actions on them (kept for accountability, their details cut to
        who did it); mail the local outbox holds for them. The deletion is recorded (by id, nothing
        personal). False if they were gone already."""
        info = activity.info()
        async with transaction(self.sessions) as session:
            user = await session.get(User, deletion.user_id)
            if user is None:
                return False
            await session.execute(delete(AuditEvent).where(AuditEvent.user_id == user.id, AuditEvent.actor != "operator"))
            await session.execute(update(AuditEvent).where(AuditEvent.user_id == user.id, AuditEvent.actor == "operator")
                                  .values(detail=func.jsonb_build_object("operator", AuditEvent.detail["operator"])))
            if user.email:
                await session.execute(delete(OutboxEmail).where(func.lower(OutboxEmail.to_address) == user.email.lower()))
            await session.execute(delete(User).where(User.id == user.id))
            session.add(AuditEvent(user_id=None, actor=info.workflow_type, action="user.deleted",
                                   workflow_id=info.workflow_id,
                                   detail={"user_id": str(deletion.user_id), "requested_by": deletion.requested_by}))
        return True

    @activity.defn
    async def return_quarantined_number(self, number: QuarantinedNumber) -> bool:
        """After the quarantine, the number is the pool's again (if nothing else retired it meanwhile)."""
        async with transaction(self.sessions) as session:
            back = await session.execute(update(PhoneNumber).where(
                PhoneNumber.e164 == number.e164, PhoneNumber.state == "releasing", PhoneNumber.user_id.is_(None))  # type: ignore[union-attr]
                .values(state="available", assigned_at=None))
        return bool(back.rowcount)  # type: ignore[attr-defined]

    def all(self) -> list[object]:
        return [self.close_account, self.cancel_reminders, self.remove_agent, self.revoke_integrations,
                self.quarantine_number,
                self.delete_user, self.return_quarantined_number]
