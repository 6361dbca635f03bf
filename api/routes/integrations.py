"""The dashboard's Integrations page: connect Google (Calendar, Gmail) or Microsoft (Outlook calendar
and mail) by OAuth 2.0 authorization code with PKCE, see what each may do, disconnect.

Connecting: the page lists the scopes asked for, in words, before the user goes; `POST connect` makes
a `state` and a PKCE verifier (authlib), keeps them in a short-lived sealed cookie bound to this
sign-in, and sends the browser to the provider. The callback checks the state against the cookie and
the sign-in, trades the code (with the verifier) for tokens, and seals them (core.keyring). The
tokens never reach a page, a log or Temporal.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from typing import Annotated, Any

from authlib.integrations.httpx_client import OAuthError
from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from httpx2 import HTTPError

from api.deps import (
    CredentialsDep,
    CsrfDep,
    McpServersDep,
    SessionDep,
    SettingsDep,
    SignedInDep,
    TemporalDep,
    UserIdDep,
)
from api.pages import audit, own_user, render
from api.routes.agent_page import apply_to_agent
from activities.integrations.credentials import oauth_client
from activities.integrations.mcp_servers import TRANSPORTS, BadServer, parse_headers
from core.integrations import ConnectionState, Provider, provider_config
from core.settings import Settings
from core.tokens import InvalidToken, TokenKind

log = logging.getLogger(__name__)
router = APIRouter()

STATE_COOKIE = "deepclaw_oauth"
STATE_TTL_S = 600  # time to sign in at the provider and consent
AUDIENCE = "integrations"
NOTICES = {"connected": "Connected. Your agent can use it from its next answer.",
           "disconnected": "Disconnected: your agent has no access any more.",
           "denied": "Not connected: access was not allowed at the provider.",
           "expired": "That sign-in took too long or came from another browser: connect again.",
           "failed": "The provider did not complete the connection: connect again.",
           "mcp-added": "Server added. Your agent can use its tools from its next conversation.",
           "mcp-removed": "Server removed.",
           "mcp-ok": "The server answered.",
           "mcp-failing": "The server did not answer; see why below."}


def _provider(name: str) -> Provider:
    try:
        return Provider(name)
    except ValueError:
        raise HTTPException(status_code=404, detail="no such integration") from None


@router.get("/integrations", response_class=HTMLResponse)
async def integrations(request: Request, settings: SettingsDep, viewer: SignedInDep, user_id: UserIdDep,
                       credentials: CredentialsDep, servers: McpServersDep, notice: str | None = None) -> Response:
    return await _page(request, settings, viewer, user_id, credentials, servers, notice=NOTICES.get(notice or ""))


async def _page(request: Request, settings: Settings, viewer: Any, user_id: uuid.UUID, credentials: CredentialsDep,
                servers: McpServersDep, *, notice: str | None = None, problem: str | None = None,
                form: dict[str, str] | None = None) -> Response:
    connections = await credentials.connections(user_id)
    providers = [(provider_config(settings, p), connections.get(p)) for p in Provider]
    return render(request, settings, "integrations.html", status=422 if problem else 200, viewer=viewer,
                  csrf=viewer.csrf, active="integrations", providers=providers, notice=notice,
                  NEEDS_CONSENT=ConnectionState.NEEDS_CONSENT, servers=await servers.list(user_id),
                  transports=TRANSPORTS, problem=problem, form=form or {})


@router.post("/integrations/mcp", dependencies=[CsrfDep])
async def add_mcp_server(
        request: Request, settings: SettingsDep, session: SessionDep, viewer: SignedInDep, user_id: UserIdDep,
        credentials: CredentialsDep, servers: McpServersDep, temporal: TemporalDep,
        name: Annotated[str, Form(max_length=64)] = "",
        url: Annotated[str, Form(max_length=1024)] = "", transport: Annotated[str, Form(max_length=16)] = "",
        headers: Annotated[str, Form(max_length=24_000)] = "") -> Response:
    try:
        added = await servers.add(user_id, name, url, transport or TRANSPORTS[0], parse_headers(headers))
    except BadServer as bad:
        return await _page(request, settings, viewer, user_id, credentials, servers, problem=str(bad),
                           form={"name": name, "url": url, "transport": transport})  # header values not echoed
    await audit(session, user_id=user_id, action="mcp_server.added", server=str(added.id), status=added.status)
    await apply_to_agent(temporal, await own_user(session, user_id))  # its config names the server from now on
    return RedirectResponse("/integrations?notice=mcp-added#mcp-servers", status_code=303)


@router.post("/integrations/mcp/{server_id}/test", dependencies=[CsrfDep])
async def test_mcp_server(server_id: uuid.UUID, session: SessionDep, user_id: UserIdDep, servers: McpServersDep,
                          temporal: TemporalDep) -> Response:
    before = await servers.own(user_id, server_id)
    checked = await servers.test(user_id, server_id)
    if before is None or checked is None:
        raise HTTPException(status_code=404, detail="no such server")
    if checked.status != before.status:  # a failing server is left out of the agent's config, an answering one in
        await apply_to_agent(temporal, await own_user(session, user_id))
    return RedirectResponse(f"/integrations?notice=mcp-{checked.status}#mcp-servers", status_code=303)


@router.post("/integrations/mcp/{server_id}/remove", dependencies=[CsrfDep])
async def remove_mcp_server(server_id: uuid.UUID, session: SessionDep, user_id: UserIdDep,
                            servers: McpServersDep, temporal: TemporalDep) -> Response:
    if not await servers.remove(user_id, server_id):
        raise HTTPException(status_code=404, detail="no such server")
    await audit(session, user_id=user_id, action="mcp_server.removed", server=str(server_id))
    await apply_to_agent(temporal, await own_user(session, user_id))
    return RedirectResponse("/integrations?notice=mcp-removed#mcp-servers", status_code=303)


@router.post("/integrations/{name}/connect", dependencies=[CsrfDep])
async def connect(name: str, settings: SettingsDep, viewer: SignedInDep, user_id: UserIdDep) -> Response:
    config = provider_config(settings, _provider(name))
    verifier = secrets.token_urlsafe(64)  # RFC 7636: 43 to 128 characters
    async with oauth_client(settings, config) as client:
        url, state = client.create_authorization_url(config.authorize_url, code_verifier=verifier,
                                                     **config.authorize_params)
    sealed = settings.keyring.seal(TokenKind.OAUTH_STATE, {
        "state": state, "verifier": verifier, "provider": config.provider.value, "session": str(viewer.session_id)},
        audience=AUDIENCE, ttl_s=STATE_TTL_S)
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(STATE_COOKIE, sealed, **_cookie(settings))
    return response


@router.get("/integrations/{name}/callback")
async def callback(request: Request, name: str, settings: SettingsDep, session: SessionDep, viewer: SignedInDep,
                   user_id: UserIdDep, credentials: CredentialsDep) -> Response:
    provider = _provider(name)
    claims = _pending(settings, request, provider, str(viewer.session_id))
    if claims is None:
        return _back("expired")
    if request.query_params.get("error"):  # access_denied: the user said no at the provider
        log.info("user %s did not allow %s: %s", user_id, provider.value, request.query_params.get("error"))
        return _back("denied")
    code = request.query_params.get("code")
    if not code:
        return _back("failed")
    config = provider_config(settings, provider)
    try:
        async with oauth_client(settings, config) as client:
            token = await client.fetch_token(config.token_url, code=code, code_verifier=claims["verifier"],
                                             grant_type="authorization_code")
    except (OAuthError, HTTPError, ValueError) as error:
        log.warning("user %s: %s did not exchange the authorization code: %s", user_id, provider.value,
                    getattr(error, "error", type(error).__name__))
        return _back("failed")
    await credentials.save(user_id, provider, dict(token))
    await audit(session, user_id=user_id, action="integration.connected", provider=provider.value,
                scopes=str(token.get("scope") or config.scope))
    return _back("connected")


@router.post("/integrations/{name}/disconnect", dependencies=[CsrfDep])
async def disconnect(name: str, settings: SettingsDep, session: SessionDep, user_id: UserIdDep,
                     credentials: CredentialsDep) -> Response:
    provider = _provider(name)
    if await credentials.disconnect(user_id, provider):
        await audit(session, user_id=user_id, action="integration.disconnected", provider=provider.value)
    return RedirectResponse("/integrations?notice=disconnected", status_code=303)


def _pending(settings: Settings, request: Request, provider: Provider, session_id: str) -> dict[str, Any] | None:
    """The connect this browser started (state, verifier), if the callback answers it."""
    try:
        claims = settings.keyring.open(TokenKind.OAUTH_STATE, request.cookies.get(STATE_COOKIE, ""), audience=AUDIENCE)
    except InvalidToken:
        return None
    state = request.query_params.get("state", "")
    if (claims.get("provider") != provider.value or claims.get("session") != session_id
            or not secrets.compare_digest(str(claims.get("state", "")), state)):
        return None
    return claims


def _back(notice: str) -> Response:
    """To the Integrations page with what happened; the connect's cookie is spent either way."""
    response = RedirectResponse(f"/integrations?notice={notice}", status_code=303)
    response.delete_cookie(STATE_COOKIE, path="/integrations")
    return response


def _cookie(settings: Settings) -> dict[str, Any]:
    # Lax: the provider's redirect back is a top-level navigation, which carries it.
    return {"httponly": True, "secure": not settings.local_mode, "samesite": "lax", "max_age": STATE_TTL_S,
            "path": "/integrations"}
