"""The web dashboard (audience: a user in a browser): sign in with a code, then one's own pages.

Server-rendered Jinja2 pages, no script needed; every state-changing request is a form POST that
carries its CSRF token (api.deps.CsrfDep). Every query is scoped to the signed-in user's id, so
another user's rows are simply not found.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, select
from temporalio.client import Client, WorkflowUpdateStage
from temporalio.service import RPCError

from api.deps import (
    CsrfDep,
    LimiterDep,
    MailerDep,
    SessionDep,
    SessionsDep,
    SettingsDep,
    SignedInDep,
    TelephonyDep,
    TemporalDep,
    UserIdDep,
    ViewerDep,
)
from api.sign_in import (
    PRE_SESSION_COOKIE,
    SESSION_COOKIE,
    CodeSender,
    account_of,
    close_sessions,
    csrf_token,
    open_session,
    operator_address,
    parse_address,
    redeem,
)
from core.models import AgentInstance, AuditEvent, Conversation, Message, PhoneNumber, Reminder, User, utcnow
from core.settings import Settings
from core.timezones import user_zone
from workflows.agent_lifecycle import AgentLifecycleWorkflow
from workflows.agent_lifecycle import workflow_id as lifecycle_id

log = logging.getLogger(__name__)
router = APIRouter()
templates = Jinja2Templates(directory=Path(__file__).parents[1] / "templates")

SHOWN_REMINDERS = 5
SHOWN_CONVERSATIONS = 5
SNIPPET_CHARS = 120
STATE_QUERY_TIMEOUT_S = 2.0


def _page(request: Request, settings: Settings, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A page, with what every page's frame needs (the local links only on a local platform)."""
    local = {"outbox": "/dev/outbox", "softphone": f"{settings.carrier_url}/phone"} if settings.local_mode else None
    return templates.TemplateResponse(request, name, {"local": local, **context}, status_code=status)


def _pre_session(request: Request) -> tuple[str, bool]:
    """This browser's pre-session value (the sign-in forms' CSRF basis), and whether it is new."""
    value = request.cookies.get(PRE_SESSION_COOKIE)
    return (value, False) if value else (secrets.token_urlsafe(18), True)


def _cookie_options(settings: Settings, max_age: int | None) -> dict[str, Any]:
    return {"httponly": True, "secure": not settings.local_mode, "samesite": "lax", "max_age": max_age,
            "path": "/"}


def _sign_in_page(request: Request, settings: Settings, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    pre, new = _pre_session(request)
    response = _page(request, settings, name, status, csrf=csrf_token(settings.keyring, pre), **context)
    if new:
        response.set_cookie(PRE_SESSION_COOKIE, pre, **_cookie_options(settings, None))
    return response


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _audit(session: SessionDep, *, user_id: uuid.UUID | None, action: str, **detail: Any) -> None:
    session.add(AuditEvent(user_id=user_id, actor="dashboard", action=action, detail=detail))
    await session.commit()


# ---- signing in -------------------------------------------------------------------------------


@router.get("/signin", response_class=HTMLResponse)
async def sign_in_form(request: Request, settings: SettingsDep, viewer: ViewerDep) -> Response:
    if viewer:
        return RedirectResponse("/", status_code=303)
    return _sign_in_page(request, settings, "signin.html")


@router.post("/signin", response_class=HTMLResponse, dependencies=[CsrfDep])
async def ask_for_code(request: Request, settings: SettingsDep, sessions: SessionsDep, telephony: TelephonyDep,
                       mailer: MailerDep, limiter: LimiterDep, address: Annotated[str, Form(max_length=400)] = ""
                       ) -> Response:
    try:
        parsed = parse_address(address)
    except ValueError as error:
        return _sign_in_page(request, settings, "signin.html", 400, error=str(error), address=address)
    refusal = await CodeSender(settings, sessions, telephony, mailer, limiter).request(parsed, _client(request))
    if refusal:
        return _sign_in_page(request, settings, "signin.html", 429, address=address,
                             error="Too many codes asked for. Try again after "
                                   f"{refusal.retry_at:%H:%M} UTC.")
    return _sign_in_page(request, settings, "code.html", address=parsed.value, shown=parsed.shown)


@router.post("/signin/code", response_class=HTMLResponse, dependencies=[CsrfDep])
async def check_code(request: Request, settings: SettingsDep, sessions: SessionsDep, session: SessionDep,
                     address: Annotated[str, Form(max_length=400)] = "",
                     code: Annotated[str, Form(max_length=20)] = "") -> Response:
    try:
        parsed = parse_address(address)
    except ValueError:
        return RedirectResponse("/signin", status_code=303)
    if not await redeem(settings, sessions, parsed, code):
        return _sign_in_page(request, settings, "code.html", 400, address=parsed.value, shown=parsed.shown,
                             error="That code is wrong, used or expired. Check it, or ask for a new one.")
    user_id = await account_of(session, parsed)
    operator = operator_address(settings, parsed)
    cookie = await open_session(settings, sessions, user_id=user_id, operator=operator,
                                user_agent=request.headers.get("user-agent"))
    await _audit(session, user_id=user_id, action="dashboard.signed_in", operator=operator or None,
                 client=_client(request))
    response = RedirectResponse("/" if user_id else "/operator", status_code=303)
    response.set_cookie(SESSION_COOKIE, cookie, **_cookie_options(settings, int(settings.session_hours * 3600)))
    response.delete_cookie(PRE_SESSION_COOKIE, path="/")
    return response


@router.post("/signout", dependencies=[CsrfDep])
async def sign_out(viewer: SignedInDep, sessions: SessionsDep, session: SessionDep,
                   everywhere: Annotated[bool, Form()] = False) -> Response:
    closed = await close_sessions(sessions, viewer, everywhere=everywhere)
    await _audit(session, user_id=viewer.user_id, action="dashboard.signed_out", everywhere=everywhere,
                 sessions=closed)
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# ---- home -------------------------------------------------------------------------------------


async def live_state(client: Client | None, session: SessionDep, user_id: uuid.UUID) -> tuple[str, bool]:
    """The agent's state from its lifecycle workflow; else the last one recorded (False: not live)."""
    if client is not None:
        try:
            state = await client.get_workflow_handle(lifecycle_id(user_id)).query(
                AgentLifecycleWorkflow.current_state, rpc_timeout=timedelta(seconds=STATE_QUERY_TIMEOUT_S))
            return str(state), True
        except RPCError as error:
            log.info("no live state for %s: %s", user_id, error)
    recorded = (await session.execute(select(AgentInstance.state).where(AgentInstance.user_id == user_id))).scalar()
    return (recorded or "none").capitalize(), False


def local_time(moment: datetime | None, zone: str) -> str:
    return moment.astimezone(ZoneInfo(zone)).strftime("%a %-d %b, %H:%M") if moment else ""


@router.get("/", response_class=HTMLResponse)
async def home(request: Request, settings: SettingsDep, session: SessionDep, temporal: TemporalDep,
               viewer: SignedInDep, user_id: UserIdDep, notice: str | None = None) -> Response:
    user = await session.get(User, user_id)
    if user is None:
        return RedirectResponse("/signin", status_code=303)
    zone = user_zone(user.time_zone, user.phone_e164, settings.default_time_zone)
    number = (await session.execute(select(PhoneNumber.e164).where(PhoneNumber.user_id == user_id))).scalar()
    state, live = await live_state(temporal, session, user_id)
    reminders = (await session.execute(
        select(Reminder).where(Reminder.user_id == user_id, Reminder.state == "scheduled")
        .order_by(Reminder.due_at).limit(SHOWN_REMINDERS))).scalars().all()
    conversations = await recent_conversations(session, user_id, SHOWN_CONVERSATIONS)
    return _page(request, settings, "home.html", viewer=viewer, csrf=viewer.csrf, user=user, number=number,
                 state=state, live=live, reminders=reminders, conversations=conversations, zone=zone,
                 when=lambda moment: local_time(moment, zone), notice=NOTICES.get(notice or ""))


NOTICES = {"waking": "Waking your agent: it answers in a moment.",
           "awake": "Your agent is awake.",
           "wake-failed": "Your agent could not be woken just now; it wakes by itself when you call or text."}


async def recent_conversations(session: SessionDep, user_id: uuid.UUID, limit: int) -> list[dict[str, Any]]:
    """The latest calls and text threads, each with its last turn."""
    rows = (await session.execute(
        select(Conversation).where(Conversation.user_id == user_id)
        .order_by(Conversation.started_at.desc()).limit(limit))).scalars().all()  # type: ignore[attr-defined]
    if not rows:
        return []
    counts = dict((await session.execute(
        select(Message.conversation_id, func.count()).where(Message.conversation_id.in_([r.id for r in rows]))  # type: ignore[attr-defined]
        .group_by(Message.conversation_id))).all())
    shown = []
    for row in rows:
        last = (await session.execute(select(Message.content).where(Message.conversation_id == row.id)
                                      .order_by(Message.created_at.desc()).limit(1))).scalar()  # type: ignore[attr-defined]
        shown.append({"conversation": row, "turns": counts.get(row.id, 0),
                      "last": (last or "")[:SNIPPET_CHARS] + ("…" if last and len(last) > SNIPPET_CHARS else "")})
    return shown


@router.post("/agent/wake", dependencies=[CsrfDep])
async def wake(temporal: TemporalDep, session: SessionDep, user_id: UserIdDep) -> Response:
    """Starts the agent's wake (the lifecycle's shared wake) and comes back at once: the page shows
    the state as it changes."""
    if temporal is None:
        return RedirectResponse("/?notice=wake-failed", status_code=303)
    try:
        await temporal.get_workflow_handle(lifecycle_id(user_id)).start_update(
            AgentLifecycleWorkflow.ensure_awake, wait_for_stage=WorkflowUpdateStage.ACCEPTED)
    except RPCError as error:
        log.warning("wake of %s from the dashboard failed: %s", user_id, error)
        return RedirectResponse("/?notice=wake-failed", status_code=303)
    await _audit(session, user_id=user_id, action="dashboard.woke_agent", at=utcnow().isoformat())
    return RedirectResponse("/?notice=waking", status_code=303)
