"""The local mailer's outbox, readable in a browser: where email codes arrive with no mail server.
Only with the local mailer; with SMTP mail goes to real inboxes and this page does not exist."""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from core.models import OutboxEmail
from core.settings import MailerAdapter, Settings

router = APIRouter()
SHOWN = 50


@router.get("/dev/outbox", response_class=HTMLResponse)
async def outbox(request: Request, to: str | None = None) -> HTMLResponse:
    settings: Settings = request.app.state.settings
    if settings.mailer != MailerAdapter.LOCAL:
        raise HTTPException(status_code=404)
    query = select(OutboxEmail).order_by(OutboxEmail.id.desc()).limit(SHOWN)  # type: ignore[union-attr]
    if to:
        query = query.where(OutboxEmail.to_address == to.strip().lower())
    async with request.app.state.sessions() as session:
        mails = (await session.execute(query)).scalars().all()
    rows = "".join(
        f"<article><h3>{escape(m.subject)}</h3><p><b>To</b> {escape(m.to_address)} · {m.created_at:%Y-%m-%d %H:%M:%S} UTC"
        f"</p><pre>{escape(m.body)}</pre></article>" for m in mails) or "<p>No mail yet.</p>"
    return HTMLResponse(f"<!doctype html><meta charset=utf-8><title>DeepClaw outbox</title>"
                        f"<style>body{{font-family:sans-serif;max-width:48rem;margin:2rem auto}}article{{border-bottom:1px solid #ddd}}"
                        f"</style><h1>Outbox (local mailer)</h1>{rows}")
