"""What a call leaves behind: the conversation, its transcript turns, latency figures and usage."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db import DATABASE_DOWN, transaction
from core.models import Conversation, Message, utcnow
from core.usage import UsageKind, record_usage, started_seconds


MAX_HISTORY_TURNS = 40
FINISH_WAIT_S = 60.0  # after the call, how long its record waits for a database that is down


log = logging.getLogger(__name__)


class CallAlreadyConnected(Exception):
    """The CallSid has a conversation already: a replayed stream token."""


class CallRecorder:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, call_sid: str, user_id: uuid.UUID | None,
                 from_number: str, to_number: str, direction: str, attestation: str | None = None) -> None:
        self.sessions = sessions
        self.attestation = attestation or None
        self.call_sid = call_sid
        self.user_id = user_id
        self.from_number, self.to_number, self.direction = from_number, to_number, direction
        self.conversation_id: uuid.UUID | None = None
        self.latencies: list[dict[str, Any]] = []
        self.turns = 0
        # The conversation so far, as the voice agent spoke and heard it: a new voice-agent socket
        # is opened with it if the first one drops (voice.bridge). The newest turns, bounded.
        self.history: deque[tuple[str, str]] = deque(maxlen=MAX_HISTORY_TURNS)
        self.unsaved: list[Message] = []  # turns the database has not taken yet (it was down)

    async def start(self) -> None:
        conversation = Conversation(user_id=self.user_id, kind="call", direction=self.direction,
                                    provider_sid=self.call_sid, from_number=self.from_number, to_number=self.to_number,
                                    caller_attestation=self.attestation)
        try:
            async with transaction(self.sessions) as session:
                session.add(conversation)
        except IntegrityError:
            self.conversation_id = await self._adopt_hotline_call()
            return
        self.conversation_id = conversation.id

    async def _adopt_hotline_call(self) -> uuid.UUID:
        """A hotline call handed to the caller's new agent keeps its CallSid: the new user takes over
        its conversation, once. Any other second stream for a call is a replayed token."""
        if self.user_id is None:
            raise CallAlreadyConnected(self.call_sid)
        async with transaction(self.sessions) as session:
            adopted = (await session.execute(
                update(Conversation).where(Conversation.provider_sid == self.call_sid, Conversation.user_id.is_(None))
                .values(user_id=self.user_id, ended_at=None).returning(Conversation.id))).scalar_one_or_none()
        if adopted is None:
            raise CallAlreadyConnected(self.call_sid)
        return adopted

    async def turn(self, role: str, content: str) -> None:
        if not content.strip():
            return
        self.history.append((role, content))
        if self.conversation_id is None:
            return
        self.turns += 1
        self.unsaved.append(Message(conversation_id=self.conversation_id, role="agent" if role == "assistant" else "user",
                                    content=content, created_at=utcnow()))
        try:
            await self._save_turns()
        except DATABASE_DOWN as error:  # the call goes on; the turns are saved with the next, or at the end
            log.warning("call %s: %d transcript turn(s) not saved yet: %s", self.call_sid, len(self.unsaved), error)

    async def _save_turns(self) -> None:
        if self.unsaved:
            async with transaction(self.sessions) as session:
                session.add_all(self.unsaved)
            self.unsaved = []

    def latency(self, figures: dict[str, Any]) -> None:
        self.latencies.append({k: figures[k] for k in ("total_latency", "tts_latency", "ttt_latency") if k in figures})

    async def finish(self, duration_s: float) -> None:
        """What the call leaves, saved; a database that is down is waited for (FINISH_WAIT_S at most)."""
        if self.conversation_id is None:
            return
        waited = 0.0
        while True:
            try:
                await self._save_turns()
                await self._finish(duration_s)
                return
            except DATABASE_DOWN as error:
                if waited >= FINISH_WAIT_S:
                    log.error("call %s: its record could not be saved: %s", self.call_sid, error)
                    return
                await asyncio.sleep(2.0)
                waited += 2.0

    async def _finish(self, duration_s: float) -> None:
        assert self.conversation_id is not None
        async with transaction(self.sessions) as session:
            await session.execute(update(Conversation).where(Conversation.id == self.conversation_id).values(
                ended_at=utcnow(), duration_s=func.coalesce(Conversation.duration_s, 0) + round(duration_s, 2),
                latency={"turns": self.latencies}))
            if self.user_id is not None:  # hotline calls belong to no user yet
                kind = UsageKind.CALL_SECONDS_OUT if self.direction == "outbound" else UsageKind.CALL_SECONDS_IN
                await record_usage(session, user_id=self.user_id, kind=kind, quantity=started_seconds(duration_s),
                                   source=f"call:{self.call_sid}", conversation_id=self.conversation_id)
