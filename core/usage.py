"""Usage, recorded by the paths that cause it (never reconstructed later): call seconds in and out
(per started second), text segments in and out, agent awake seconds. Each record has a source key
(the CallSid, MessageSid, awake period), so a retried activity never counts anything twice."""

from __future__ import annotations

import math
import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.models import UsageRecord, utcnow


class UsageKind(StrEnum):
    CALL_SECONDS_IN = "call_seconds_in"
    CALL_SECONDS_OUT = "call_seconds_out"
    SMS_SEGMENTS_IN = "sms_segments_in"
    SMS_SEGMENTS_OUT = "sms_segments_out"
    AWAKE_SECONDS = "awake_seconds"


# GSM 03.38: the basic set (one septet each) and the extension table (two each, an escape first).
_GSM_BASIC = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                 "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
_GSM_EXTENDED = set("^{}\\[~]|€\f")


def sms_segments(body: str) -> int:
    """How many segments a carrier bills for `body`: 160 GSM-7 septets in one, 153 per part when
    split; with any other character UCS-2, 70 in one, 67 per part (a surrogate pair counts two)."""
    if not body:
        return 1
    if all(c in _GSM_BASIC or c in _GSM_EXTENDED for c in body):
        units, single, part = sum(2 if c in _GSM_EXTENDED else 1 for c in body), 160, 153
    else:
        units, single, part = len(body.encode("utf-16-le")) // 2, 70, 67
    return 1 if units <= single else math.ceil(units / part)


def started_seconds(duration_s: float) -> int:
    """Billed per started second."""
    return max(0, math.ceil(round(duration_s, 3)))


async def record_usage(session: AsyncSession, *, user_id: uuid.UUID, kind: UsageKind, quantity: float, source: str,
                       conversation_id: uuid.UUID | None = None, occurred_at: datetime | None = None) -> None:
    """Adds one record in `session`'s transaction; a source seen before adds nothing."""
    await session.execute(insert(UsageRecord).values(
        id=uuid.uuid4(), user_id=user_id, kind=kind.value, quantity=quantity, source=source,
        conversation_id=conversation_id, occurred_at=occurred_at or utcnow()).on_conflict_do_nothing(
        index_elements=["source"]))
