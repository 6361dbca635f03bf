"""Internal endpoints: GET /healthz (each component the API depends on; 503 when any is down) and,
with the local mailer only, the outbox where email codes arrive with no mail server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from html import escape
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import select, text

from api.deps import SessionDep, SessionsDep, SettingsDep, TemporalLinkDep
from core import heartbeat
from core.models import OutboxEmail
from core.settings import MailerAdapter

router = APIRouter()

CHECK_TIMEOUT_S = 2.0
OUTBOX_SHOWN = 50

Probe = Callable[[], Awaitable[dict[str, Any]]]


def agent_pool(details: list[dict[str, Any]]) -> dict[str, Any]:
    """The warm spares the workers' runtimes hold: whether a new user's first call will wait for one.
    Reported, not judged: a platform still warming its spares is healthy, its first callers just wait."""
    pools = [d["agent_pool"] for d in details if isinstance(d.get("agent_pool"), dict)]
    total = {key: sum(int(p.get(key, 0)) for p in pools) for key in ("spares_ready", "spares_starting", "spares_target")}
    return {"state": "ready" if total["spares_ready"] or not total["spares_target"] else "warming", **total}


async def _check(probe: Probe) -> dict[str, Any]:
    try:
        return await asyncio.wait_for(probe(), CHECK_TIMEOUT_S)
    except Exception as error:  # any failure is "down", with the reason for the operator
        return {"state": "down", "error": f"{type(error).__name__}: {error}"[:300]}


@router.get("/healthz")
async def healthz(settings: SettingsDep, sessions: SessionsDep, temporal: TemporalLinkDep) -> JSONResponse:
    async def database() -> dict[str, Any]:
        async with sessions() as session:
            await session.execute(text("SELECT 1"))
        return {"state": "up"}

    async def temporal_server() -> dict[str, Any]:
        await (await temporal.connected()).service_client.check_health()  # reconnects if it was down
        return {"state": "up", "address": settings.temporal_address}

    async def worker() -> dict[str, Any]:
        fresh = await heartbeat.fresh_details(sessions, service="worker", stale_after_s=settings.worker_heartbeat_stale_s)
        return {"state": "up" if fresh else "down", "instances": len(fresh), "agent_pool": agent_pool(fresh)}

    names = ("database", "temporal", "worker")
    results = await asyncio.gather(*(_check(p) for p in (database, temporal_server, worker)))
    components = dict(zip(names, results, strict=True))
    healthy = all(c["state"] == "up" for c in components.values())
    body = {"status": "ok" if healthy else "unavailable", "components": components}
    return JSONResponse(body, status_code=200 if healthy else 503)


@router.get("/dev/outbox", response_class=HTMLResponse)
async def outbox(settings: SettingsDep, session: SessionDep, to: str | None = None) -> HTMLResponse:
    """The local mailer's outbox, readable in a browser: only on a local platform (every adapter
    local); with SMTP, mail goes to real inboxes."""
    if not settings.local_mode or settings.mailer != MailerAdapter.LOCAL:
        raise HTTPException(status_code=404)
    query = select(OutboxEmail).order_by(OutboxEmail.id.desc()).limit(OUTBOX_SHOWN)  # type: ignore[union-attr]
    if to:
        query = query.where(OutboxEmail.to_address == to.strip().lower())
    mails = (await session.execute(query)).scalars().all()
    rows = "".join(
        f"<article><h3>{escape(m.subject)}</h3><p><b>To</b> {escape(m.to_address)} · {m.created_at:%Y-%m-%d %H:%M:%S} UTC"
        f"</p><pre>{escape(m.body)}</pre></article>" for m in mails) or "<p>No mail yet.</p>"
    return HTMLResponse(f"<!doctype html><meta charset=utf-8><title>DeepClaw outbox</title>"
                        f"<style>body{{font-family:sans-serif;max-width:48rem;margin:2rem auto}}article{{border-bottom:1px solid #ddd}}"
                        f"</style><h1>Outbox (local mailer)</h1>{rows}")
