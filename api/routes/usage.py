"""The dashboard's Usage page: a month's usage and what it costs under the price plan, its CSV
(every record, then the lines and the total, adding up exactly), and the user's monthly cap."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from api.deps import CsrfDep, SessionDep, SettingsDep, SignedInDep, UserIdDep
from api.pages import audit, own_user, render
from core.billing import load_plan, month_statement, statement_csv
from core.models import BillingStatement, User, utcnow
from core.settings import Settings
from core.timezones import zone_of_user

router = APIRouter()

MONTHS_SHOWN = 12
MAX_CAP_CENTS = 100_000_00


def _month(text: str | None, zone: str) -> date:
    """'2026-12' -> its first day; none: this month in the user's zone; 404 for anything else."""
    if not text:
        now = utcnow().astimezone(ZoneInfo(zone))
        return date(now.year, now.month, 1)
    if not (match := re.fullmatch(r"(\d{4})-(\d{2})", text)) or not 1 <= int(match[2]) <= 12:
        raise HTTPException(status_code=404, detail="No such month.")
    return date(int(match[1]), int(match[2]), 1)


def _recent_months(current: date) -> list[date]:
    months, year, month = [], current.year, current.month
    for _ in range(MONTHS_SHOWN):
        months.append(date(year, month, 1))
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return months


async def _usage_page(request: Request, settings: Settings, session: SessionDep, viewer: SignedInDep, user: User,
                      month: date, *, status: int = 200, error: str | None = None, notice: str | None = None
                      ) -> HTMLResponse:
    zone = zone_of_user(user, settings.default_time_zone)
    plan = load_plan(settings.price_plan)
    shown = await month_statement(session, plan, user.id, month, zone)
    this_month = _month(None, zone)
    closed = (await session.execute(select(BillingStatement).where(
        BillingStatement.user_id == user.id, BillingStatement.month == month))).scalar_one_or_none()
    return render(request, settings, "usage.html", status, viewer=viewer, csrf=viewer.csrf, active="usage", user=user,
                  statement=shown, months=_recent_months(this_month), this_month=this_month, zone=zone, plan=plan,
                  closed=closed,
                  error=error, notice=notice, money=lambda cents: f"{Decimal(cents) / 100:,.2f}")


@router.get("/usage", response_class=HTMLResponse)
async def usage(request: Request, settings: SettingsDep, session: SessionDep, viewer: SignedInDep, user_id: UserIdDep,
                month: Annotated[str | None, Query(max_length=7)] = None, notice: str | None = None) -> Response:
    user = await own_user(session, user_id)
    zone = zone_of_user(user, settings.default_time_zone)
    return await _usage_page(request, settings, session, viewer, user, _month(month, zone),
                             notice={"cap": "Your monthly cap is saved."}.get(notice or ""))


@router.get("/usage/{month}.csv")
async def usage_csv(month: str, settings: SettingsDep, session: SessionDep, user_id: UserIdDep) -> Response:
    user = await own_user(session, user_id)
    zone = zone_of_user(user, settings.default_time_zone)
    shown = await month_statement(session, load_plan(settings.price_plan), user.id, _month(month, zone), zone)
    return Response(statement_csv(shown, zone), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="deepclaw-usage-{month}.csv"',
                             "Cache-Control": "no-store"})


@router.post("/usage/cap", response_class=HTMLResponse, dependencies=[CsrfDep])
async def set_cap(request: Request, settings: SettingsDep, session: SessionDep, viewer: SignedInDep,
                  user_id: UserIdDep, cap: Annotated[str, Form(max_length=20)] = "") -> Response:
    """The cap in the plan's currency ('25', '25.50'); empty: none."""
    user = await own_user(session, user_id)
    text = cap.strip().lstrip("$").replace(",", "")
    try:
        cents = None if not text else int((Decimal(text) * 100).to_integral_exact())
        if cents is not None and not 0 <= cents <= MAX_CAP_CENTS:
            raise InvalidOperation
    except (InvalidOperation, ValueError):
        zone = zone_of_user(user, settings.default_time_zone)
        return await _usage_page(request, settings, session, viewer, user, _month(None, zone), status=400,
                                 error="A cap is an amount like 25 or 25.50 (at most 100,000), or empty for none.")
    user.monthly_cap_cents = cents
    await session.commit()
    await audit(session, user_id=user_id, action="dashboard.set_monthly_cap", cents=cents)
    return RedirectResponse("/usage?notice=cap", status_code=303)
