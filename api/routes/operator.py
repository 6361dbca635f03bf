"""The operators' pages (audience: an operator in a browser, listed in DEEPCLAW_OPERATORS): every
user read-only, with their workflows and a link to Temporal UI filtered by their UserId; suspend
and resume a user; block a calling number. Every view and action is written to the audit table.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import quote

import phonenumbers
from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import delete, func, or_, select
from sqlalchemy.dialects.postgresql import insert
from temporalio.client import Client
from temporalio.service import RPCError

from api.deps import CsrfDep, SessionDep, SettingsDep, SignedInDep, TemporalDep
from api.pages import live_state, local_time, render, summaries
from api.sign_in import DEFAULT_REGION, Viewer
from core.models import AgentInstance, AuditEvent, BlockedNumber, Conversation, PhoneNumber, Reminder, User, utcnow
from core.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(prefix="/operator")

USERS_PAGE = 25
SHOWN_WORKFLOWS = 50
LIST_TIMEOUT_S = 3.0


def _operator(viewer: SignedInDep) -> Viewer:
    """Operators only; to anyone else these pages do not exist."""
    if not viewer.operator:
        raise HTTPException(status_code=404)
    return viewer


OperatorDep = Annotated[Viewer, Depends(_operator)]


async def _audit(session: SessionDep, viewer: Viewer, action: str, user_id: uuid.UUID | None = None,
                 **detail: Any) -> None:
    session.add(AuditEvent(user_id=user_id, actor="operator", action=action,
                           detail={"operator": viewer.operator, **detail}))
    await session.commit()


def temporal_ui_link(settings: Settings, user_id: uuid.UUID) -> str:
    """Temporal UI's workflow list filtered by the user's UserId search attribute."""
    query = quote(f'UserId="{user_id}"', safe="")
    return f"{settings.temporal_ui_url}/namespaces/{settings.temporal_namespace}/workflows?query={query}"


@router.get("", response_class=HTMLResponse)
async def users(request: Request, settings: SettingsDep, session: SessionDep, viewer: OperatorDep,
                q: Annotated[str, Query(max_length=100)] = "",
                page: Annotated[int, Query(ge=1, le=10_000)] = 1) -> Response:
    query = (select(User, PhoneNumber.e164, AgentInstance.state)
             .outerjoin(PhoneNumber, PhoneNumber.user_id == User.id)
             .outerjoin(AgentInstance, AgentInstance.user_id == User.id))
    needle = q.strip()
    if needle:
        like = f"%{needle.lower()}%"
        query = query.where(or_(func.lower(User.email).like(like), User.phone_e164.like(like),  # type: ignore[union-attr]
                                func.lower(User.agent_name).like(like), PhoneNumber.e164.like(like)))  # type: ignore[union-attr]
    rows = (await session.execute(query.order_by(User.created_at.desc())  # type: ignore[attr-defined]
                                  .offset((page - 1) * USERS_PAGE).limit(USERS_PAGE + 1))).all()
    await _audit(session, viewer, "operator.listed_users", q=needle, page=page)
    return render(request, settings, "operator_users.html", viewer=viewer, csrf=viewer.csrf, active="operator",
                  rows=rows[:USERS_PAGE], more=len(rows) > USERS_PAGE, q=needle, page=page,
                  when=lambda moment: local_time(moment, "UTC"))


async def workflows_of(client: Client | None, user_id: uuid.UUID) -> list[dict[str, Any]] | None:
    """The user's workflows (any kind, newest first) with their state; None if Temporal is unreachable."""
    if client is None:
        return None
    found = []
    try:
        async for execution in client.list_workflows(f'UserId = "{user_id}"', limit=SHOWN_WORKFLOWS,
                                                     rpc_timeout=timedelta(seconds=LIST_TIMEOUT_S)):
            found.append({"id": execution.id, "type": execution.workflow_type, "run_id": execution.run_id,
                          "status": execution.status.name.replace("_", " ").capitalize() if execution.status else "",
                          "started": execution.start_time})
    except RPCError as error:
        log.warning("workflows of %s not listed: %s", user_id, error)
        return None
    return found


@router.get("/users/{user_id}", response_class=HTMLResponse)
async def user_page(request: Request, user_id: uuid.UUID, settings: SettingsDep, session: SessionDep,
                    temporal: TemporalDep, viewer: OperatorDep, notice: str | None = None) -> Response:
    user = await session.get(User, user_id)
    if user is None:
        raise HTTPException(status_code=404, detail="No such user.")
    number = (await session.execute(select(PhoneNumber.e164).where(PhoneNumber.user_id == user_id))).scalar()
    state, live = await live_state(temporal, session, user_id)
    conversations = await summaries(session, (await session.execute(
        select(Conversation).where(Conversation.user_id == user_id)
        .order_by(Conversation.started_at.desc()).limit(10))).scalars().all())  # type: ignore[attr-defined]
    reminders = (await session.execute(select(Reminder).where(Reminder.user_id == user_id, Reminder.state == "scheduled")
                                       .order_by(Reminder.due_at).limit(10))).scalars().all()
    workflows = await workflows_of(temporal, user_id)
    await _audit(session, viewer, "operator.viewed_user", user_id=user_id)
    return render(request, settings, "operator_user.html", viewer=viewer, csrf=viewer.csrf, active="operator",
                  user=user, number=number, state=state, live=live, conversations=conversations,
                  reminders=reminders, workflows=workflows, temporal_ui=temporal_ui_link(settings, user_id),
                  when=lambda moment: local_time(moment, "UTC"),
                  notice={"suspended": "Suspended.", "resumed": "Resumed."}.get(notice or ""))


@router.post("/users/{user_id}/suspend", dependencies=[CsrfDep])
async def suspend(user_id: uuid.UUID, session: SessionDep, viewer: OperatorDep) -> Response:
    return await _set_suspended(session, viewer, user_id, suspended=True)


@router.post("/users/{user_id}/resume", dependencies=[CsrfDep])
async def resume(user_id: uuid.UUID, session: SessionDep, viewer: OperatorDep) -> Response:
    return await _set_suspended(session, viewer, user_id, suspended=False)


async def _set_suspended(session: SessionDep, viewer: Viewer, user_id: uuid.UUID, *, suspended: bool) -> Response:
    user = await session.get(User, user_id)
    if user is None:
        raise HTTPException(status_code=404, detail="No such user.")
    user.suspended_at = utcnow() if suspended else None
    await session.commit()
    await _audit(session, viewer, "operator.suspended_user" if suspended else "operator.resumed_user", user_id=user_id)
    log.warning("operator %s %s user %s", viewer.operator, "suspended" if suspended else "resumed", user_id)
    return RedirectResponse(f"/operator/users/{user_id}?notice={'suspended' if suspended else 'resumed'}",
                            status_code=303)


# ---- blocked numbers ------------------------------------------------------------------------


async def _blocked_page(request: Request, settings: Settings, session: SessionDep, viewer: Viewer, *,
                        status: int = 200, error: str | None = None, number: str = "") -> HTMLResponse:
    rows = (await session.execute(select(BlockedNumber).order_by(BlockedNumber.created_at.desc()))).scalars().all()  # type: ignore[attr-defined]
    return render(request, settings, "operator_blocked.html", status, viewer=viewer, csrf=viewer.csrf,
                  active="blocked", rows=rows, error=error, number=number,
                  when=lambda moment: local_time(moment, "UTC"))


@router.get("/blocked", response_class=HTMLResponse)
async def blocked(request: Request, settings: SettingsDep, session: SessionDep, viewer: OperatorDep) -> Response:
    await _audit(session, viewer, "operator.listed_blocked")
    return await _blocked_page(request, settings, session, viewer)


@router.post("/blocked", response_class=HTMLResponse, dependencies=[CsrfDep])
async def block(request: Request, settings: SettingsDep, session: SessionDep, viewer: OperatorDep,
                number: Annotated[str, Form(max_length=40)] = "",
                reason: Annotated[str, Form(max_length=300)] = "") -> Response:
    try:
        parsed = phonenumbers.parse(number.strip(), DEFAULT_REGION)
        if not phonenumbers.is_possible_number(parsed):
            raise ValueError(number)
    except (phonenumbers.NumberParseException, ValueError):
        return await _blocked_page(request, settings, session, viewer, status=400, number=number,
                                   error="That is not a phone number.")
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    await session.execute(insert(BlockedNumber).values(e164=e164, blocked_by=viewer.operator or "",
                                                       reason=reason.strip() or None, created_at=utcnow())
                          .on_conflict_do_nothing())
    await _audit(session, viewer, "operator.blocked_number", number=e164, reason=reason.strip())
    return RedirectResponse("/operator/blocked", status_code=303)


@router.post("/blocked/{e164}/unblock", dependencies=[CsrfDep])
async def unblock(e164: str, session: SessionDep, viewer: OperatorDep) -> Response:
    await session.execute(delete(BlockedNumber).where(BlockedNumber.e164 == e164))
    await _audit(session, viewer, "operator.unblocked_number", number=e164)
    return RedirectResponse("/operator/blocked", status_code=303)
