"""GET /healthz: each component the API depends on, and 503 when any is down."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from core import heartbeat
from core.temporal import connect

router = APIRouter()

CHECK_TIMEOUT_S = 2.0


async def _database(request: Request) -> dict[str, Any]:
    async with request.app.state.sessions() as session:
        await session.execute(text("SELECT 1"))
    return {"state": "up"}


async def _temporal(request: Request) -> dict[str, Any]:
    state = request.app.state
    if state.temporal is None:
        state.temporal = await connect(state.settings)
    await state.temporal.service_client.check_health()
    return {"state": "up", "address": state.settings.temporal_address}


async def _worker(request: Request) -> dict[str, Any]:
    settings = request.app.state.settings
    fresh = await heartbeat.fresh_details(
        request.app.state.sessions, service="worker", stale_after_s=settings.worker_heartbeat_stale_s
    )
    return {"state": "up" if fresh else "down", "instances": len(fresh), "agent_pool": agent_pool(fresh)}


def agent_pool(details: list[dict[str, Any]]) -> dict[str, Any]:
    """The warm spares the workers' runtimes hold: whether a new user's first call will wait for one.
    Reported, not judged: a platform still warming its spares is healthy, its first callers just wait."""
    pools = [d["agent_pool"] for d in details if isinstance(d.get("agent_pool"), dict)]
    total = {key: sum(int(p.get(key, 0)) for p in pools) for key in ("spares_ready", "spares_starting", "spares_target")}
    return {"state": "ready" if total["spares_ready"] or not total["spares_target"] else "warming", **total}


async def _check(probe: Any, request: Request) -> dict[str, Any]:
    try:
        return await asyncio.wait_for(probe(request), CHECK_TIMEOUT_S)
    except Exception as error:  # any failure is "down", with the reason for the operator
        return {"state": "down", "error": f"{type(error).__name__}: {error}"[:300]}


@router.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    names = ("database", "temporal", "worker")
    results = await asyncio.gather(*(_check(p, request) for p in (_database, _temporal, _worker)))
    components = dict(zip(names, results, strict=True))
    healthy = all(c["state"] == "up" for c in components.values())
    body = {"status": "ok" if healthy else "unavailable", "components": components}
    return JSONResponse(body, status_code=200 if healthy else 503)
