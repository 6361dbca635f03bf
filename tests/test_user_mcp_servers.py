"""A user's own MCP servers: URLs checked against request forgery (resolved once, the address
pinned), a real `mcp` server (started here) added from the dashboard with its tools listed and its
header secret sealed, a failing one shown as failing, the platform's own name refused, another
user's server out of reach."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator

import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send

from activities.integrations.mcp_servers import BadServer, UserMcpServers, parse_headers
from core.callbacks import agent_mcp_servers
from core.models import McpServer, User
from core.process import free_port
from core.safe_urls import PinnedUrl, UnsafeUrl, pin, pinned_client
from core.serve import serving
from core.settings import Settings
from tests.test_dashboard import Dashboard, _csrf, _signed_in, _user, dashboard  # noqa: F401 (the fixture)

SECRET = "s3cret-header-value-0042"


def _tool_server() -> MCPServer:
    server = MCPServer("notes")

    @server.tool()
    def shout(words: str) -> str:
        """Says the words loudly."""
        return words.upper()

    return server


class _KeyRequired:
    """The server answers only with the user's API key (the header the dashboard stores sealed)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and dict(scope["headers"]).get(b"x-api-key") != SECRET.encode():
            await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"missing or wrong key"})
            return
        await self.app(scope, receive, send)


@pytest.fixture
async def tool_server() -> AsyncIterator[str]:
    """A real MCP server (streamable HTTP) on loopback that wants an API key; yields its URL."""
    server, port = _tool_server(), free_port()
    app = server.streamable_http_app(transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
                                     json_response=True, stateless_http=True)

    async def lifespan_app(scope: Scope, receive: Receive, send: Send) -> None:
        await _KeyRequired(app)(scope, receive, send)

    async with serving(lifespan_app, "127.0.0.1", port):
        yield f"http://127.0.0.1:{port}/mcp"


@pytest.mark.parametrize("url", [
    "http://api.example.com/mcp",  # not https
    "https://127.0.0.1/mcp", "https://localhost/mcp", "https://[::1]/mcp", "https://10.1.2.3/mcp",
    "https://192.168.0.7/mcp", "https://169.254.169.254/latest/meta-data", "https://100.64.0.1/mcp",
    "https://[::ffff:127.0.0.1]/mcp", "https://0.0.0.0/mcp", "https://user:pw@example.com/mcp",
    "ftp://example.com/mcp", "https://no-such-host.invalid/mcp", "https://example.com:99999/mcp"])
async def test_outside_local_mode_only_public_https_servers_are_allowed(url: str) -> None:
    with pytest.raises(UnsafeUrl):
        await pin(url, allow_private=False)


async def test_in_local_mode_loopback_is_allowed_and_the_address_is_pinned(tool_server: str) -> None:
    pinned = await pin(tool_server, allow_private=True)
    assert pinned.address == "127.0.0.1" and pinned.host == "127.0.0.1"
    # A name that resolves nowhere still reaches the pinned address: nothing is looked up again.
    port = int(tool_server.rsplit(":", 1)[1].split("/")[0])
    elsewhere = PinnedUrl(url=f"http://mcp.invalid:{port}/mcp", host="mcp.invalid", port=port, address="127.0.0.1")
    async with pinned_client(elsewhere) as http:
        assert (await http.post(elsewhere.url, json={})).status_code == 401  # the server's own answer
        with pytest.raises(Exception, match="not the pinned host"):
            await http.get("http://127.0.0.2:1/")


async def test_a_server_is_added_with_its_tools_and_its_header_sealed(
        settings: Settings, sessions: async_sessionmaker[AsyncSession], tool_server: str) -> None:
    user = User(phone_e164=f"+1555{uuid.uuid4().int % 10**7:07d}")
    async with sessions() as session, session.begin():
        session.add(user)
    servers = UserMcpServers(settings, sessions)
    added = await servers.add(user.id, "Notes", tool_server, "streamable-http", {"X-Api-Key": SECRET})
    assert (added.name, added.status) == ("notes", "ok")
    assert added.tools == [{"name": "shout", "description": "Says the words loudly."}]
    async with sessions() as session:
        raw = (await session.execute(text("SELECT t::text FROM mcp_servers t WHERE id = :id"),
                                     {"id": added.id})).scalar_one()
    assert SECRET not in raw and SECRET.encode().hex() not in raw
    assert servers.headers(added) == {"X-Api-Key": SECRET}

    wrong = await servers.add(user.id, "wrong-key", tool_server, "streamable-http", {"X-Api-Key": "nope"})
    assert wrong.status == "failing" and "401" in (wrong.detail or ""), wrong.detail
    for name, problem in (("deepclaw", "platform's own"), ("notes", "already have"), ("9lives", "starting with")):
        with pytest.raises(BadServer, match=problem):
            await servers.add(user.id, name, tool_server, "streamable-http", {})
    with pytest.raises(BadServer, match="https"):
        await UserMcpServers(settings.model_copy(update={"telephony": "twilio"}), sessions).add(
            user.id, "public-only", tool_server, "streamable-http", {})

    stranger = uuid.uuid4()
    assert await servers.test(stranger, added.id) is None and not await servers.remove(stranger, added.id)
    assert (await servers.test(user.id, added.id)).status == "ok"  # type: ignore[union-attr]
    assert await servers.remove(user.id, added.id)
    assert [s.name for s in await servers.list(user.id)] == ["wrong-key"]


def test_headers_are_lines_of_name_and_value() -> None:
    assert parse_headers("Authorization: Bearer abc\n\nX-Team: 7") == {"Authorization": "Bearer abc", "X-Team": "7"}
    for bad in ("no colon here", "Host: evil.example", "Bad Name: x", "X-Empty:"):
        with pytest.raises(BadServer):
            parse_headers(bad)


async def test_the_dashboard_adds_lists_tests_and_removes_a_server(
        dashboard: Dashboard, sessions: async_sessionmaker[AsyncSession], tool_server: str) -> None:  # noqa: F811
    ada = await _user(sessions, name="Ada", said="hello")
    async with dashboard.browser() as browser:
        token = await _signed_in(dashboard, browser, ada)
        refused = await browser.post("/integrations/mcp", data={
            "csrf_token": token, "name": "deepclaw", "url": tool_server, "transport": "streamable-http",
            "headers": f"X-Api-Key: {SECRET}"})
        assert refused.status_code == 422 and "the platform&#39;s own server" in refused.text
        assert SECRET not in refused.text, "a header value is never echoed back"
        added = await browser.post("/integrations/mcp", data={
            "csrf_token": token, "name": "notes", "url": tool_server, "transport": "streamable-http",
            "headers": f"X-Api-Key: {SECRET}"})
        assert added.status_code == 303
        page = await browser.get(added.headers["location"])
        assert "Server added" in page.text and "<code>shout</code>" in page.text and "answering" in page.text
        assert SECRET not in page.text
        [server_id] = re.findall(r'/integrations/mcp/([0-9a-f-]{36})/test', page.text)
        tested = await browser.post(f"/integrations/mcp/{server_id}/test", data={"csrf_token": token})
        assert "mcp-ok" in tested.headers["location"]
        assert (await browser.post(f"/integrations/mcp/{server_id}/remove", data={})).status_code == 403  # no CSRF
        removed = await browser.post(f"/integrations/mcp/{server_id}/remove", data={"csrf_token": token})
        assert removed.status_code == 303 and "<code>shout</code>" not in (await browser.get("/integrations")).text
    async with sessions() as session:
        assert not (await session.execute(select(McpServer).where(McpServer.user_id == ada.id))).scalars().all()


@pytest.fixture
async def sse_tool_server() -> AsyncIterator[str]:
    """The same tool over the older SSE transport (no key); yields its /sse URL."""
    port = free_port()
    app = _tool_server().sse_app(transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
    async with serving(app, "127.0.0.1", port):
        yield f"http://127.0.0.1:{port}/sse"


async def test_agents_reach_the_users_server_only_through_the_relay_with_their_own_token(
        dashboard: Dashboard, sessions: async_sessionmaker[AsyncSession], tool_server: str,  # noqa: F811
        sse_tool_server: str) -> None:
    settings = dashboard.settings
    ada, bob = await _user(sessions, name="Ada", said="hi"), await _user(sessions, name="Bob", said="hi")
    servers = UserMcpServers(settings, sessions)
    notes = await servers.add(ada.id, "notes", tool_server, "streamable-http", {"X-Api-Key": SECRET})
    legacy = await servers.add(ada.id, "legacy", sse_tool_server, "sse", {})
    rendered = {s.name: s for s in await agent_mcp_servers(settings, sessions, ada.id)}
    assert rendered["notes"].url == f"{settings.api_base_url}/mcp-relay/{notes.id}"
    assert SECRET not in json.dumps([s.model_dump() for s in rendered.values()]), "the key stays with the platform"

    for name, connect in (("notes", lambda http, url: streamable_http_client(url, http_client=http)),
                          ("legacy", lambda http, url: sse_client(url, headers=dict(http.headers)))):
        spec = rendered[name]
        async with httpx2.AsyncClient(headers=spec.headers, timeout=20) as http, \
                Client(connect(http, spec.url)) as client:
            assert [t.name for t in (await client.list_tools()).tools] == ["shout"]
            shouted = await client.call_tool("shout", {"words": "through the relay"})
            assert shouted.content[0].text == "THROUGH THE RELAY"  # type: ignore[union-attr]

    bob_token = (await agent_mcp_servers(settings, sessions, bob.id))[0].headers
    async with httpx2.AsyncClient(base_url=settings.api_base_url) as http:
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
        accept = {"Accept": "application/json, text/event-stream"}
        assert (await http.post(f"/mcp-relay/{notes.id}", json=body, headers=accept)).status_code == 401
        assert (await http.post(f"/mcp-relay/{notes.id}", json=body, headers={**accept, **bob_token})).status_code \
            == 404, "another user's agent cannot use Ada's server"
        assert (await http.post(f"/mcp-relay/{legacy.id}/../../etc", json=body,
                                headers={**accept, **rendered["legacy"].headers})).status_code in (404, 405, 502)
    assert legacy.status == "ok"
