"""The voice bridge's HTTP side: health, and the LLM proxy Deepgram thinks with."""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

from core.bounded import BodyLimit
from core.metrics import metrics_endpoint
from core.request_limits import RequestLimit
from core.db import DATABASE_DOWN
from core.think import MAX_THINK_BODY_BYTES, say_again
from core.tracing import SERVER_HOOKS, UNTRACED_URLS, setup_tracing
from voice.bridge import BridgeDeps
from voice.messages import MessageTaker
from voice.proxy import LlmProxy


log = logging.getLogger(__name__)


def create_app(deps: BridgeDeps, proxy: LlmProxy, messages: MessageTaker) -> Starlette:
    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "components": {"bridge": {"state": "up", "calls": len(deps.calls)}}})

    async def think(request: Request) -> Response:
        try:
            return await proxy(request)
        except DATABASE_DOWN as error:  # the caller is asked again, not met with silence
            log.error("a think request failed, the database is unreachable: %s", error)
            return await say_again(request)

    async def take_message(request: Request) -> Response:
        try:
            return await messages(request)
        except DATABASE_DOWN as error:
            log.error("a message could not be taken, the database is unreachable: %s", error)
            return await say_again(request)

    app = Starlette(routes=[
        Route("/healthz", healthz),
        Route("/metrics", metrics_endpoint(deps.settings)),
        Route("/llm/{token}/v1/chat/completions", think, methods=["POST"]),
        Route("/message/{token}/v1/chat/completions", take_message, methods=["POST"]),
    ])
    app.add_middleware(BodyLimit, default=MAX_THINK_BODY_BYTES)
    # Each think request continues its call's trace (the traceparent in its URL: core.tracing).
    app.add_middleware(OpenTelemetryMiddleware, tracer_provider=setup_tracing(deps.settings, "deepclaw-voice"),
                       excluded_urls=UNTRACED_URLS, **SERVER_HOOKS)
    # Deepgram calls from shared addresses: only each call's token is counted.
    app.add_middleware(RequestLimit, per_token=deps.settings.token_request_limits, per_client=None)
    app.state.settings = deps.settings
    return app
