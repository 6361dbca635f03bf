"""What every dashboard page shares: the templates and their filters, rendering with the page's
frame, the audit of what a user did, and the lookups several pages make (the signed-in user, the
agent's live state, conversation summaries)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, select
from temporalio.client import Client, WorkflowQueryFailedError, WorkflowQueryRejectedError
from temporalio.service import RPCError

from api.deps import SessionDep
from core.models import AgentInstance, AuditEvent, Conversation, Message, User
from core.settings import Settings
from workflows.agent_lifecycle import AgentLifecycleWorkflow
from workflows.agent_lifecycle import workflow_id as lifecycle_id
from workflows.onboarding_lines import VOICES

log = logging.getLogger(__name__)
templates = Jinja2Templates(directory=Path(__file__).with_name("templates"))

SNIPPET_CHARS = 120
STATE_QUERY_TIMEOUT_S = 2.0


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


def render(request: Request, settings: Settings, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A page, with what every page's frame needs (the local links only on a local platform)."""
    local = {"outbox": "/dev/outbox", "softphone": f"{settings.carrier_url}/phone"} if settings.local_mode else None
    return templates.TemplateResponse(request, name, {"local": local, **context}, status_code=status)


def client_address(request: Request) -> str:
    """Whom per-client limits count: the connecting address."""
    return request.client.host if request.client else "unknown"


async def audit(session: SessionDep, *, user_id: uuid.UUID | None, action: str, **detail: Any) -> None:
    session.add(AuditEvent(user_id=user_id, actor="dashboard", action=action, detail=detail))
    await session.commit()


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
