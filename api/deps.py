"""What API handlers take, as `Annotated[..., Depends()]`. The app's lifespan builds one `Platform`
(the API's long-lived parts); this module is the only place that knows it lives on app.state, so
handlers never reach into request.app.state."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from activities.integrations.credentials import Credentials
from activities.integrations.mcp_servers import UserMcpServers
from core.limits import UserLimiter
from api.sign_in import PRE_SESSION_COOKIE, SESSION_COOKIE, Viewer, csrf_matches, viewer_of
from core.ports import ArchiveStore, Mailer, Speech, Telephony, WebSearch
from core.settings import Settings
from core.temporal import connect

log = logging.getLogger(__name__)


@dataclass
class TemporalLink:
    """The API's Temporal client, or None while Temporal is unreachable: serving goes on without it,
    and /healthz (or the next caller of `connected`) connects again."""

    settings: Settings
    client: Client | None = None

    async def connected(self) -> Client:
        if self.client is None:
            self.client = await connect(self.settings)
        return self.client

    async def try_connect(self) -> None:
        try:
            await self.connected()
        except Exception as error:
            log.warning("Temporal not reachable at %s yet: %s", self.settings.temporal_address, error)


@dataclass
class Platform:
    """What the API serves with, built once per process in the lifespan."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    telephony: Telephony  # messages passed on to a user (texts from strangers)
    web_search: WebSearch  # and its web_search
    mailer: Mailer  # dashboard sign-in codes by email
    speech: Speech  # the dashboard's voice samples
    archive: ArchiveStore  # where the agent's memory files wait for a data export
    limiter: UserLimiter
    temporal: TemporalLink = field(init=False)
    credentials: Credentials = field(init=False)  # users' Google and Microsoft tokens, sealed
    mcp_servers: UserMcpServers = field(init=False)  # users' own MCP servers, their headers sealed

    def __post_init__(self) -> None:
        self.temporal = TemporalLink(self.settings)
        self.credentials = Credentials(self.settings, self.sessions)
        self.mcp_servers = UserMcpServers(self.settings, self.sessions)


def platform(request: Request) -> Platform:
    return request.app.state.platform


def _settings(request: Request) -> Settings:
    return platform(request).settings


def _sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    return platform(request).sessions


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with platform(request).sessions() as session:
        yield session


def _temporal(request: Request) -> Client | None:
    """None while Temporal is unreachable: handlers answer without it."""
    return platform(request).temporal.client


def _temporal_link(request: Request) -> TemporalLink:
    return platform(request).temporal


def _telephony(request: Request) -> Telephony:
    return platform(request).telephony


def _web_search(request: Request) -> WebSearch:
    return platform(request).web_search


def _mailer(request: Request) -> Mailer:
    return platform(request).mailer


def _speech(request: Request) -> Speech:
    return platform(request).speech


def _archive(request: Request) -> ArchiveStore:
    return platform(request).archive


def _limiter(request: Request) -> UserLimiter:
    return platform(request).limiter


def _credentials(request: Request) -> Credentials:
    return platform(request).credentials


def _mcp_servers(request: Request) -> UserMcpServers:
    return platform(request).mcp_servers


SettingsDep = Annotated[Settings, Depends(_settings)]
SessionsDep = Annotated[async_sessionmaker[AsyncSession], Depends(_sessions)]
SessionDep = Annotated[AsyncSession, Depends(_session)]  # one session for the request
TemporalDep = Annotated[Client | None, Depends(_temporal)]
TemporalLinkDep = Annotated[TemporalLink, Depends(_temporal_link)]
TelephonyDep = Annotated[Telephony, Depends(_telephony)]
WebSearchDep = Annotated[WebSearch, Depends(_web_search)]
MailerDep = Annotated[Mailer, Depends(_mailer)]
SpeechDep = Annotated[Speech, Depends(_speech)]
ArchiveDep = Annotated[ArchiveStore, Depends(_archive)]
LimiterDep = Annotated[UserLimiter, Depends(_limiter)]
CredentialsDep = Annotated[Credentials, Depends(_credentials)]
McpServersDep = Annotated[UserMcpServers, Depends(_mcp_servers)]


# ---- the dashboard: who is signed in, and CSRF ----------------------------------------------------


async def _viewer(request: Request, settings: SettingsDep, session: SessionDep) -> Viewer | None:
    return await viewer_of(settings, session, request.cookies.get(SESSION_COOKIE))


ViewerDep = Annotated[Viewer | None, Depends(_viewer)]


def _signed_in(viewer: ViewerDep) -> Viewer:
    """Pages for the signed-in only: anyone else is sent to sign in."""
    if viewer is None:
        raise HTTPException(status_code=303, headers={"Location": "/signin"})
    return viewer


def _user_id(viewer: Annotated[Viewer, Depends(_signed_in)]) -> uuid.UUID:
    """Pages of one's own account: an operator without one has none (they have the operator pages)."""
    if viewer.user_id is None:
        raise HTTPException(status_code=303, headers={"Location": "/operator"})
    return viewer.user_id


SignedInDep = Annotated[Viewer, Depends(_signed_in)]
UserIdDep = Annotated[uuid.UUID, Depends(_user_id)]


def csrf_basis(request: Request, viewer: Viewer | None) -> str | None:
    """What this browser's CSRF token is bound to: its session, else its pre-session cookie."""
    return str(viewer.session_id) if viewer else request.cookies.get(PRE_SESSION_COOKIE)


async def _csrf_checked(request: Request, settings: SettingsDep, viewer: ViewerDep) -> None:
    """Every state-changing dashboard request carries the token of this browser's session (a form
    field, or the X-CSRF-Token header), and comes from this site if the browser says where from."""
    origin = request.headers.get("origin")
    if origin and origin.rstrip("/") not in {settings.api_base_url.rstrip("/"), str(request.base_url).rstrip("/")}:
        raise HTTPException(status_code=403, detail="cross-site request refused")
    token = request.headers.get("x-csrf-token") or str((await request.form()).get("csrf_token") or "")
    basis = csrf_basis(request, viewer)
    if not token or not basis or not csrf_matches(settings.keyring, basis, token):
        raise HTTPException(status_code=403, detail="the form has expired: reload the page and try again")


CsrfDep = Depends(_csrf_checked)  # as a route's dependencies=[CsrfDep]
