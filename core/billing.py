"""What a user pays for a month under a price plan (a data file): a monthly fee, an included
allowance per group (calls, texts, awake time) and a price per unit beyond it. Computed from the
usage records alone, in exact decimals, so a statement and its CSV add up to the records."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import BaseModel, model_validator
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.models import UsageRecord, User
from core.usage import UsageKind

DEFAULT_PLAN = Path(__file__).with_name("price_plans") / "standard.json"


class PricePlan(BaseModel):
    name: str
    currency: str
    monthly_fee_cents: int
    included: dict[str, int]  # per group, in its kinds' units (seconds, segments)
    prices_cents: dict[str, Decimal]  # call_minute, text_segment, awake_hour, model_thousand_tokens

    @model_validator(mode="after")
    def _prices_every_group(self) -> PricePlan:
        missing = sorted({group.price for group in GROUPS} - set(self.prices_cents))
        if missing:
            raise ValueError(f"the price plan {self.name!r} has no price for {', '.join(missing)}")
        return self


@cache
def load_plan(path: Path | None = None) -> PricePlan:
    return PricePlan.model_validate_json((path or DEFAULT_PLAN).read_text())


@dataclass(frozen=True)
class Group:
    name: str
    kinds: tuple[UsageKind, ...]
    price: str  # key in prices_cents
    unit_size: int  # usage units per priced unit (60 seconds a minute, 3,600 an hour)
    unit: str


GROUPS = (
    Group("calls", (UsageKind.CALL_SECONDS_IN, UsageKind.CALL_SECONDS_OUT), "call_minute", 60, "seconds"),
    Group("texts", (UsageKind.SMS_SEGMENTS_IN, UsageKind.SMS_SEGMENTS_OUT), "text_segment", 1, "segments"),
    Group("awake", (UsageKind.AWAKE_SECONDS,), "awake_hour", 3600, "seconds"),
    Group("model", (UsageKind.MODEL_TOKENS_IN, UsageKind.MODEL_TOKENS_OUT), "model_thousand_tokens", 1000, "tokens"),
)
LABELS = {UsageKind.CALL_SECONDS_IN: "Calls in", UsageKind.CALL_SECONDS_OUT: "Calls out",
          UsageKind.SMS_SEGMENTS_IN: "Texts in", UsageKind.SMS_SEGMENTS_OUT: "Texts out",
          UsageKind.AWAKE_SECONDS: "Agent awake", UsageKind.MODEL_TOKENS_IN: "Model tokens in",
          UsageKind.MODEL_TOKENS_OUT: "Model tokens out"}
CENT = Decimal("0.01")  # of the currency
WHOLE = Decimal(1)


@dataclass(frozen=True)
class Line:
    kind: UsageKind
    label: str
    quantity: Decimal
    unit: str
    included: Decimal  # of the group's allowance, what this line used
    billable: Decimal
    amount_cents: Decimal  # whole cents (half up), so lines add up to the total exactly


@dataclass(frozen=True)
class Statement:
    month: date  # its first day
    plan: PricePlan
    lines: tuple[Line, ...]
    records: tuple[UsageRecord, ...]

    @property
    def fee_cents(self) -> Decimal:
        return Decimal(self.plan.monthly_fee_cents)

    @property
    def total_cents(self) -> Decimal:
        return self.fee_cents + sum((line.amount_cents for line in self.lines), Decimal(0))


def month_bounds(month: date, zone: str) -> tuple[datetime, datetime]:
    """The month's first instant and the next month's, in the user's zone."""
    following = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    tz = ZoneInfo(zone)
    return datetime.combine(month, time(), tz), datetime.combine(following, time(), tz)


def statement(plan: PricePlan, records: Sequence[UsageRecord], month: date) -> Statement:
    totals = {kind: Decimal(0) for kind in UsageKind}
    for record in records:
        totals[UsageKind(record.kind)] += Decimal(str(record.quantity))
    lines = []
    for group in GROUPS:
        allowance = Decimal(plan.included.get(group.name, 0))
        price = plan.prices_cents[group.price] / group.unit_size  # cents per usage unit
        for kind in group.kinds:  # the allowance is used up in the group's order
            included = min(totals[kind], allowance)
            allowance -= included
            billable = totals[kind] - included
            lines.append(Line(kind, LABELS[kind], totals[kind], group.unit, included, billable,
                              (billable * price).quantize(WHOLE, ROUND_HALF_UP)))
    return Statement(month, plan, tuple(lines), tuple(records))


async def month_statement(session: AsyncSession, plan: PricePlan, user_id: uuid.UUID, month: date,
                          zone: str) -> Statement:
    start, end = month_bounds(month, zone)
    records = (await session.execute(
        select(UsageRecord).where(UsageRecord.user_id == user_id, UsageRecord.occurred_at >= start,
                                  UsageRecord.occurred_at < end)
        .order_by(UsageRecord.occurred_at))).scalars().all()  # type: ignore[arg-type]
    return statement(plan, records, month)


def statement_csv(statement: Statement, zone: str) -> str:
    """Every usage record of the month, then each line's total and amount, then the total."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["occurred_at", "kind", "quantity", "source", "conversation_id"])
    for record in statement.records:
        writer.writerow([record.occurred_at.astimezone(ZoneInfo(zone)).isoformat(), record.kind,
                         plain_number(Decimal(str(record.quantity))), record.source or "", record.conversation_id or ""])
    writer.writerow([])
    writer.writerow(["line", "kind", "quantity", "included", "billable", f"amount ({statement.plan.currency})"])
    for line in statement.lines:
        writer.writerow([line.label, line.kind.value, plain_number(line.quantity), plain_number(line.included),
                         plain_number(line.billable), _money(line.amount_cents)])
    writer.writerow(["Monthly fee", "", "", "", "", _money(statement.fee_cents)])
    writer.writerow(["Total", "", "", "", "", _money(statement.total_cents)])
    return out.getvalue()


def plain_number(value: Decimal) -> str:
    return format(value.normalize(), "f") if value else "0"


def _money(cents: Decimal) -> str:
    return format((cents / 100).quantize(CENT), "f")


async def over_cap(session: AsyncSession, plan: PricePlan, user: User, zone: str, now: datetime) -> bool:
    """Whether the user's month so far costs as much as the cap they set (no cap: never)."""
    if user.monthly_cap_cents is None:
        return False
    local = now.astimezone(ZoneInfo(zone))
    spent = await month_statement(session, plan, user.id, date(local.year, local.month, 1), zone)
    return spent.total_cents >= user.monthly_cap_cents
