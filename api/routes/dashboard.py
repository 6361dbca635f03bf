"""The web dashboard (audience: a user in a browser): sign in with a code, the home page and the
history; the other pages have modules of their own (agent_page, reminders_page, usage, account).

Server-rendered Jinja2 pages that work without script (api/static/live.js refreshes the home
page's agent state in place); every state-changing request is a form POST that
carries its CSRF token (api.deps.CsrfDep). Every query is scoped to the signed-in user's id, so
another user's rows are simply not found.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from temporalio.client import WorkflowUpdateFailedError, WorkflowUpdateStage
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
from api.pages import audit, client_address, live_state, local_time, own_user, render, summaries
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
from core.models import Conversation, Message, PhoneNumber, Reminder, utcnow
from core.settings import Settings
from core.timezones import zone_of_user
from workflows.agent_lifecycle import AgentLifecycleWorkflow
from workflows.agent_lifecycle import workflow_id as lifecycle_id

log = logging.getLogger(__name__)
router = APIRouter()

SHOWN_REMINDERS = 5
SHOWN_CONVERSATIONS = 5


def _pre_session(request: Request) -> tuple[str, bool]:
    """This browser's pre-session value (the sign-in forms' CSRF basis), and whether it is new."""
    value = request.cookies.get(PRE_SESSION_COOKIE)
    return (value, False) if value else (secrets.token_urlsafe(18), True)


def _cookie_options(settings: Settings, max_age: int | None) -> dict[str, Any]:
    return {"httponly": True, "secure": not settings.local_mode, "samesite": "lax", "max_age": max_age,
            "path": "/"}


def _sign_in_page(request: Request, settings: Settings, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    pre, new = _pre_session(request)
    response = render(request, settings, name, status, csrf=csrf_token(settings.keyring, pre), **context)
    if new:
        response.set_cookie(PRE_SESSION_COOKIE, pre, **_cookie_options(settings, None))
    return response


@router.get("/signin", response_class=HTMLResponse)
async def sign_in_form(request: Request, settings: SettingsDep, viewer: ViewerDep, notice: str | None = None
                       ) -> Response:
    if viewer:
        return RedirectResponse("/", status_code=303)
    return _sign_in_page(request, settings, "signin.html", notice=SIGN_IN_NOTICES.get(notice or ""))


SIGN_IN_NOTICES = {"deleted": "Your account is being deleted. Thank you for trying DeepClaw."}


@router.post("/signin", response_class=HTMLResponse, dependencies=[CsrfDep])
async def ask_for_code(request: Request, settings: SettingsDep, sessions: SessionsDep, telephony: TelephonyDep,
                       mailer: MailerDep, limiter: LimiterDep, address: Annotated[str, Form(max_length=400)] = ""
                       ) -> Response:
    try:
        parsed = parse_address(address)
    except ValueError as error:
        return _sign_in_page(request, settings, "signin.html", 400, error=str(error), address=address)
    refusal = await CodeSender(settings, sessions, telephony, mailer, limiter).request(parsed, client_address(request))
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
    await audit(session, user_id=user_id, action="dashboard.signed_in", operator=operator or None,
                 client=client_address(request))
    response = RedirectResponse("/" if user_id else "/operator", status_code=303)
    response.set_cookie(SESSION_COOKIE, cookie, **_cookie_options(settings, int(settings.session_hours * 3600)))
    response.delete_cookie(PRE_SESSION_COOKIE, path="/")
    return response


@router.post("/signout", dependencies=[CsrfDep])
async def sign_out(viewer: SignedInDep, sessions: SessionsDep, session: SessionDep,
                   everywhere: Annotated[bool, Form()] = False) -> Response:
    closed = await close_sessions(sessions, viewer, everywhere=everywhere)
    await audit(session, user_id=viewer.user_id, action="dashboard.signed_out", everywhere=everywhere,
                 sessions=closed)
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# ---- home -------------------------------------------------------------------------------------

@router.get("/", response_class=HTMLResponse)
async def home(request: Request, settings: SettingsDep, session: SessionDep, temporal: TemporalDep,
               viewer: SignedInDep, user_id: UserIdDep, notice: str | None = None) -> Response:
    user = await own_user(session, user_id)
    zone = zone_of_user(user, settings.default_time_zone)
    number = (await session.execute(select(PhoneNumber.e164).where(PhoneNumber.user_id == user_id))).scalar()
    state, live = await live_state(temporal, session, user_id)
    reminders = (await session.execute(
        select(Reminder).where(Reminder.user_id == user_id, Reminder.state == "scheduled")
        .order_by(Reminder.due_at).limit(SHOWN_REMINDERS))).scalars().all()
    conversations = await summaries(session, (await session.execute(
        select(Conversation).where(Conversation.user_id == user_id).order_by(Conversation.started_at.desc())  # type: ignore[attr-defined]
        .limit(SHOWN_CONVERSATIONS))).scalars().all())
    return render(request, settings, "home.html", viewer=viewer, active="home", user=user, number=number,
                  reminders=reminders, conversations=conversations, zone=zone,
                  when=lambda moment: local_time(moment, zone), notice=NOTICES.get(notice or ""),
                  **_state_context(viewer.csrf, user.agent_name, state, live))


NOTICES = {"waking": "Waking your agent: it answers in a moment.",
           "awake": "Your agent is awake.",
           "wake-failed": "Your agent could not be woken just now; it wakes by itself when you call or text."}
LIVE_WAKE_WAIT_S = 3.0  # a wake from the page's script is awaited this long
LIVE_REFRESH_S = 5  # how often the home page's state refreshes itself (api/static/live.js)


def _state_context(csrf: str, agent_name: str, state: str, live: bool, notice: str | None = None) -> dict[str, Any]:
    return {"csrf": csrf, "agent_name": agent_name, "state": state, "live": live, "state_notice": notice,
            "refresh_s": LIVE_REFRESH_S}


async def _state_fragment(request: Request, settings: Settings, session: SessionDep, temporal: TemporalDep,
                          viewer: SignedInDep, user_id: uuid.UUID, notice: str | None = None) -> HTMLResponse:
    """The home page's live part: the agent's state and its wake button, as the page shows them."""
    user = await own_user(session, user_id)
    state, live = await live_state(temporal, session, user_id)
    return render(request, settings, "_agent_state.html", **_state_context(viewer.csrf, user.agent_name, state, live,
                                                                             notice))


@router.get("/agent/state", response_class=HTMLResponse)
async def agent_state(request: Request, settings: SettingsDep, session: SessionDep, temporal: TemporalDep,
                      viewer: SignedInDep, user_id: UserIdDep) -> HTMLResponse:
    return await _state_fragment(request, settings, session, temporal, viewer, user_id)


@router.post("/agent/wake", dependencies=[CsrfDep])
async def wake(request: Request, settings: SettingsDep, temporal: TemporalDep, session: SessionDep,
               viewer: SignedInDep, user_id: UserIdDep) -> Response:
    """Starts the agent's wake (the lifecycle's shared wake) and comes back at once: the page shows
    the state as it changes. From the page's script (X-Live), the answer is the live fragment."""
    outcome = "waking"
    if temporal is None:
        outcome = "wake-failed"
    else:
        try:
            waking = await temporal.get_workflow_handle(lifecycle_id(user_id)).start_update(
                AgentLifecycleWorkflow.ensure_awake, wait_for_stage=WorkflowUpdateStage.ACCEPTED)
        except RPCError as error:
            log.warning("wake of %s from the dashboard failed: %s", user_id, error)
            outcome = "wake-failed"
        else:
            await audit(session, user_id=user_id, action="dashboard.woke_agent", at=utcnow().isoformat())
    if request.headers.get("X-Live"):
        if outcome == "waking":  # the page stays: show it awake if that takes a moment only
            try:
                await asyncio.wait_for(waking.result(), LIVE_WAKE_WAIT_S)
                outcome = "awake"
            except (TimeoutError, WorkflowUpdateFailedError, RPCError):
                pass  # still waking (or failed: the next refresh shows the state it is in)
        return await _state_fragment(request, settings, session, temporal, viewer, user_id, NOTICES[outcome])
    return RedirectResponse(f"/?notice={outcome}", status_code=303)


# ---- history ----------------------------------------------------------------------------------

HISTORY_PAGE = 20


@router.get("/history", response_class=HTMLResponse)
async def history(request: Request, settings: SettingsDep, session: SessionDep, viewer: SignedInDep,
                  user_id: UserIdDep, q: Annotated[str, Query(max_length=200)] = "",
                  page: Annotated[int, Query(ge=1, le=10_000)] = 1) -> Response:
    """Calls and text threads in one timeline, newest first; `q` keeps those with a turn saying it."""
    user = await own_user(session, user_id)
    zone = zone_of_user(user, settings.default_time_zone)
    query = select(Conversation).where(Conversation.user_id == user_id)
    needle = q.strip()
    if needle:
        pattern = "%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(Conversation.id.in_(  # type: ignore[union-attr]
            select(Message.conversation_id).where(Message.content.ilike(pattern, escape="\\"))))  # type: ignore[attr-defined]
    rows = (await session.execute(query.order_by(Conversation.started_at.desc())  # type: ignore[attr-defined]
                                  .offset((page - 1) * HISTORY_PAGE).limit(HISTORY_PAGE + 1))).scalars().all()
    entries = await summaries(session, rows[:HISTORY_PAGE], needle)
    return render(request, settings, "history.html", viewer=viewer, csrf=viewer.csrf, active="history",
                 entries=entries, q=needle, page=page, more=len(rows) > HISTORY_PAGE,
                 when=lambda moment: local_time(moment, zone), zone=zone)

@router.get("/history/{conversation_id}", response_class=HTMLResponse)
async def conversation(request: Request, conversation_id: uuid.UUID, settings: SettingsDep, session: SessionDep,
                       viewer: SignedInDep, user_id: UserIdDep) -> Response:
    """A call's transcript turn by turn (with how long each answer took), or a day's text thread."""
    row = await session.get(Conversation, conversation_id)
    if row is None or row.user_id != user_id:
        raise HTTPException(status_code=404, detail="No such conversation.")
    user = await own_user(session, user_id)
    zone = zone_of_user(user, settings.default_time_zone)
    messages = (await session.execute(select(Message).where(Message.conversation_id == row.id)
                                      .order_by(Message.created_at))).scalars().all()  # type: ignore[arg-type]
    latencies = iter((row.latency or {}).get("turns", []))
    turns = [{"message": m, "latency_s": _seconds(next(latencies, {})) if m.role == "agent" and row.kind == "call"
              else None} for m in messages]
    return render(request, settings, "conversation.html", viewer=viewer, csrf=viewer.csrf, active="history",
                 conversation=row, turns=turns, user=user, when=lambda moment: local_time(moment, zone))


def _seconds(figures: dict[str, Any]) -> float | None:
    value = figures.get("total_latency")
    return round(float(value), 2) if isinstance(value, int | float) else None
