"""The voice bridge process (`deepclaw voice`): Media Streams in, the LLM proxy for Deepgram."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from activities import adapters
from core.db import create_engine, sessionmaker
from core.settings import Settings, get_settings
from core.temporal import connect
from voice.bridge import BridgeDeps, CallBridge
from voice.proxy import LlmProxy

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        telephony = adapters.telephony(settings)
        async with httpx.AsyncClient(timeout=httpx.Timeout(120.0, connect=5.0)) as http:
            proxy = LlmProxy(secret=settings.platform_secret.get_secret_value(), temporal=await connect(settings), http=http)
            app.state.proxy = proxy
            app.state.deps = BridgeDeps(settings=settings, sessions=sessionmaker(engine), telephony=telephony,
                                        ask_agent=proxy.ask)
            app.state.calls = 0
            yield
            for task in list(app.state.deps.background):
                task.cancel()
        await telephony.close()
        await engine.dispose()

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "components": {"bridge": {"state": "up", "calls": request.app.state.calls}}})

    async def media(websocket: WebSocket) -> None:
        websocket.app.state.calls += 1
        try:
            await CallBridge(websocket, websocket.app.state.deps).run()
        finally:
            websocket.app.state.calls -= 1

    async def think(request: Request):  # type: ignore[no-untyped-def]
        return await request.app.state.proxy(request)

    app = Starlette(lifespan=lifespan, routes=[
        Route("/healthz", healthz),
        WebSocketRoute("/twilio/media", media),
        Route("/llm/{token}/v1/chat/completions", think, methods=["POST"]),
    ])
    app.state.settings = settings
    return app
