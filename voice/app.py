"""The voice bridge's HTTP side: health, and the LLM proxy Deepgram thinks with."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from voice.bridge import BridgeDeps
from voice.proxy import LlmProxy


def create_app(deps: BridgeDeps, proxy: LlmProxy) -> Starlette:
    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "components": {"bridge": {"state": "up", "calls": len(deps.calls)}}})

    async def think(request: Request) -> Response:
        return await proxy(request)

    app = Starlette(routes=[
        Route("/healthz", healthz),
        Route("/llm/{token}/v1/chat/completions", think, methods=["POST"]),
    ])
    app.state.settings = deps.settings
    return app
