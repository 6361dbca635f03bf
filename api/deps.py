"""What API handlers take, as `Annotated[..., Depends()]`. The app's lifespan builds one `Platform`
(the API's long-lived parts); this module is the only place that knows it lives on app.state, so
handlers never reach into request.app.state."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.limits import UserLimiter
from core.ports import Telephony, WebSearch
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
    limiter: UserLimiter
    temporal: TemporalLink = field(init=False)

    def __post_init__(self) -> None:
        self.temporal = TemporalLink(self.settings)


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


def _limiter(request: Request) -> UserLimiter:
    return platform(request).limiter


SettingsDep = Annotated[Settings, Depends(_settings)]
SessionsDep = Annotated[async_sessionmaker[AsyncSession], Depends(_sessions)]
SessionDep = Annotated[AsyncSession, Depends(_session)]  # one session for the request
TemporalDep = Annotated[Client | None, Depends(_temporal)]
TemporalLinkDep = Annotated[TemporalLink, Depends(_temporal_link)]
TelephonyDep = Annotated[Telephony, Depends(_telephony)]
WebSearchDep = Annotated[WebSearch, Depends(_web_search)]
LimiterDep = Annotated[UserLimiter, Depends(_limiter)]
