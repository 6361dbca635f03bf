"""One memory across calls and texts: each call and each day of texts is a session of its own in the
user's OpenClaw, so every turn the platform sends carries, as a system message (OpenClaw adds it to
that run's system prompt), what was said lately in the user's other conversations. What was said on
a call can be asked about by text, and the other way round."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.models import Conversation, Message, User, utcnow

HEADING = "What you and your user said lately in your other conversations (calls and texts), oldest first:"
RECALLED_TURNS = 16
RECALL_WITHIN = timedelta(days=7)
MAX_TURN_CHARS = 300


def _line(kind: str, at: datetime, role: str, content: str) -> str:
    text = " ".join(content.split())
    text = text if len(text) <= MAX_TURN_CHARS else text[: MAX_TURN_CHARS - 1] + "…"
    return f"- {'by text' if kind == 'sms' else 'on a call'}, {at:%a %d %b %H:%M} UTC, {'User' if role == 'user' else 'You'}: {text}"


async def recall_note(sessions: async_sessionmaker[AsyncSession], user_id: uuid.UUID, *,
                      conversation_id: uuid.UUID | None = None, call_sid: str | None = None) -> dict[str, Any] | None:
    """The system message for a turn in one conversation (by id, or a call's by its CallSid), or None
    when the user said nothing elsewhere lately."""
    query = (select(Conversation.kind, Message.created_at, Message.role, Message.content)
             .join(Conversation, Message.conversation_id == Conversation.id)
             .join(User, Conversation.user_id == User.id)
             # Only the user's own conversations: never what a stranger said when a message was taken.
             .where((Conversation.direction == "outbound") | (Conversation.from_number == User.phone_e164))
             .where(Conversation.user_id == user_id, Message.role.in_(("user", "agent")),
                    Message.created_at > utcnow() - RECALL_WITHIN)
             .order_by(Message.created_at.desc()).limit(RECALLED_TURNS))  # type: ignore[attr-defined]
    if conversation_id is not None:
        query = query.where(Conversation.id != conversation_id)
    if call_sid is not None:
        query = query.where((Conversation.provider_sid != call_sid) | Conversation.provider_sid.is_(None))  # type: ignore[union-attr]
    async with sessions() as session:
        rows = (await session.execute(query)).all()
    if not rows:
        return None
    lines = [_line(kind, at, role, content) for kind, at, role, content in reversed(rows)]
    return {"role": "system", "content": "\n".join([HEADING, *lines])}


def recalled_user_turns(system_text: str) -> list[str]:
    """The user's own words in a recall note (what the local demo model can look things up in)."""
    if HEADING not in system_text:
        return []
    block = system_text[system_text.index(HEADING) + len(HEADING):]
    return [line.split(" UTC, User: ", 1)[1] for line in block.splitlines() if " UTC, User: " in line]
