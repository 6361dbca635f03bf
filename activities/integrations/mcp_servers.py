"""A user's own MCP servers, added on the dashboard: checked (name, URL against request forgery, the
transport, headers), connected to with the official `mcp` client at the address the URL's host
resolved to (core.safe_urls) to list their tools, and stored with their header values sealed
(core.keyring, bound to the user and the server's row). A server that fails to answer is stored and
shown as failing; it never blocks the agent. The platform's own server's name is not theirs to use."""

from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import dataclass


import httpx2
from mcp.client.client import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.callbacks import PLATFORM_MCP_NAME
from core.db import transaction
from core.integrations import header_context
from core.models import McpServer, utcnow
from core.safe_urls import PinnedUrl, UnsafeUrl, pin, pinned_client
from core.settings import Settings

log = logging.getLogger(__name__)

MAX_SERVERS = 10
MAX_HEADERS = 10
MAX_HEADER_VALUE = 2048
CONNECT_TIMEOUT_S = 10.0
TRANSPORTS = ("streamable-http", "sse")
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_HEADER = re.compile(r"^[A-Za-z0-9-]{1,64}$")
FORBIDDEN_HEADERS = {"host", "content-length", "content-type", "accept", "connection", "transfer-encoding",
                     "mcp-session-id", "mcp-protocol-version"}


class BadServer(ValueError):
    """What is wrong with a server the user is adding, in words for them."""


@dataclass(frozen=True)
class Probe:
    ok: bool
    tools: list[dict[str, str]]
    detail: str | None


def parse_headers(text: str) -> dict[str, str]:
    """'Name: value' lines (blank lines ignored)."""
    headers: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not _HEADER.match(name):
            raise BadServer(f"each header is a line 'Name: value' (letters, digits and dashes in the name): {name!r}")
        if name.lower() in FORBIDDEN_HEADERS:
            raise BadServer(f"the header {name} is set by the platform")
        if not value or len(value) > MAX_HEADER_VALUE or any(c in value for c in "\r\n\0"):
            raise BadServer(f"the value of {name} must be 1 to {MAX_HEADER_VALUE} characters on one line")
        headers[name] = value
    if len(headers) > MAX_HEADERS:
        raise BadServer(f"at most {MAX_HEADERS} headers")
    return headers


async def probe(pinned: PinnedUrl, transport: str, headers: dict[str, str]) -> Probe:
    """Connects (at the pinned address) and lists the server's tools."""
    timeout = httpx2.Timeout(CONNECT_TIMEOUT_S, read=CONNECT_TIMEOUT_S)
    refusals: list[int] = []  # HTTP errors the server answered (the MCP client keeps only a generic message)

    async def noted(response: httpx2.Response) -> None:
        if response.status_code >= 400:
            refusals.append(response.status_code)

    def client(headers: dict[str, str] | None = None, timeout: httpx2.Timeout | float = timeout,
               auth: httpx2.Auth | None = None) -> httpx2.AsyncClient:
        return pinned_client(pinned, headers=headers, timeout=timeout, event_hooks={"response": [noted]})

    try:
        if transport == "sse":
            connection = sse_client(pinned.url, headers=headers, timeout=CONNECT_TIMEOUT_S,
                                    sse_read_timeout=CONNECT_TIMEOUT_S, httpx_client_factory=client)
            async with Client(connection) as session:
                listed = await session.list_tools()
        else:
            async with client(headers) as http, Client(streamable_http_client(pinned.url, http_client=http)) as session:
                listed = await session.list_tools()
    except Exception as error:  # whatever a foreign server does wrong, it is reported, not raised
        detail = f"it answered HTTP {refusals[-1]}" if refusals else _reason(error)
        log.info("MCP server %s failed: %s", pinned.host, detail)
        return Probe(False, [], detail)
    tools = [{"name": t.name, "description": (t.description or "")[:200]} for t in listed.tools][:100]
    return Probe(True, tools, None)


def _reason(error: BaseException) -> str:
    """The innermost cause of a failed connection, short (an ExceptionGroup's first leaf)."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}"[:300]


class UserMcpServers:
    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.settings, self.sessions = settings, sessions

    async def _pin(self, url: str) -> PinnedUrl:
        try:
            return await pin(url, allow_private=self.settings.local_mode)
        except UnsafeUrl as unsafe:
            raise BadServer(str(unsafe)) from None

    async def add(self, user_id: uuid.UUID, name: str, url: str, transport: str, headers: dict[str, str]) -> McpServer:
        name = name.strip().lower()
        if not _NAME.match(name):
            raise BadServer("the name is 1 to 32 lowercase letters, digits or dashes, starting with a letter")
        if name == PLATFORM_MCP_NAME:
            raise BadServer(f"{name!r} is the platform's own server: choose another name")
        if transport not in TRANSPORTS:
            raise BadServer("the transport is streamable-http or sse")
        pinned = await self._pin(url)
        if len(await self.list(user_id)) >= MAX_SERVERS:
            raise BadServer(f"at most {MAX_SERVERS} servers")
        checked = await probe(pinned, transport, headers)
        server = McpServer(user_id=user_id, name=name, url=pinned.url, transport=transport, status=_status(checked),
                           tools=checked.tools, detail=checked.detail, checked_at=utcnow())
        if headers:
            server.headers_ciphertext = self.settings.data_keyring.seal(
                json.dumps(headers).encode(), context=header_context(user_id, server.id))
        try:
            async with transaction(self.sessions) as session:
                session.add(server)
        except IntegrityError:
            raise BadServer(f"you already have a server named {name!r}") from None
        log.info("user %s added MCP server %s (%s, %s)", user_id, server.id, transport, server.status)
        return server

    async def list(self, user_id: uuid.UUID) -> list[McpServer]:
        async with self.sessions() as session:
            return list((await session.execute(select(McpServer).where(McpServer.user_id == user_id)
                                               .order_by(McpServer.created_at))).scalars())

    def headers(self, server: McpServer) -> dict[str, str]:
        if server.headers_ciphertext is None:
            return {}
        opened = self.settings.data_keyring.open(server.headers_ciphertext,
                                                 context=header_context(server.user_id, server.id))
        return dict(json.loads(opened))

    async def test(self, user_id: uuid.UUID, server_id: uuid.UUID) -> McpServer | None:
        server = await self.own(user_id, server_id)
        if server is None:
            return None
        try:
            checked = await probe(await self._pin(server.url), server.transport, self.headers(server))
        except BadServer as unsafe:  # its host now resolves somewhere it may not
            checked = Probe(False, [], str(unsafe))
        async with transaction(self.sessions) as session:
            await session.execute(update(McpServer).where(McpServer.id == server.id).values(
                status=_status(checked), tools=checked.tools or server.tools, detail=checked.detail,
                checked_at=utcnow()))
        return await self.own(user_id, server_id)

    async def mark_failing(self, server_id: uuid.UUID, detail: str) -> None:
        """The relay could not reach it: the dashboard says so (and a test there brings it back)."""
        async with transaction(self.sessions) as session:
            await session.execute(update(McpServer).where(McpServer.id == server_id).values(
                status="failing", detail=detail[:300], checked_at=utcnow()))

    async def remove(self, user_id: uuid.UUID, server_id: uuid.UUID) -> bool:
        async with transaction(self.sessions) as session:
            gone = await session.execute(delete(McpServer).where(McpServer.id == server_id,
                                                                 McpServer.user_id == user_id))
        return bool(gone.rowcount)  # type: ignore[attr-defined]

    async def own(self, user_id: uuid.UUID, server_id: uuid.UUID) -> McpServer | None:
        async with self.sessions() as session:
            return (await session.execute(select(McpServer).where(
                McpServer.id == server_id, McpServer.user_id == user_id))).scalar_one_or_none()


def _status(checked: Probe) -> str:
    return "ok" if checked.ok else "failing"


