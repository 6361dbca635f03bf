"""The relay to a user's own MCP servers: the agent's config names `/mcp-relay/<server id>` on the
platform (with the agent's own platform token), and the platform forwards each MCP request to the
server, adding the header values the user gave (sealed at rest, opened here per request).

Why a relay, not the header values in the agent's environment: a local agent is a warm spare
gateway, started before it knows whose it will be, so its environment cannot carry a user's secret
(and a config file must not). Through the relay the secret never reaches the agent at all, on either
runtime; the host is resolved and checked against request forgery at each connection and the
connection pinned to that address (core.safe_urls), so the agent cannot be steered elsewhere; and
the agents' network rules need no per-user holes (they reach the platform already).

Streamable HTTP is relayed as is (JSON or an event stream); for the SSE transport the `endpoint`
event's URL is rewritten to come back through the relay."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx2
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from api.deps import McpServersDep, SessionsDep, SettingsDep
from api.routes.mcp import user_of_token
from core.callbacks import MCP_RELAY_PATH
from core.safe_urls import UnsafeUrl, pin, pinned_client
from core.tokens import InvalidToken

log = logging.getLogger(__name__)
router = APIRouter()

MAX_BODY_BYTES = 1024 * 1024
REQUEST_HEADERS = ("content-type", "accept", "mcp-session-id", "mcp-protocol-version", "last-event-id")
RESPONSE_HEADERS = ("content-type", "mcp-session-id", "mcp-protocol-version", "cache-control")
CONNECT_S, CALL_S = 10.0, 120.0  # a tool may take a while; an event stream (GET) has no read limit


@router.api_route(MCP_RELAY_PATH + "/{server_id}", methods=["GET", "POST", "DELETE"], include_in_schema=False)
@router.api_route(MCP_RELAY_PATH + "/{server_id}/{rest:path}", methods=["GET", "POST", "DELETE"],
                  include_in_schema=False)
async def relay(request: Request, server_id: uuid.UUID, settings: SettingsDep, sessions: SessionsDep,
                servers: McpServersDep, rest: str = "") -> Response:
    header = request.headers.get("authorization", "")
    try:
        user_id = await user_of_token(header.removeprefix("Bearer ").strip(), settings, sessions)
    except InvalidToken:
        raise HTTPException(status_code=401, detail="an agent's platform token is required") from None
    server = await servers.own(user_id, server_id)
    if server is None or not server.enabled:
        raise HTTPException(status_code=404, detail="no such server")
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(server.url))
    target = f"{origin}/{rest}" if rest else server.url
    if request.url.query:
        target += ("&" if "?" in target else "?") + request.url.query
    try:
        pinned = await pin(target, allow_private=settings.local_mode)
    except UnsafeUrl as unsafe:
        log.warning("user %s: MCP server %s refused: %s", user_id, server_id, unsafe)
        raise HTTPException(status_code=502, detail=f"the server may not be reached: {unsafe}") from None
    body = await request.body()  # bounded by core.bounded.BodyLimit (api/app.py)
    timeout = httpx2.Timeout(CONNECT_S, read=None if request.method == "GET" else CALL_S)
    client = pinned_client(pinned, headers=servers.headers(server), timeout=timeout)
    forwarded = {k: v for k, v in request.headers.items() if k.lower() in REQUEST_HEADERS}
    try:
        upstream = await client.send(client.build_request(request.method, target, content=body, headers=forwarded),
                                     stream=True)
    except httpx2.HTTPError as error:
        await client.aclose()
        log.info("user %s: MCP server %s did not answer: %s", user_id, server_id, type(error).__name__)
        await servers.mark_failing(server_id, f"it did not answer the agent ({type(error).__name__})")
        raise HTTPException(status_code=502, detail="the server did not answer") from None

    async def close() -> None:
        await upstream.aclose()
        await client.aclose()

    content_type = upstream.headers.get("content-type", "")
    chunks = (_rewritten(upstream, f"{MCP_RELAY_PATH}/{server_id}", origin)
              if server.transport == "sse" and content_type.startswith("text/event-stream") else upstream.aiter_raw())
    return StreamingResponse(chunks, status_code=upstream.status_code, background=BackgroundTask(close),
                             headers={k: v for k, v in upstream.headers.items() if k.lower() in RESPONSE_HEADERS})


async def _rewritten(upstream: httpx2.Response, relay_path: str, origin: str) -> AsyncIterator[bytes]:
    """The SSE transport's stream, with its `endpoint` event pointing back through the relay."""
    endpoint_next = False
    async for line in upstream.aiter_lines():
        if line.startswith("event:"):
            endpoint_next = line[6:].strip() == "endpoint"
        elif line.startswith("data:") and endpoint_next:
            path = line[5:].strip().removeprefix(origin)
            line = f"data: {relay_path}/{path.lstrip('/')}"
            endpoint_next = False
        yield (line + "\n").encode()
