"""The platform's MCP server (the official `mcp` SDK): what a user's agent can ask the platform to do
for its user.

Streamable HTTP at `POST /mcp`, stateless and answered as JSON (any API replica serves any request),
one bearer token per user rendered into their OpenClaw config (core.callbacks.platform_mcp_server),
checked by the SDK's bearer middleware through `AgentTokens`. The tool schemas come from the typed
signatures below. Tools: schedule_reminder, list_reminders, cancel_reminder (ReminderWorkflow
`reminder-<id>`), send_sms and call_me (now, from the user's own number, to the user's own phone: an
agent can reach no one else), and web_search (keyless, through the WebSearch port).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import Field, ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.applications import Starlette
from temporalio.client import Client
from temporalio.service import RPCError

from api.deps import Platform
from core.callbacks import MCP_AUDIENCE, PLATFORM_MCP_NAME, call_user_with_agent, mcp_token_generation
from core.limits import Limit
from core.models import PhoneNumber, Reminder, User
from core.ports import MAX_SEARCH_RESULTS, SearchUnavailable
from core.settings import Settings
from core.tokens import InvalidToken, TokenKind
from workflows.reminder import ReminderInput, ReminderWorkflow, workflow_id

log = logging.getLogger(__name__)

PATH = "/mcp"
MAX_TEXT = 480
MAX_AHEAD = timedelta(days=366)
MAX_BODY_BYTES = 64 * 1024  # a tool call is a few hundred bytes

OPTED_OUT = ("not sent: your user opted out of texts and calls from you (they texted STOP); "
             "they can text START to your number to opt back in")

ShortText = Annotated[str, Field(max_length=MAX_TEXT)]


async def user_of_token(bearer: str, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> uuid.UUID:
    """The user an MCP token acts for; InvalidToken if it is not one, or of a revoked generation."""
    claims = settings.keyring.open(TokenKind.MCP, bearer, audience=MCP_AUDIENCE)
    try:
        user_id = uuid.UUID(str(claims["user"]))
    except (KeyError, ValueError):
        raise InvalidToken("an MCP token names its user") from None
    if claims.get("gen") != await mcp_token_generation(sessions, user_id):
        raise InvalidToken("this token has been revoked")
    return user_id


@dataclass
class AgentTokens:
    """The SDK's TokenVerifier: a token is good if it is a current MCP token of a user (the subject)."""

    platform: Callable[[], Platform]

    async def verify_token(self, token: str) -> AccessToken | None:
        platform = self.platform()
        try:
            user_id = await user_of_token(token, platform.settings, platform.sessions)
        except InvalidToken as error:
            log.info("refused an MCP token: %s", error)
            return None
        return AccessToken(token=token, client_id=f"agent-{user_id}", scopes=[], subject=str(user_id))


@dataclass
class Tools:
    """What the tools act with, for the agent whose token this request carries."""

    user_id: uuid.UUID
    platform: Platform

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        return self.platform.sessions


class PlatformServer(MCPServer):
    """The SDK's server, with short answers to bad calls: a model reads them and retries, so they
    name the field and the rule (not pydantic's full report, which echoes the input back)."""

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        if self._tool_manager.get_tool(name) is None:
            known = ", ".join(t.name for t in self._tool_manager.list_tools())
            raise ToolError(f"unknown tool {name!r}; the tools are {known}")
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as error:
            if isinstance(error.__cause__, ToolError) and not isinstance(error, UnexpectedToolError):
                raise error.__cause__ from None  # ours, without the SDK's "Error executing tool" prefix
            if isinstance(error.__cause__, ValidationError):
                raise ToolError("; ".join(
                    f"'{'.'.join(str(part) for part in e['loc'])}': {e['msg']}" for e in error.__cause__.errors()
                )) from error.__cause__
            raise


def create_server(settings: Settings, platform: Callable[[], Platform]) -> MCPServer:
    """The server; `platform` gives the API's parts once its lifespan has built them."""
    server = PlatformServer(
        PLATFORM_MCP_NAME, version="2", instructions="Your user's platform: reminders, texts and calls to your "
        "user, and web search.", token_verifier=AgentTokens(platform),
        # The platform mints these tokens itself; no OAuth flow (and so no audience check by the SDK:
        # user_of_token checks the token's audience).
        auth=AuthSettings(issuer_url=settings.api_base_url, resource_server_url=f"{settings.api_base_url}{PATH}",
                          validate_token_resource=False))

    def tools() -> Tools:
        token = get_access_token()
        assert token is not None and token.subject, "the SDK's bearer middleware lets only verified tokens in"
        return Tools(uuid.UUID(token.subject), platform())

    @server.tool(structured_output=False)
    async def schedule_reminder(
        text: Annotated[ShortText, Field(description="what to remind the user of")],
        at: Annotated[str | None, Field(description="when, ISO 8601 with a UTC offset, e.g. 2026-11-25T09:00:00-05:00")] = None,
        in_minutes: Annotated[float | None, Field(description="or: this many minutes from now")] = None,
        channel: Annotated[Literal["sms", "call"], Field(description="a text (default) or a call from you")] = "sms",
    ) -> str:
        """Remind the user later, by text message (default) or by a phone call from you."""
        return await _schedule_reminder(tools(), text, at, in_minutes, channel)

    @server.tool(structured_output=False)
    async def list_reminders() -> str:
        """The user's reminders that have not fired yet."""
        return await _list_reminders(tools())

    @server.tool(structured_output=False)
    async def cancel_reminder(id: Annotated[str, Field(description="the reminder's id, from list_reminders")]) -> str:
        """Cancel a reminder by its id (from list_reminders)."""
        return await _cancel_reminder(tools(), id)

    @server.tool(structured_output=False)
    async def send_sms(text: Annotated[ShortText, Field(description="the message")]) -> str:
        """Text the user now, from your number."""
        return await _send_sms(tools(), text)

    @server.tool(structured_output=False)
    async def web_search(
        query: Annotated[ShortText, Field(description="what to look up")],
        count: Annotated[int, Field(ge=1, le=MAX_SEARCH_RESULTS, description="how many results")] = 5,
    ) -> str:
        """Search the web. Returns titles, links and snippets; cite the link you use."""
        return await _web_search(tools(), query, count)

    @server.tool(structured_output=False)
    async def call_me(
        greeting: Annotated[ShortText, Field(description="your first sentence when they pick up")],
        reason: Annotated[ShortText | None, Field(description="why you are calling, for the rest of the call")] = None,
    ) -> str:
        """Call the user now (e.g. a task is done); you open with `greeting`."""
        return await _call_me(tools(), greeting, reason)

    return server


def http_app(server: MCPServer) -> Starlette:
    """The server's streamable HTTP app, to mount in the API. No DNS-rebinding guard: that protects
    unauthenticated local servers from browsers, and a browser cannot add the agent's bearer token
    (agents reach the API by service names the guard would refuse)."""
    return server.streamable_http_app(
        streamable_http_path=PATH, json_response=True, stateless_http=True, max_request_body_size=MAX_BODY_BYTES,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))


# ---- the tools ----------------------------------------------------------------------------


def _text(value: str | None, key: str) -> str:
    if value is None or not value.strip():
        raise ToolError(f"'{key}' is required: a short text")
    if len(value) > MAX_TEXT:
        raise ToolError(f"'{key}' is too long ({len(value)} characters; at most {MAX_TEXT})")
    return " ".join(value.split())


def _due(at: str | None, in_minutes: float | None, now: datetime) -> datetime:
    if in_minutes is not None:
        due = now + timedelta(minutes=in_minutes)
    elif at is not None:
        try:
            due = datetime.fromisoformat(at)
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
    if tools.platform.temporal.client is None:
        raise ToolError("reminders are unavailable right now; try again in a minute")
    return tools.platform.temporal.client


async def _schedule_reminder(tools: Tools, text: str, at: str | None, in_minutes: float | None, channel: str) -> str:
    text = _text(text, "text")
    due = _due(at, in_minutes, datetime.now(UTC))
    reminder = Reminder(user_id=tools.user_id, due_at=due, text=text, channel=channel)
    async with tools.sessions() as session, session.begin():
        session.add(reminder)
    await _temporal(tools).start_workflow(
        ReminderWorkflow.run, ReminderInput(reminder_id=reminder.id, user_id=tools.user_id, due_at=due),
        id=workflow_id(reminder.id), task_queue=tools.platform.settings.temporal_task_queue)
    how = "a text" if channel == "sms" else "a call"
    return f"Reminder {reminder.id} set: {how} at {due.isoformat(timespec='minutes')} ({text!r})."


async def _list_reminders(tools: Tools) -> str:
    async with tools.sessions() as session:
        pending = (await session.scalars(select(Reminder).where(
            Reminder.user_id == tools.user_id, Reminder.state == "scheduled").order_by(Reminder.due_at))).all()
    if not pending:
        return "No reminders are scheduled."
    return "\n".join(f"{r.id} — {r.due_at.isoformat(timespec='minutes')} — {r.channel} — {r.text}" for r in pending)


async def _cancel_reminder(tools: Tools, id: str) -> str:
    try:
        reminder_id = uuid.UUID(id)
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
    if row[0].sms_opted_out_at is not None:
        raise ToolError(OPTED_OUT)
    return row[0], row[1]


async def _within_limits(tools: Tools, kind: Limit) -> None:
    if refusal := await tools.platform.limiter.acquire(kind, tools.user_id):
        raise ToolError(f"{'Text' if kind == Limit.SMS else 'Call'} not sent: {refusal}. "
                        "Reminders the user asked for are not affected.")


async def _send_sms(tools: Tools, text: str) -> str:
    body = _text(text, "text")
    user, number = await _user_line(tools)
    await _within_limits(tools, Limit.SMS)
    sid = await tools.platform.telephony.send_sms(to=user.phone_e164, from_=number, body=body)
    log.info("agent of user %s texted its user (%s)", tools.user_id, sid)
    return f"Texted the user ({sid})."


async def _call_me(tools: Tools, greeting: str, reason: str | None) -> str:
    greeting = _text(greeting, "greeting")
    reason = _text(reason, "reason") if reason else greeting
    user, number = await _user_line(tools)
    await _within_limits(tools, Limit.CALL)
    sid = await call_user_with_agent(tools.platform.telephony, tools.platform.settings, user_id=user.id,
                                     to=user.phone_e164, from_=number, greeting=greeting, purpose=reason)
    log.info("agent of user %s called its user (%s)", tools.user_id, sid)
    return f"Calling the user now ({sid})."


async def _web_search(tools: Tools, query: str, count: int) -> str:
    query = _text(query, "query")
    try:
        results = await tools.platform.web_search.search(query, count=count)
    except SearchUnavailable as error:
        log.warning("web search failed for user %s: %s", tools.user_id, error)
        raise ToolError(f"web search is unavailable right now ({error})") from None
    if not results:
        return f"No results for {query!r}."
    return "\n".join(f"{n}. {r.title}\n   {r.url}" + (f"\n   {r.snippet}" if r.snippet else "")
                     for n, r in enumerate(results, 1))
