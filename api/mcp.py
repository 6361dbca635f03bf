"""The platform's MCP server: what a user's agent can ask the platform to do for its user.

Streamable HTTP (JSON-RPC over `POST /mcp`, answered as JSON; no server-initiated stream), one
bearer token per user rendered into their OpenClaw config (core.callbacks.platform_mcp_server).
Tools: schedule_reminder, list_reminders, cancel_reminder (ReminderWorkflow `reminder-<id>`), send_sms and call_me (now,
from the user's own number, to the user's own phone: an agent can reach no one else), and web_search
(keyless, through the WebSearch port: every agent can search with no setup).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.service import RPCError

from api.deps import LimiterDep, SessionsDep, SettingsDep, TelephonyDep, TemporalDep, WebSearchDep
from core.callbacks import MCP_AUDIENCE, PLATFORM_MCP_NAME, call_user_with_agent, mcp_token_generation
from core.limits import Limit, UserLimiter
from core.models import PhoneNumber, Reminder, User
from core.ports import MAX_SEARCH_RESULTS, SearchUnavailable, Telephony, WebSearch
from core.settings import Settings
from core.tokens import InvalidToken, TokenKind
from workflows.reminder import ReminderInput, ReminderWorkflow, workflow_id

log = logging.getLogger(__name__)
router = APIRouter()

PROTOCOL_VERSIONS = ("2025-06-18", "2025-03-26", "2024-11-05")
MAX_TEXT = 480
MAX_AHEAD = timedelta(days=366)

TOOLS: list[dict[str, Any]] = [
    {"name": "schedule_reminder",
     "description": "Remind the user later, by text message (default) or by a phone call from you.",
     "inputSchema": {"type": "object", "required": ["text"], "properties": {
         "text": {"type": "string", "description": "what to remind the user of"},
         "at": {"type": "string", "description": "when, ISO 8601 with a UTC offset, e.g. 2026-11-25T09:00:00-05:00"},
         "in_minutes": {"type": "number", "description": "or: this many minutes from now"},
         "channel": {"type": "string", "enum": ["sms", "call"]}}}},
    {"name": "list_reminders", "description": "The user's reminders that have not fired yet.",
     "inputSchema": {"type": "object", "properties": {}}},
    {"name": "cancel_reminder", "description": "Cancel a reminder by its id (from list_reminders).",
     "inputSchema": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}},
    {"name": "send_sms", "description": "Text the user now, from your number.",
     "inputSchema": {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}},
    {"name": "web_search",
     "description": "Search the web. Returns titles, links and snippets; cite the link you use.",
     "inputSchema": {"type": "object", "required": ["query"], "properties": {
         "query": {"type": "string", "description": "what to look up"},
         "count": {"type": "integer", "minimum": 1, "maximum": MAX_SEARCH_RESULTS, "description": "how many results (5)"}}}},
    {"name": "call_me", "description": "Call the user now (e.g. a task is done); you open with `greeting`.",
     "inputSchema": {"type": "object", "required": ["greeting"], "properties": {
         "greeting": {"type": "string", "description": "your first sentence when they pick up"},
         "reason": {"type": "string", "description": "why you are calling, for the rest of the call"}}}},
]


class ToolError(Exception):
    """The agent asked for something that cannot be done; it is told why (isError), no crash."""


@dataclass
class Tools:
    """What the tools act with, for one user's agent."""

    user_id: uuid.UUID
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    temporal: Client | None
    telephony: Telephony
    web_search: WebSearch
    limiter: UserLimiter


async def _user_of(bearer: str, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> uuid.UUID:
    """The user an MCP token acts for; InvalidToken if it is not one, or of a revoked generation."""
    claims = settings.keyring.open(TokenKind.MCP, bearer, audience=MCP_AUDIENCE)
    try:
        user_id = uuid.UUID(str(claims["user"]))
    except (KeyError, ValueError):
        raise InvalidToken("an MCP token names its user") from None
    if claims.get("gen") != await mcp_token_generation(sessions, user_id):
        raise InvalidToken("this token has been revoked")
    return user_id


@router.post("/mcp")
async def mcp(request: Request, settings: SettingsDep, sessions: SessionsDep, temporal: TemporalDep,
              telephony: TelephonyDep, web_search: WebSearchDep, limiter: LimiterDep) -> Response:
    try:
        user_id = await _user_of(request.headers.get("authorization", "").removeprefix("Bearer ").strip(),
                                 settings, sessions)
    except InvalidToken as error:
        return JSONResponse({"error": f"unauthorised: {error}"}, status_code=401)
    try:
        message = await request.json()
        method, ident = message["method"], message.get("id")
        params = message.get("params") or {}
        if not isinstance(method, str) or not isinstance(params, dict):
            raise TypeError("method must be a string and params an object")
    except Exception:
        return _rpc_error(None, -32600, "expected one JSON-RPC request object")
    if ident is None:  # a notification (e.g. notifications/initialized): nothing to answer
        return Response(status_code=202)
    if method == "initialize":
        asked = params.get("protocolVersion")
        return _rpc_result(ident, {"protocolVersion": asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[0],
                                   "capabilities": {"tools": {"listChanged": False}},
                                   "serverInfo": {"name": PLATFORM_MCP_NAME, "version": "1"}})
    if method == "ping":
        return _rpc_result(ident, {})
    if method == "tools/list":
        return _rpc_result(ident, {"tools": TOOLS})
    if method == "tools/call":
        name, arguments = params.get("name"), params.get("arguments") or {}
        try:
            tools = Tools(user_id, settings, sessions, temporal, telephony, web_search, limiter)
            text = await _call(tools, str(name), arguments)
        except ToolError as error:
            return _rpc_result(ident, {"content": [{"type": "text", "text": str(error)}], "isError": True})
        return _rpc_result(ident, {"content": [{"type": "text", "text": text}], "isError": False})
    return _rpc_error(ident, -32601, f"unknown method {method!r}")


@router.get("/mcp")
async def mcp_stream() -> Response:
    return Response(status_code=405, headers={"Allow": "POST"})  # no server-initiated messages


def _rpc_result(ident: Any, result: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"jsonrpc": "2.0", "id": ident, "result": result})


def _rpc_error(ident: Any, code: int, message: str) -> JSONResponse:
    return JSONResponse({"jsonrpc": "2.0", "id": ident, "error": {"code": code, "message": message}})


# ---- the tools ----------------------------------------------------------------------------


async def _call(tools: Tools, name: str, arguments: dict[str, Any]) -> str:
    handlers = {"schedule_reminder": _schedule_reminder, "list_reminders": _list_reminders,
                "cancel_reminder": _cancel_reminder, "send_sms": _send_sms, "call_me": _call_me,
                "web_search": _web_search}
    if name not in handlers:
        raise ToolError(f"unknown tool {name!r}; the tools are {', '.join(handlers)}")
    if not isinstance(arguments, dict):
        raise ToolError("arguments must be an object")
    return await handlers[name](tools, arguments)


def _text(arguments: dict[str, Any], key: str) -> str:
    value = arguments.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ToolError(f"'{key}' is required: a short text")
    if len(value) > MAX_TEXT:
        raise ToolError(f"'{key}' is too long ({len(value)} characters; at most {MAX_TEXT})")
    return " ".join(value.split())


def _due(arguments: dict[str, Any], now: datetime) -> datetime:
    if arguments.get("in_minutes") is not None:
        try:
            due = now + timedelta(minutes=float(arguments["in_minutes"]))
        except (TypeError, ValueError):
            raise ToolError("'in_minutes' must be a number") from None
    elif isinstance(arguments.get("at"), str):
        try:
            due = datetime.fromisoformat(arguments["at"])
        except ValueError:
            raise ToolError("'at' must be ISO 8601, e.g. 2026-11-25T09:00:00-05:00") from None
        if due.tzinfo is None:
            raise ToolError("'at' needs a UTC offset (e.g. -05:00 or Z): whose nine o'clock?")
    else:
        raise ToolError("say when: 'at' (ISO 8601 with offset) or 'in_minutes'")
    if due < now - timedelta(minutes=1):
        raise ToolError(f"{due.isoformat()} is in the past (it is {now.isoformat(timespec='minutes')} now)")
    if due > now + MAX_AHEAD:
        raise ToolError("reminders can be at most a year ahead")
    return due


def _temporal(tools: Tools) -> Client:
    if tools.temporal is None:
        raise ToolError("reminders are unavailable right now; try again in a minute")
    return tools.temporal


async def _schedule_reminder(tools: Tools, arguments: dict[str, Any]) -> str:
    text, channel = _text(arguments, "text"), arguments.get("channel") or "sms"
    if channel not in ("sms", "call"):
        raise ToolError("'channel' is sms or call")
    due = _due(arguments, datetime.now(UTC))
    reminder = Reminder(user_id=tools.user_id, due_at=due, text=text, channel=channel)
    async with tools.sessions() as session, session.begin():
        session.add(reminder)
    await _temporal(tools).start_workflow(
        ReminderWorkflow.run, ReminderInput(reminder_id=reminder.id, user_id=tools.user_id, due_at=due),
        id=workflow_id(reminder.id), task_queue=tools.settings.temporal_task_queue)
    how = "a text" if channel == "sms" else "a call"
    return f"Reminder {reminder.id} set: {how} at {due.isoformat(timespec='minutes')} ({text!r})."


async def _list_reminders(tools: Tools, arguments: dict[str, Any]) -> str:
    async with tools.sessions() as session:
        pending = (await session.scalars(select(Reminder).where(
            Reminder.user_id == tools.user_id, Reminder.state == "scheduled").order_by(Reminder.due_at))).all()
    if not pending:
        return "No reminders are scheduled."
    return "\n".join(f"{r.id} — {r.due_at.isoformat(timespec='minutes')} — {r.channel} — {r.text}" for r in pending)


async def _cancel_reminder(tools: Tools, arguments: dict[str, Any]) -> str:
    try:
        reminder_id = uuid.UUID(str(arguments.get("id")))
    except ValueError:
        raise ToolError("'id' must be a reminder id from list_reminders") from None
    async with tools.sessions() as session:
        reminder = await session.get(Reminder, reminder_id)
    if reminder is None or reminder.user_id != tools.user_id:
        raise ToolError(f"no reminder {reminder_id}")
    if reminder.state != "scheduled":
        raise ToolError(f"reminder {reminder_id} has already {reminder.state}")
    handle = _temporal(tools).get_workflow_handle(workflow_id(reminder_id))
    try:
        await handle.signal(ReminderWorkflow.cancel)
        state = await asyncio.wait_for(handle.result(), 10)  # it records the outcome
    except RPCError:
        raise ToolError(f"reminder {reminder_id} has already fired") from None
    except TimeoutError:
        return f"Cancelling reminder {reminder_id}."
    if state != "cancelled":
        raise ToolError(f"reminder {reminder_id} had already {state}")
    return f"Reminder {reminder_id} cancelled."


async def _user_line(tools: Tools) -> tuple[User, str]:
    async with tools.sessions() as session:
        row = (await session.execute(select(User, PhoneNumber.e164).join(PhoneNumber, PhoneNumber.user_id == User.id)
                                     .where(User.id == tools.user_id, PhoneNumber.state == "assigned"))).one_or_none()
    if row is None:
        raise ToolError("you have no phone number yet")
    return row[0], row[1]


async def _within_limits(tools: Tools, kind: Limit) -> None:
    if refusal := await tools.limiter.acquire(kind, tools.user_id):
        raise ToolError(f"{'Text' if kind == Limit.SMS else 'Call'} not sent: {refusal}. "
                        "Reminders the user asked for are not affected.")


async def _send_sms(tools: Tools, arguments: dict[str, Any]) -> str:
    body = _text(arguments, "text")
    user, number = await _user_line(tools)
    await _within_limits(tools, Limit.SMS)
    sid = await tools.telephony.send_sms(to=user.phone_e164, from_=number, body=body)
    log.info("agent of user %s texted its user (%s)", tools.user_id, sid)
    return f"Texted the user ({sid})."


async def _call_me(tools: Tools, arguments: dict[str, Any]) -> str:
    greeting = _text(arguments, "greeting")
    reason = _text(arguments, "reason") if arguments.get("reason") else greeting
    user, number = await _user_line(tools)
    await _within_limits(tools, Limit.CALL)
    sid = await call_user_with_agent(tools.telephony, tools.settings, user_id=user.id, to=user.phone_e164,
                                     from_=number, greeting=greeting, purpose=reason)
    log.info("agent of user %s called its user (%s)", tools.user_id, sid)
    return f"Calling the user now ({sid})."


async def _web_search(tools: Tools, arguments: dict[str, Any]) -> str:
    query = _text(arguments, "query")
    count = arguments.get("count", 5)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_SEARCH_RESULTS:
        raise ToolError(f"'count' is a whole number from 1 to {MAX_SEARCH_RESULTS}")
    try:
        results = await tools.web_search.search(query, count=count)
    except SearchUnavailable as error:
        log.warning("web search failed for user %s: %s", tools.user_id, error)
        raise ToolError(f"web search is unavailable right now ({error})") from None
    if not results:
        return f"No results for {query!r}."
    return "\n".join(f"{n}. {r.title}\n   {r.url}" + (f"\n   {r.snippet}" if r.snippet else "")
                     for n, r in enumerate(results, 1))
