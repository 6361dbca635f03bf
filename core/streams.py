"""Media Stream tickets, and the think tokens bound to a stream.

The API answers a call with TwiML that opens a Media Stream carrying one random ticket (a
<Parameter>): Twilio sees nothing else. The ticket's digest and what the call is live in
`media_streams`; the bridge redeems the ticket once, for that CallSid, before it expires. The
think tokens the bridge then gives Deepgram name the stream, and are refused once it has ended
(plus STREAM_GRACE_S, for the answer to a last word).
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db import transaction
from core.models import MediaStream, utcnow
from core.tokens import InvalidToken, Keyring, TokenKind

TICKET_TTL_S = 60.0  # Twilio opens the stream within seconds of our answer
STREAM_GRACE_S = 10.0  # a think request this long after the stream stopped is still answered


# Who accepts each kind of think token: the bridge's LLM proxy, or the API's hotline conductor.
THINK_AUDIENCES = {TokenKind.THINK: "voice:/llm", TokenKind.HOTLINE: "api:/hotline",
                   TokenKind.MESSAGE: "voice:/message"}


class StreamRefused(Exception):
    """The ticket is unknown, for another call, used already or expired."""


def _digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


async def issue_ticket(sessions: async_sessionmaker[AsyncSession], *, call_sid: str, user_id: uuid.UUID | None,
                       params: dict[str, Any], ttl_s: float = TICKET_TTL_S) -> str:
    """A one-time ticket for the stream of `call_sid` (a user's call, or the hotline's when no user)."""
    ticket = secrets.token_urlsafe(32)
    async with transaction(sessions) as session:
        session.add(MediaStream(ticket_digest=_digest(ticket), call_sid=call_sid, user_id=user_id,
                                kind="user" if user_id else "hotline", params=params,
                                expires_at=utcnow() + timedelta(seconds=ttl_s)))
    return ticket


async def redeem_ticket(sessions: async_sessionmaker[AsyncSession], ticket: str, *, call_sid: str,
                        stream_sid: str) -> MediaStream:
    """The stream the ticket opens, marked connected: a ticket works once, for its call, in time."""
    async with transaction(sessions) as session:
        stream = (await session.execute(
            update(MediaStream)
            .where(MediaStream.ticket_digest == _digest(ticket), MediaStream.call_sid == call_sid,
                   MediaStream.connected_at.is_(None), MediaStream.expires_at > func.now())
            .values(connected_at=func.now(), stream_sid=stream_sid)
            .returning(MediaStream))).scalar_one_or_none()
    if stream is None:
        raise StreamRefused("unknown, used or expired stream ticket (or one for another call)")
    return stream


async def end_stream(sessions: async_sessionmaker[AsyncSession], stream_id: uuid.UUID) -> None:
    async with transaction(sessions) as session:
        await session.execute(update(MediaStream).where(MediaStream.id == stream_id, MediaStream.ended_at.is_(None))
                              .values(ended_at=func.now()))


async def mark_verified(sessions: async_sessionmaker[AsyncSession], stream_id: uuid.UUID) -> None:
    """The caller said the user's PIN on this stream."""
    async with transaction(sessions) as session:
        await session.execute(update(MediaStream).where(MediaStream.id == stream_id).values(verified_at=func.now()))


async def stream_verified(sessions: async_sessionmaker[AsyncSession], stream_id: uuid.UUID) -> bool:
    async with sessions() as session:
        return (await session.execute(select(MediaStream.verified_at).where(MediaStream.id == stream_id))
                ).scalar_one_or_none() is not None


async def stream_is_open(session: AsyncSession, stream_id: uuid.UUID) -> bool:
    """Connected, and not ended more than STREAM_GRACE_S ago."""
    ended_for = (await session.execute(
        select(func.extract("epoch", func.now() - MediaStream.ended_at), MediaStream.connected_at)
        .where(MediaStream.id == stream_id))).one_or_none()
    if ended_for is None or ended_for[1] is None:
        return False
    return ended_for[0] is None or float(ended_for[0]) <= STREAM_GRACE_S


MAX_REMEMBERED = 4096  # what a process keeps per stream (the agent's endpoint) is bounded


@dataclass
class LiveStreams:
    """The streams this bridge process carries: the think proxy's check without a database trip
    (a stream it does not know, another replica's, is looked up), and what the proxy remembers per
    stream for the rest of its call (its agent's endpoint), dropped when the stream ends."""

    sessions: async_sessionmaker[AsyncSession]
    ended: dict[uuid.UUID, float | None] = field(default_factory=dict)
    remembered: dict[uuid.UUID, Any] = field(default_factory=dict)
    verified: set[uuid.UUID] = field(default_factory=set)  # streams whose caller said the PIN
    pin_tries: dict[uuid.UUID, int] = field(default_factory=dict)
    recalls: dict[uuid.UUID, Any] = field(default_factory=dict)  # per call: core.recall's note, read once

    def started(self, stream_id: uuid.UUID) -> None:
        self.ended[stream_id] = None

    def stopped(self, stream_id: uuid.UUID) -> None:
        now = time.monotonic()
        for known, at in list(self.ended.items()):  # forget what is long over
            if at is not None and now - at > STREAM_GRACE_S:
                del self.ended[known]
        self.ended[stream_id] = now
        self.remembered.pop(stream_id, None)
        self.verified.discard(stream_id)
        self.pin_tries.pop(stream_id, None)
        self.recalls.pop(stream_id, None)

    def remember(self, stream_id: uuid.UUID, value: Any) -> None:
        if len(self.remembered) >= MAX_REMEMBERED:
            del self.remembered[next(iter(self.remembered))]  # the oldest
        self.remembered[stream_id] = value

    async def is_open(self, stream_id: uuid.UUID) -> bool:
        if stream_id in self.ended:
            at = self.ended[stream_id]
            return at is None or time.monotonic() - at <= STREAM_GRACE_S
        async with self.sessions() as session:
            return await stream_is_open(session, stream_id)


def seal_think_token(keyring: Keyring, kind: TokenKind, stream_id: uuid.UUID, *, call_sid: str, ttl_s: float,
                     **claims: str) -> str:
    """A think URL's token for one stream's voice agent (kind THINK for a user's call, HOTLINE for setup)."""
    return keyring.seal(kind, {"stream": str(stream_id), "call": call_sid, **claims},
                        audience=THINK_AUDIENCES[kind], ttl_s=ttl_s)


async def open_think_token(keyring: Keyring, kind: TokenKind, token: str, live: LiveStreams) -> dict[str, Any]:
    """The claims of a think token whose stream is still open; InvalidToken otherwise."""
    claims = keyring.open(kind, token, audience=THINK_AUDIENCES[kind])
    try:
        stream = uuid.UUID(str(claims["stream"]))
    except (KeyError, ValueError):
        raise InvalidToken("a think token names its stream") from None
    if not await live.is_open(stream):
        raise InvalidToken("the call has ended")
    return claims
