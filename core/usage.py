"""Usage, recorded by the paths that cause it (never reconstructed later): call seconds in and out
(per started second), text segments in and out, agent awake seconds, and model tokens in and out
where the agent's answer says how many it used. Each record has a source key
(the CallSid, MessageSid, awake period), so a retried activity never counts anything twice."""

from __future__ import annotations

import math
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.models import UsageRecord, utcnow


class UsageKind(StrEnum):
    CALL_SECONDS_IN = "call_seconds_in"
    CALL_SECONDS_OUT = "call_seconds_out"
    SMS_SEGMENTS_IN = "sms_segments_in"
    SMS_SEGMENTS_OUT = "sms_segments_out"
    AWAKE_SECONDS = "awake_seconds"
    MODEL_TOKENS_IN = "model_tokens_in"  # the prompt, as the model provider counts it
    MODEL_TOKENS_OUT = "model_tokens_out"


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


async def record_model_tokens(session: AsyncSession, *, user_id: uuid.UUID, usage: dict[str, Any] | None, run: str,
                              conversation_id: uuid.UUID | None = None) -> None:
    """The tokens one answer of the agent used, from its OpenAI-style `usage` (OpenClaw's chat
    completions report it; with streaming, when asked by stream_options.include_usage). `run` names
    the answer (its completion id), so an answer is counted once; none reported, nothing counted."""
    if not usage:
        return
    for kind, field in ((UsageKind.MODEL_TOKENS_IN, "prompt_tokens"), (UsageKind.MODEL_TOKENS_OUT, "completion_tokens")):
        tokens = usage.get(field)
        if isinstance(tokens, int) and tokens > 0:
            await record_usage(session, user_id=user_id, kind=kind, quantity=tokens, source=f"{kind.value}:{run}"[:128],
                               conversation_id=conversation_id)
