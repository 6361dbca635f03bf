"""The platform's MCP server (the official `mcp` SDK): what a user's agent can ask the platform to do
for its user.

Streamable HTTP at `POST /mcp`, stateless and answered as JSON (any API replica serves any request),
one bearer token per user rendered into their OpenClaw config (core.callbacks.platform_mcp_server),
checked by the SDK's bearer middleware through `AgentTokens`. The tool schemas come from the typed
signatures below. Tools: schedule_reminder, list_reminders, reschedule_reminder, cancel_reminder,
send_sms and call_me (api/reaching.py: durable, from the user's own number to the user's own phone,
so an agent can reach no one else), and web_search (keyless, through the WebSearch port).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.applications import Starlette

from api import reaching, workspace_tools
from api.deps import Platform
from api.tool_context import MAX_TEXT, Tools, text_arg
from core.callbacks import MCP_AUDIENCE, PLATFORM_MCP_NAME, mcp_token_generation
from core.models import Channel
from core.ports import MAX_SEARCH_RESULTS, SearchUnavailable
from core.settings import Settings
from core.tokens import InvalidToken, TokenKind

log = logging.getLogger(__name__)

PATH = "/mcp"
MAX_BODY_BYTES = 64 * 1024  # a tool call is a few hundred bytes

ShortText = Annotated[str, Field(max_length=MAX_TEXT)]
Id = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_=+/-]+$")]
Which = Annotated[Literal["google", "outlook"] | None,
                  Field(description="which connected account (default: Google if connected, else Microsoft)")]
Day = Annotated[str | None, Field(max_length=20, description="a day: today, tomorrow or YYYY-MM-DD (your user's)")]
When = Annotated[str | None, Field(max_length=40, description="ISO 8601 (your user's time without an offset), "
                                                               "or a day and time: 'tomorrow 12:00', 'today 3pm'")]
Minutes = Annotated[float | None, Field(gt=0, le=7 * 24 * 60, description="how long, in minutes (default 60)")]


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


class PlatformServer(MCPServer):
    """The SDK's server, with short answers to bad calls: a model reads them and retries, so they
    name the field and the rule (not pydantic's full report, which echoes the input back)."""

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        if self._tool_manager.get_tool(name) is None:
            raise ToolError(f"unknown tool {name!r}; the tools are {_some(t.name for t in self._tool_manager.list_tools())}")
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


def _some(names: Iterable[str], room: int = 120) -> str:
    """Names, as many as fit in `room` characters (an error the model reads stays short)."""
    shown: list[str] = []
    rest = list(names)
    while rest and len(", ".join([*shown, rest[0]])) <= room:
        shown.append(rest.pop(0))
    return ", ".join(shown) + (f" and {len(rest)} more (tools/list)" if rest else "")


@contextmanager
def logging_left_alone() -> Iterator[None]:
    """The SDK configures the root logger when a server is made (basicConfig, with a Rich handler if
    rich is installed). Logging is the process's to configure (core.logs): with a handler in place,
    basicConfig does nothing."""
    root = logging.getLogger()
    placeholder = logging.NullHandler()
    root.addHandler(placeholder)
    try:
        yield
    finally:
        root.removeHandler(placeholder)


def create_server(settings: Settings, platform: Callable[[], Platform]) -> MCPServer:
    """The server; `platform` gives the API's parts once its lifespan has built them."""
    with logging_left_alone():
        server = PlatformServer(
            PLATFORM_MCP_NAME, version="2", instructions="Your user's platform: reminders, texts and calls to your "
            "user, web search, and the calendar and mail the user connected (sending mail and cancelling events "
            "need the user's confirmation by text).", token_verifier=AgentTokens(platform),
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
        at: Annotated[str | None, Field(description="when, ISO 8601: 2026-11-25T09:00 is your user's own time; "
                                                    "or with an offset, 2026-11-25T09:00:00-05:00")] = None,
        in_minutes: Annotated[float | None, Field(description="or: this many minutes from now")] = None,
        channel: Annotated[Literal["sms", "call"], Field(description="a text (default) or a call from you")] = "sms",
        every: Annotated[str | None, Field(description="repeat: daily, weekdays, weekly, monthly, or an RRULE "
                                                       "such as FREQ=WEEKLY;BYDAY=MO,TH")] = None,
    ) -> str:
        """Remind the user later, by text message (default) or by a phone call from you; once, or
        repeating. A call in their quiet hours, or one they don't pick up, becomes a text."""
        return await reaching.schedule_reminder(tools(), text, at, in_minutes, Channel(channel), every)

    @server.tool(structured_output=False)
    async def list_reminders() -> str:
        """The user's reminders that have not fired yet (times in the user's zone)."""
        return await reaching.list_reminders(tools())

    @server.tool(structured_output=False)
    async def reschedule_reminder(
        id: Annotated[str, Field(description="the reminder's id, from list_reminders")],
        at: Annotated[str | None, Field(description="the new time, ISO 8601 (your user's time unless it has an offset)")] = None,
        in_minutes: Annotated[float | None, Field(description="or: this many minutes from now")] = None,
    ) -> str:
        """Move a reminder to a new time (a repeating one: its next occurrence)."""
        return await reaching.reschedule_reminder(tools(), id, at, in_minutes)

    @server.tool(structured_output=False)
    async def cancel_reminder(id: Annotated[str, Field(description="the reminder's id, from list_reminders")]) -> str:
        """Cancel a reminder by its id (from list_reminders); a repeating one stops for good."""
        return await reaching.cancel_reminder(tools(), id)

    @server.tool(structured_output=False)
    async def send_sms(text: Annotated[ShortText, Field(description="the message")]) -> str:
        """Text the user now, from your number."""
        return await reaching.send_sms(tools(), text)

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
        """Call the user now (e.g. a task is done); you open with `greeting`. If they don't pick up,
        or it is their quiet hours, they get a text instead."""
        return await reaching.call_me(tools(), greeting, reason)

    @server.tool(structured_output=False)
    async def calendar_events(day: Day = None, start: When = None, end: When = None, account: Which = None) -> str:
        """The user's calendar events on a day, or from start to end (with their ids)."""
        return await workspace_tools.calendar_events(tools(), day, start, end, account)

    @server.tool(structured_output=False)
    async def create_event(
        title: Annotated[ShortText, Field(description="what it is")],
        start: Annotated[str, Field(max_length=40, description="when it starts: ISO 8601 (your user's time) or "
                                                               "'tomorrow 12:00'")],
        minutes: Minutes = None, end: When = None,
        location: Annotated[ShortText | None, Field(description="where")] = None, account: Which = None,
    ) -> str:
        """Add an event to the user's calendar."""
        return await workspace_tools.create_event(tools(), title, start, minutes, end, location, account)

    @server.tool(structured_output=False)
    async def move_event(
        id: Annotated[Id, Field(description="the event's id, from calendar_events")],
        start: Annotated[str, Field(max_length=40, description="the new start (ISO 8601 or 'tomorrow 15:00')")],
        minutes: Minutes = None, end: When = None, account: Which = None,
    ) -> str:
        """Move an event to a new time (it keeps its length unless you give minutes or end)."""
        return await workspace_tools.move_event(tools(), id, start, minutes, end, account)

    @server.tool(structured_output=False)
    async def cancel_event(id: Annotated[Id, Field(description="the event's id, from calendar_events")],
                           account: Which = None) -> str:
        """Ask to cancel (delete) an event: the user is texted and it is cancelled only when they confirm."""
        return await workspace_tools.cancel_event(tools(), id, account)

    @server.tool(structured_output=False)
    async def find_free_time(
        day: Day = None, start: When = None, end: When = None,
        minutes: Annotated[float, Field(gt=0, le=24 * 60, description="the length needed, in minutes")] = 30,
        account: Which = None,
    ) -> str:
        """Free times of at least `minutes` on a day (its working hours, 9 to 18) or from start to end."""
        return await workspace_tools.find_free_time(tools(), day, start, end, minutes, account)

    @server.tool(structured_output=False)
    async def search_mail(
        query: Annotated[ShortText, Field(description="words, a sender or a subject")],
        count: Annotated[int, Field(ge=1, le=10, description="how many messages")] = 5, account: Which = None,
    ) -> str:
        """Search the user's mail; newest first, with ids for read_mail and draft_reply."""
        return await workspace_tools.search_mail(tools(), text_arg(query, "query"), count, account)

    @server.tool(structured_output=False)
    async def read_mail(id: Annotated[Id, Field(description="the message's id, from search_mail")],
                        account: Which = None) -> str:
        """Read one message of the user's mail."""
        return await workspace_tools.read_mail(tools(), id, account)

    @server.tool(structured_output=False)
    async def draft_reply(
        id: Annotated[Id, Field(description="the message's id, from search_mail")],
        body: Annotated[str, Field(min_length=1, max_length=10_000, description="the reply's text")],
        account: Which = None,
    ) -> str:
        """Write a reply as a draft (not sent). Returns the draft's id for send_draft."""
        return await workspace_tools.draft_reply(tools(), id, body, account)

    @server.tool(structured_output=False)
    async def send_draft(id: Annotated[Id, Field(description="the draft's id, from draft_reply")],
                         account: Which = None) -> str:
        """Ask to send a draft: the user is texted and it is sent only when they confirm."""
        return await workspace_tools.send_draft(tools(), id, account)

    return server


def http_app(server: MCPServer) -> Starlette:
    """The server's streamable HTTP app, to mount in the API. No DNS-rebinding guard: that protects
    unauthenticated local servers from browsers, and a browser cannot add the agent's bearer token
    (agents reach the API by service names the guard would refuse)."""
    return server.streamable_http_app(
        streamable_http_path=PATH, json_response=True, stateless_http=True, max_request_body_size=MAX_BODY_BYTES,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))


# ---- the tools ----------------------------------------------------------------------------


async def _web_search(tools: Tools, query: str, count: int) -> str:
    query = text_arg(query, "query")
    try:
        results = await tools.platform.web_search.search(query, count=count)
    except SearchUnavailable as error:
        log.warning("web search failed for user %s: %s", tools.user_id, error)
        raise ToolError(f"web search is unavailable right now ({error})") from None
    if not results:
        return f"No results for {query!r}."
    return "\n".join(f"{n}. {r.title}\n   {r.url}" + (f"\n   {r.snippet}" if r.snippet else "")
                     for n, r in enumerate(results, 1))
