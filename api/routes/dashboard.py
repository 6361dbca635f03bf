"""The web dashboard (audience: a user in a browser): sign in with a code, then one's own pages.

Server-rendered Jinja2 pages, no script needed; every state-changing request is a form POST that
carries its CSRF token (api.deps.CsrfDep). Every query is scoped to the signed-in user's id, so
another user's rows are simply not found.
"""

from __future__ import annotations

import logging
import re
import secrets
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, select
from temporalio.client import Client, WorkflowQueryFailedError, WorkflowQueryRejectedError, WorkflowUpdateStage
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
from api.reaching import BadTime, ReminderNotChanged, change_reminder, due_time
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
from core.recurrence import describe
from core.settings import Settings
from core.timezones import user_zone
from workflows.agent_lifecycle import AgentLifecycleWorkflow
from workflows.agent_lifecycle import workflow_id as lifecycle_id
from workflows.onboarding_lines import VOICES
from workflows.reminder import ReminderWorkflow, Reschedule

log = logging.getLogger(__name__)
router = APIRouter()
templates = Jinja2Templates(directory=Path(__file__).parents[1] / "templates")
def duration(seconds: float) -> str:
    """'1 h 05 min', '3 min 20 s', '45 s'."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


templates.env.filters["duration"] = duration
templates.env.globals["voice_name"] = lambda model: next(
    (name.capitalize() for name, known in VOICES.items() if known == model), model)

SHOWN_REMINDERS = 5
SHOWN_CONVERSATIONS = 5
SNIPPET_CHARS = 120
STATE_QUERY_TIMEOUT_S = 2.0


def render(request: Request, settings: Settings, name: str, status: int = 200, **context: Any) -> HTMLResponse:
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
    response = render(request, settings, name, status, csrf=csrf_token(settings.keyring, pre), **context)
    if new:
        response.set_cookie(PRE_SESSION_COOKIE, pre, **_cookie_options(settings, None))
    return response


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def audit(session: SessionDep, *, user_id: uuid.UUID | None, action: str, **detail: Any) -> None:
    session.add(AuditEvent(user_id=user_id, actor="dashboard", action=action, detail=detail))
    await session.commit()


# ---- signing in -------------------------------------------------------------------------------


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
    await audit(session, user_id=user_id, action="dashboard.signed_in", operator=operator or None,
                 client=_client(request))
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


async def live_state(client: Client | None, session: SessionDep, user_id: uuid.UUID) -> tuple[str, bool]:
    """The agent's state from its lifecycle workflow; else the last one recorded (False: not live)."""
    if client is not None:
        try:
            state = await client.get_workflow_handle(lifecycle_id(user_id)).query(
                AgentLifecycleWorkflow.current_state, rpc_timeout=timedelta(seconds=STATE_QUERY_TIMEOUT_S))
            return str(state), True
        except (RPCError, WorkflowQueryFailedError, WorkflowQueryRejectedError) as error:
            log.info("no live state for %s: %s", user_id, error)
    recorded = (await session.execute(select(AgentInstance.state).where(AgentInstance.user_id == user_id))).scalar()
    return (recorded or "none").capitalize(), False


def local_time(moment: datetime | None, zone: str) -> str:
    return moment.astimezone(ZoneInfo(zone)).strftime("%a %-d %b, %H:%M") if moment else ""


@router.get("/", response_class=HTMLResponse)
async def home(request: Request, settings: SettingsDep, session: SessionDep, temporal: TemporalDep,
               viewer: SignedInDep, user_id: UserIdDep, notice: str | None = None) -> Response:
    user = await own_user(session, user_id)
    zone = user_zone(user.time_zone, user.phone_e164, settings.default_time_zone)
    number = (await session.execute(select(PhoneNumber.e164).where(PhoneNumber.user_id == user_id))).scalar()
    state, live = await live_state(temporal, session, user_id)
    reminders = (await session.execute(
        select(Reminder).where(Reminder.user_id == user_id, Reminder.state == "scheduled")
        .order_by(Reminder.due_at).limit(SHOWN_REMINDERS))).scalars().all()
    conversations = await summaries(session, (await session.execute(
        select(Conversation).where(Conversation.user_id == user_id).order_by(Conversation.started_at.desc())  # type: ignore[attr-defined]
        .limit(SHOWN_CONVERSATIONS))).scalars().all())
    return render(request, settings, "home.html", viewer=viewer, csrf=viewer.csrf, active="home", user=user, number=number,
                 state=state, live=live, reminders=reminders, conversations=conversations, zone=zone,
                 when=lambda moment: local_time(moment, zone), notice=NOTICES.get(notice or ""))


NOTICES = {"waking": "Waking your agent: it answers in a moment.",
           "awake": "Your agent is awake.",
           "wake-failed": "Your agent could not be woken just now; it wakes by itself when you call or text."}


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
    await audit(session, user_id=user_id, action="dashboard.woke_agent", at=utcnow().isoformat())
    return RedirectResponse("/?notice=waking", status_code=303)


# ---- history ----------------------------------------------------------------------------------

HISTORY_PAGE = 20


@router.get("/history", response_class=HTMLResponse)
async def history(request: Request, settings: SettingsDep, session: SessionDep, viewer: SignedInDep,
                  user_id: UserIdDep, q: Annotated[str, Query(max_length=200)] = "",
                  page: Annotated[int, Query(ge=1, le=10_000)] = 1) -> Response:
    """Calls and text threads in one timeline, newest first; `q` keeps those with a turn saying it."""
    user = await own_user(session, user_id)
    zone = user_zone(user.time_zone, user.phone_e164, settings.default_time_zone)
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


async def summaries(session: SessionDep, rows: Sequence[Conversation], needle: str = "") -> list[dict[str, Any]]:
    """Each conversation with its number of turns and one turn to show: the latest, or the first
    that says `needle`."""
    if not rows:
        return []
    ids = [r.id for r in rows]
    counts = dict((await session.execute(select(Message.conversation_id, func.count())
                                         .where(Message.conversation_id.in_(ids))  # type: ignore[attr-defined]
                                         .group_by(Message.conversation_id))).all())
    shown = []
    for row in rows:
        turns = select(Message.content).where(Message.conversation_id == row.id)
        if needle:
            turns = turns.where(func.strpos(func.lower(Message.content), needle.lower()) > 0)
        snippet = (await session.execute(turns.order_by(Message.created_at.desc()).limit(1))).scalar() or ""  # type: ignore[attr-defined]
        shown.append({"conversation": row, "turns": counts.get(row.id, 0),
                      "last": snippet[:SNIPPET_CHARS] + ("…" if len(snippet) > SNIPPET_CHARS else "")})
    return shown


@router.get("/history/{conversation_id}", response_class=HTMLResponse)
async def conversation(request: Request, conversation_id: uuid.UUID, settings: SettingsDep, session: SessionDep,
                       viewer: SignedInDep, user_id: UserIdDep) -> Response:
    """A call's transcript turn by turn (with how long each answer took), or a day's text thread."""
    row = await session.get(Conversation, conversation_id)
    if row is None or row.user_id != user_id:
        raise HTTPException(status_code=404, detail="No such conversation.")
    user = await own_user(session, user_id)
    zone = user_zone(user.time_zone, user.phone_e164, settings.default_time_zone)
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


async def own_user(session: SessionDep, user_id: uuid.UUID) -> User:
    user = await session.get(User, user_id)
    if user is None:  # the account was deleted while signed in
        raise HTTPException(status_code=303, headers={"Location": "/signin"})
    return user


ERROR_TITLES = {403: "Not allowed", 404: "Not found", 429: "Too many requests"}


def error_page(request: Request, settings: Settings, status: int, detail: str) -> HTMLResponse:
    """What a browser shows for a refused or missing page (API clients keep JSON)."""
    return render(request, settings, "error.html", status, title=ERROR_TITLES.get(status, "Something went wrong"),
                 message=detail if detail and detail != "Not Found" else "There is nothing here.")


# ---- reminders --------------------------------------------------------------------------------

PAST_REMINDERS = 50


@router.get("/reminders", response_class=HTMLResponse)
async def reminders(request: Request, settings: SettingsDep, session: SessionDep, viewer: SignedInDep,
                    user_id: UserIdDep, notice: str | None = None) -> Response:
    return await _reminders_page(request, settings, session, viewer, user_id, notice=REMINDER_NOTICES.get(notice or ""))


REMINDER_NOTICES = {"cancelled": "Reminder cancelled.", "moved": "Reminder moved."}


async def _reminders_page(request: Request, settings: Settings, session: SessionDep, viewer: SignedInDep,
                          user_id: uuid.UUID, *, status: int = 200, notice: str | None = None,
                          error: str | None = None, failed: uuid.UUID | None = None) -> HTMLResponse:
    user = await own_user(session, user_id)
    zone = user_zone(user.time_zone, user.phone_e164, settings.default_time_zone)
    upcoming = (await session.execute(select(Reminder).where(Reminder.user_id == user_id, Reminder.state == "scheduled")
                                      .order_by(Reminder.due_at))).scalars().all()
    past = (await session.execute(select(Reminder).where(Reminder.user_id == user_id, Reminder.state != "scheduled")
                                  .order_by(Reminder.due_at.desc()).limit(PAST_REMINDERS))).scalars().all()  # type: ignore[attr-defined]
    return render(request, settings, "reminders.html", status, viewer=viewer, csrf=viewer.csrf, active="reminders",
                 upcoming=upcoming, past=past, user=user, zone=zone, notice=notice, error=error, failed=failed,
                 when=lambda moment: local_time(moment, zone), describe=describe,
                 local_input=lambda moment: moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%dT%H:%M"))


async def _own_reminder(session: SessionDep, user_id: uuid.UUID, reminder_id: uuid.UUID) -> Reminder:
    reminder = await session.get(Reminder, reminder_id)
    if reminder is None or reminder.user_id != user_id:
        raise HTTPException(status_code=404, detail="No such reminder.")
    return reminder


@router.post("/reminders/{reminder_id}/cancel", dependencies=[CsrfDep])
async def cancel_reminder(request: Request, reminder_id: uuid.UUID, settings: SettingsDep, session: SessionDep,
                          temporal: TemporalDep, viewer: SignedInDep, user_id: UserIdDep) -> Response:
    reminder = await _own_reminder(session, user_id, reminder_id)
    try:
        await change_reminder(_scheduler(temporal, reminder), reminder, ReminderWorkflow.cancel)
    except ReminderNotChanged as error:
        return await _reminders_page(request, settings, session, viewer, user_id, status=409,
                                     error=_for_people(str(error)), failed=reminder.id)
    await audit(session, user_id=user_id, action="dashboard.cancelled_reminder", reminder=str(reminder.id))
    return RedirectResponse("/reminders?notice=cancelled", status_code=303)


@router.post("/reminders/{reminder_id}/reschedule", dependencies=[CsrfDep])
async def reschedule_reminder(request: Request, reminder_id: uuid.UUID, settings: SettingsDep, session: SessionDep,
                              temporal: TemporalDep, viewer: SignedInDep, user_id: UserIdDep,
                              at: Annotated[str, Form(max_length=40)] = "") -> Response:
    """`at`: a local date and time (the form's datetime-local) in the reminder's own zone."""
    reminder = await _own_reminder(session, user_id, reminder_id)
    try:
        if not at.strip():
            raise BadTime("Choose a new date and time.")
        due = due_time(at.strip(), None, utcnow(), reminder.time_zone)
        await change_reminder(_scheduler(temporal, reminder), reminder, ReminderWorkflow.reschedule, Reschedule(due_at=due))
    except (BadTime, ReminderNotChanged) as error:
        return await _reminders_page(request, settings, session, viewer, user_id, status=400,
                                     error=_for_people(str(error)), failed=reminder.id)
    await audit(session, user_id=user_id, action="dashboard.moved_reminder", reminder=str(reminder.id),
                 due_at=due.isoformat())
    return RedirectResponse("/reminders?notice=moved", status_code=303)


def _scheduler(temporal: Client | None, reminder: Reminder) -> Client:
    """The client to change `reminder` through, if it can still change."""
    if reminder.state != "scheduled":
        raise ReminderNotChanged(f"reminder {reminder.id} has already {reminder.state}")
    if temporal is None:
        raise ReminderNotChanged("the scheduler is unreachable right now; nothing was changed, try again in a minute")
    return temporal


def _for_people(reason: str) -> str:
    """The tools' wording, for a person: no ids, "your user" is "you"."""
    reason = re.sub(r"reminder [0-9a-f-]{36} ", "This reminder ", reason).replace(" for your user", "")
    reason = reason.replace("'at' must be ISO 8601, e.g. 2026-11-25T09:00 (your user's time) or "
                            "2026-11-25T09:00:00-05:00", "That is not a date and time.")
    return reason[:1].upper() + reason[1:]
