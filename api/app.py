"""The API process (`deepclaw api`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from starlette.exceptions import HTTPException

from core import composition
from api.deps import Platform
from api import pages
from api.routes import (
    account,
    agent_page,
    codec,
    dashboard,
    hotline,
    integrations,
    internal,
    mcp,
    mcp_relay,
    media,
    operator,
    reminders_page,
    twilio,
    usage,
)
from core.bounded import BodyLimit
from core.db import create_engine, sessionmaker
from core.limits import PostgresStorage, UserLimiter
from core.metrics import metrics_endpoint
from core.tracing import SERVER_HOOKS, UNTRACED_URLS, setup_tracing
from core.request_limits import RequestLimit
from core.settings import Settings, get_settings
from core.think import MAX_THINK_BODY_BYTES


DASHBOARD_MAX_BODY_BYTES = 64 * 1024  # the dashboard's forms, sign-in, and anything not listed


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    agent_tools = mcp.create_server(settings, lambda: app.state.platform)
    agent_tools_app = mcp.http_app(agent_tools)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        sessions = sessionmaker(engine)
        platform = Platform(settings=settings, sessions=sessions, telephony=composition.telephony(settings),
                            web_search=composition.web_search(settings), mailer=composition.mailer(settings, sessions),
                            speech=composition.speech(settings), archive=composition.archive_store(settings),
                            limiter=UserLimiter(PostgresStorage(sessions), settings.user_limits()))
        app.state.platform = platform
        await platform.temporal.try_connect()  # /healthz reports it and reconnects; serving the rest goes on
        try:
            async with agent_tools.session_manager.run():
                yield
        finally:
            await platform.telephony.close()
            await platform.web_search.close()
            await platform.speech.close()
            await engine.dispose()

    app = FastAPI(title="DeepClaw", lifespan=lifespan)
    app.add_api_route("/metrics", metrics_endpoint(settings), include_in_schema=False)
    for routes in (internal, twilio, hotline, media, mcp_relay, dashboard, reminders_page, agent_page, integrations,
                   account, usage, operator, codec):
        app.include_router(routes.router)

    @app.exception_handler(HTTPException)
    async def errors(request: Request, error: HTTPException) -> Response:
        if error.status_code in pages.ERROR_TITLES and "text/html" in request.headers.get("accept", ""):
            return pages.error_page(request, settings, error.status_code, str(error.detail))
        answer = await http_exception_handler(request, error)
        if request.url.path.startswith(codec.router.prefix):  # Temporal UI may read why (sign in first)
            codec.allow_origin(request, settings, answer)
        return answer

    app.add_middleware(BodyLimit, default=DASHBOARD_MAX_BODY_BYTES, limits={
        "/twilio/": twilio.MAX_FORM_BYTES, "/hotline/": MAX_THINK_BODY_BYTES, "/mcp": mcp.MAX_BODY_BYTES,
        "/mcp-relay/": mcp_relay.MAX_BODY_BYTES, "/codec/": codec.MAX_BODY_BYTES})
    # Outermost: a flood is refused before its body is read.
    app.add_middleware(RequestLimit, per_token=settings.token_request_limits,
                       per_client=settings.client_request_limits)
    app.mount("/static", StaticFiles(directory=Path(__file__).with_name("static")), name="static")
    app.mount("/", agent_tools_app)  # last: it serves only POST /mcp, after every route above
    FastAPIInstrumentor.instrument_app(app, tracer_provider=setup_tracing(settings, "deepclaw-api"),
                                       excluded_urls=UNTRACED_URLS, **SERVER_HOOKS)
    return app
