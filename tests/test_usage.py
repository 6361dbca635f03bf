"""Usage as carriers bill it (text segments in GSM-7 or UCS-2, call seconds per started second), and
a month's statement under a price plan."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal

import pytest

from core.billing import PricePlan, month_bounds, statement
from core.models import UsageRecord
from core.usage import UsageKind, sms_segments, started_seconds


@pytest.mark.parametrize(("body", "segments"), [
    ("", 1), ("hi", 1), ("a" * 160, 1), ("a" * 161, 2), ("a" * 306, 2), ("a" * 307, 3),
    ("€" * 80, 1), ("€" * 81, 2),  # the extension table counts two septets each
    ("café ok", 1), ("naïve", 1),  # é is GSM-7; ï is not (UCS-2), still one segment
    ("ï" * 70, 1), ("ï" * 71, 2), ("ï" * 134, 2), ("ï" * 135, 3),
    ("🙂" * 35, 1), ("🙂" * 36, 2),  # a surrogate pair is two UCS-2 units
])
def test_sms_segments_follow_the_carriers_rules(body: str, segments: int) -> None:
    assert sms_segments(body) == segments


def test_calls_are_billed_per_started_second() -> None:
    assert [started_seconds(s) for s in (0.0, 0.2, 1.0, 1.0004, 61.5)] == [0, 1, 1, 1, 62]


def _record(kind: UsageKind, quantity: float) -> UsageRecord:
    return UsageRecord(user_id=uuid.uuid4(), kind=kind.value, quantity=quantity)


def test_a_statement_uses_each_allowance_in_order_then_prices_the_rest_to_the_cent() -> None:
    plan = PricePlan(name="Test", currency="USD", monthly_fee_cents=500,
                     included={"calls": 600, "texts": 10, "awake": 3600, "model": 10_000},
                     prices_cents={"call_minute": Decimal("4"), "text_segment": Decimal("1.5"), "awake_hour": Decimal("1"),
                                   "model_thousand_tokens": Decimal("0.2")})
    records = [_record(UsageKind.CALL_SECONDS_IN, 400), _record(UsageKind.CALL_SECONDS_IN, 100),
               _record(UsageKind.CALL_SECONDS_OUT, 131),  # 631 s: 600 included, 31 s billed
               _record(UsageKind.SMS_SEGMENTS_IN, 7), _record(UsageKind.SMS_SEGMENTS_OUT, 6),  # 3 segments billed
               _record(UsageKind.AWAKE_SECONDS, 5400),  # half an hour billed
               _record(UsageKind.MODEL_TOKENS_IN, 9_000), _record(UsageKind.MODEL_TOKENS_OUT, 6_000)]  # 5,000 billed
    lines = {line.kind: line for line in statement(plan, records, date(2026, 12, 1)).lines}
    assert (lines[UsageKind.CALL_SECONDS_IN].included, lines[UsageKind.CALL_SECONDS_IN].billable) == (500, 0)
    assert (lines[UsageKind.CALL_SECONDS_OUT].included, lines[UsageKind.CALL_SECONDS_OUT].billable) == (100, 31)
    # Whole cents, half up: 31 s at 4 cents a minute is 2.07; 3 segments at 1.5 is 4.5; half an hour 0.5.
    assert lines[UsageKind.CALL_SECONDS_OUT].amount_cents == 2
    assert lines[UsageKind.SMS_SEGMENTS_OUT].amount_cents == 5
    assert lines[UsageKind.AWAKE_SECONDS].amount_cents == 1
    assert (lines[UsageKind.MODEL_TOKENS_OUT].included, lines[UsageKind.MODEL_TOKENS_OUT].billable) == (1_000, 5_000)
    assert lines[UsageKind.MODEL_TOKENS_OUT].amount_cents == 1  # 5 thousand at 0.2 cents
    assert statement(plan, records, date(2026, 12, 1)).total_cents == 500 + 2 + 5 + 1 + 1


def test_a_price_plan_without_a_price_for_some_usage_is_refused() -> None:
    with pytest.raises(ValueError, match="no price for model_thousand_tokens"):
        PricePlan(name="Old", currency="USD", monthly_fee_cents=0, included={},
                  prices_cents={"call_minute": 4, "text_segment": 1, "awake_hour": 1})


def test_a_month_is_the_users_own() -> None:
    start, end = month_bounds(date(2026, 12, 1), "America/Los_Angeles")
    assert start.isoformat() == "2026-12-01T00:00:00-08:00" and end.isoformat() == "2027-01-01T00:00:00-08:00"
