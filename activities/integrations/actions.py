"""What the agent may only propose: sending a mail draft and cancelling a calendar event. The tool
records a pending action (pending_actions) and the owner is texted a confirmation naming its short
reference; only the owner's reply from their own phone ("YES 4821" or "NO 4821", checked by the SMS
webhook before anything reaches the agent) carries it out. The prompt cannot: no tool sends or
cancels, and a reply is taken only from the owner's number.

Proposed while the owner is on a call with their agent (their own phone, or after the PIN where one
is needed), the action is bound to that call as well: the platform's voice proxy hears the caller's
own yes or no there (voice/confirmations.py), before the words reach the agent.

Carrying out holds the action's row (FOR UPDATE) across the provider call, so two replies at once
act once, and a crash before the commit leaves it pending (nothing half-recorded)."""

from __future__ import annotations

import logging
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activities.integrations.credentials import Credentials, NotConnected
from activities.integrations.workspaces import workspace_of
from core.db import transaction
from core.integrations import Provider
from core.callers import CallerTrust
from core.models import AuditEvent, MediaStream, PendingAction, utcnow
from core.workspace import ProviderFailed

log = logging.getLogger(__name__)

CONFIRM_WITHIN = timedelta(minutes=30)
ANSWERED_KEPT = timedelta(days=1)  # a second reply to an answered request is told so, this long
REFERENCE_DIGITS = 4
_REPLY = re.compile(r"^\s*(yes|y|ok|confirm|send|no|n|cancel|stop it|don'?t)\W*\s*#?(\d{4})\s*[.!]?\s*$", re.I)
_YES = ("yes", "y", "ok", "confirm", "send")


class ActionKind(StrEnum):
    SEND_MAIL = "send_mail"
    CANCEL_EVENT = "cancel_event"


class ActionState(StrEnum):
    PENDING = "pending"
    DONE = "done"
    DECLINED = "declined"
    FAILED = "failed"
    EXPIRED = "expired"


# What the owner is asked, and told after: by kind.
ASK = {ActionKind.SEND_MAIL: "Your agent wants to send {summary}. Reply YES {ref} to send it, or NO {ref}.",
       ActionKind.CANCEL_EVENT: "Your agent wants to cancel {summary}. Reply YES {ref} to cancel it, or NO {ref}."}
DONE = {ActionKind.SEND_MAIL: "Sent: {summary}.", ActionKind.CANCEL_EVENT: "Cancelled: {summary}."}
DECLINED = {ActionKind.SEND_MAIL: "Okay, not sent: {summary}.", ActionKind.CANCEL_EVENT: "Okay, kept: {summary}."}
SPOKEN_ASK = {ActionKind.SEND_MAIL: "Shall I send {summary}? Say yes or no.",
              ActionKind.CANCEL_EVENT: "Shall I cancel {summary}? Say yes or no."}


@dataclass(frozen=True)
class Proposal:
    action: PendingAction
    text: str  # the confirmation text to send the owner
    spoken: str | None  # what to ask on the owner's call, when it was proposed during one


@dataclass(frozen=True)
class Reply:
    """The owner's answer to a confirmation text."""

    yes: bool
    reference: str


def reply_of(words: str) -> Reply | None:
    """"YES 4821" / "no 4821" / "Send #4821"; None for anything else (it goes to the agent)."""
    if not (match := _REPLY.match(words)):
        return None
    return Reply(yes=match[1].lower() in _YES, reference=match[2])


class PendingActions:
    def __init__(self, credentials: Credentials, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.credentials, self.sessions = credentials, sessions

    async def propose(self, user_id: uuid.UUID, provider: Provider, kind: ActionKind, target: str,
                      summary: str) -> Proposal:
        """The pending action, bound to the owner's call if they are on one."""
        call = await self._owners_call(user_id)
        for _ in range(20):  # a reference is unique among the user's pending actions (a partial index)
            action = PendingAction(user_id=user_id, provider=provider.value, kind=kind.value, target=target,
                                   summary=summary[:600], expires_at=utcnow() + CONFIRM_WITHIN, call_stream_id=call,
                                   reference=f"{secrets.randbelow(10 ** REFERENCE_DIGITS):0{REFERENCE_DIGITS}d}")
            try:
                async with transaction(self.sessions) as session:
                    session.add(action)
            except IntegrityError:
                continue
            log.info("user %s: pending %s %s (reference %s%s)", user_id, kind.value, action.id, action.reference,
                     ", on their call" if call else "")
            return Proposal(action, ASK[kind].format(summary=summary, ref=action.reference),
                            SPOKEN_ASK[kind].format(summary=summary) if call else None)
        raise RuntimeError("no free confirmation reference")  # 20 collisions among at most a few pending

    async def _owners_call(self, user_id: uuid.UUID) -> uuid.UUID | None:
        """The user's call in progress whose caller is the owner (by their phone, or by the PIN)."""
        async with self.sessions() as session:
            return (await session.execute(select(MediaStream.id).where(
                MediaStream.user_id == user_id, MediaStream.connected_at.is_not(None), MediaStream.ended_at.is_(None),
                or_(MediaStream.params["trust"].astext.is_(None),  # a call the platform placed to the owner
                    MediaStream.params["trust"].astext == CallerTrust.OWNER.value,
                    MediaStream.verified_at.is_not(None)))
                .order_by(MediaStream.connected_at.desc()).limit(1))).scalar_one_or_none()

    async def decide_on_call(self, user_id: uuid.UUID, stream_id: uuid.UUID, yes: bool) -> str | None:
        """The caller's spoken yes or no to the newest action waiting on this call; None if none waits."""
        async with self.sessions() as session:
            reference = (await session.execute(select(PendingAction.reference).where(
                PendingAction.user_id == user_id, PendingAction.call_stream_id == stream_id,
                PendingAction.state == ActionState.PENDING.value).order_by(PendingAction.created_at.desc())
                .limit(1))).scalar_one_or_none()
        if reference is None:
            return None
        return await self.decide(user_id, Reply(yes=yes, reference=reference), by="call")

    async def decide(self, user_id: uuid.UUID, reply: Reply, now: datetime | None = None, *,
                     by: str = "sms") -> str | None:
        """Carries out (or declines) the action the owner's reply names; what to text back. None if no
        action of the user's lately had that reference (the words are for the agent, then)."""
        now = now or utcnow()
        async with transaction(self.sessions) as session:
            action = (await session.execute(select(PendingAction).where(
                PendingAction.user_id == user_id, PendingAction.reference == reply.reference,
                PendingAction.state == ActionState.PENDING.value).with_for_update())).scalar_one_or_none()
            if action is None:
                answered = (await session.execute(select(PendingAction.state).where(
                    PendingAction.user_id == user_id, PendingAction.reference == reply.reference,
                    PendingAction.created_at > now - ANSWERED_KEPT).limit(1))).scalar()
                return None if answered is None else f"{reply.reference} was answered already ({answered})."
            kind = ActionKind(action.kind)
            if action.expires_at <= now:
                state, text = ActionState.EXPIRED, (f"That request ({reply.reference}) expired; ask your agent again "
                                                    "if you still want it.")
            elif not reply.yes:
                state, text = ActionState.DECLINED, DECLINED[kind].format(summary=action.summary)
            else:
                state, text = await self._carry_out(user_id, action, kind)
            await session.execute(update(PendingAction).where(PendingAction.id == action.id).values(
                state=state.value, decided_at=now, detail=text[:600]))
            session.add(AuditEvent(user_id=user_id, actor=by, action=f"action.{state.value}",
                                   detail={"kind": kind.value, "provider": action.provider, "action": str(action.id)}))
        log.info("user %s: %s %s is %s", user_id, kind.value, action.id, state.value)
        return text

    async def _carry_out(self, user_id: uuid.UUID, action: PendingAction, kind: ActionKind) -> tuple[ActionState, str]:
        workspace = workspace_of(self.credentials, user_id, Provider(action.provider))
        verb = "Not sent" if kind == ActionKind.SEND_MAIL else "Not cancelled"
        try:
            if kind == ActionKind.SEND_MAIL:
                await workspace.send_draft(action.target)
            else:
                await workspace.cancel_event(action.target)
        except NotConnected as missing:
            return ActionState.FAILED, f"{verb}: {missing}; connect it again on the dashboard."
        except ProviderFailed as failed:
            return ActionState.FAILED, f"{verb}: {failed.detail}"
        return ActionState.DONE, DONE[kind].format(summary=action.summary)
