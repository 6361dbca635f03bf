"""The voice bridge process (`deepclaw voice`)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from core.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or get_settings()

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "components": {"bridge": {"state": "up"}}})

    app = Starlette(routes=[Route("/healthz", healthz)])
    app.state.settings = settings
    return app
