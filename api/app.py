"""The API process (`deepclaw api`)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from activities import adapters
from api import health, hotline, mcp, outbox, twilio
from core.db import create_engine, sessionmaker
from core.limits import UserLimiter, PostgresStorage
from core.settings import Settings, get_settings
from core.temporal import connect

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        app.state.settings = settings
        app.state.sessions = sessionmaker(engine)
        app.state.temporal = None
        app.state.telephony = adapters.telephony(settings)  # the platform MCP server's send_sms / call_me
        app.state.web_search = adapters.web_search(settings)  # and its web_search
        app.state.limiter = UserLimiter(PostgresStorage(app.state.sessions), settings.user_limits())
        try:
            app.state.temporal = await connect(settings)
        except Exception as error:  # /healthz reports it and reconnects; serving the rest goes on
            log.warning("Temporal not reachable at %s yet: %s", settings.temporal_address, error)
        yield
        await app.state.telephony.close()
        await app.state.web_search.close()
        await engine.dispose()

    app = FastAPI(title="DeepClaw", lifespan=lifespan)
    app.include_router(health.router)
    app.include_router(twilio.router)
    app.include_router(hotline.router)
    app.include_router(outbox.router)
    app.include_router(mcp.router)
    return app
