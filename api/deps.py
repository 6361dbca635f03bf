"""What API handlers take, as `Annotated[..., Depends()]`: one place that knows where each lives
(the app's lifespan puts them on app.state), so handlers never reach into request.app.state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.limits import UserLimiter
from core.ports import Telephony, WebSearch
from core.settings import Settings


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    return request.app.state.sessions


def _temporal(request: Request) -> Client | None:
    """None while Temporal is unreachable (/healthz reconnects): handlers answer without it."""
    return request.app.state.temporal


def _telephony(request: Request) -> Telephony:
    return request.app.state.telephony


def _web_search(request: Request) -> WebSearch:
    return request.app.state.web_search


def _limiter(request: Request) -> UserLimiter:
    return request.app.state.limiter


SettingsDep = Annotated[Settings, Depends(_settings)]
SessionsDep = Annotated[async_sessionmaker[AsyncSession], Depends(_sessions)]
TemporalDep = Annotated[Client | None, Depends(_temporal)]
TelephonyDep = Annotated[Telephony, Depends(_telephony)]
WebSearchDep = Annotated[WebSearch, Depends(_web_search)]
LimiterDep = Annotated[UserLimiter, Depends(_limiter)]
