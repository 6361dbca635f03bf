"""The message taker: what a caller who is not the user reaches (`/message/<token>/v1/chat/completions`).

Deterministic, no model, nothing of the user's: the caller's words are texted to the user from
their own number, and the call ends. Messages per user are limited (the same limiter as the
agent's own texts), so a stranger cannot flood the user through their number.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response

from core.limits import Limit, UserLimiter
from core.models import PhoneNumber, User
from core.ports import Telephony
from core.streams import LiveStreams
from core.think import read_think_request, whole_answer
from core.tokens import Keyring, TokenKind

log = logging.getLogger(__name__)

MODEL = "deepclaw-messages"
MAX_MESSAGE = 600
ASK_AGAIN = "Sorry, I didn't catch that. What's your message?"
TAKEN = "Thanks, I've passed that on. Goodbye."
FULL = "Sorry, I can't take any more messages right now. Please try again later. Goodbye."
FAILED = "Sorry, I couldn't pass that on just now. Please try again later. Goodbye."


def greeting(agent_name: str) -> str:
    return f"Hi, you've reached {agent_name}, a personal assistant. I can take a message: what would you like to say?"


class MessageTaker:
    def __init__(self, *, keyring: Keyring, live: LiveStreams, telephony: Telephony, limiter: UserLimiter) -> None:
        self.keyring = keyring
        self.live = live
        self.telephony = telephony
        self.limiter = limiter

    async def __call__(self, request: Request) -> Response:
        think = await read_think_request(request, self.keyring, TokenKind.MESSAGE, request.path_params["token"],
                                         self.live)
        if isinstance(think, Response):
            return think
        if think.after_function:
            return whole_answer("", model=MODEL, streaming=think.streaming)
        text, end = await self._take(uuid.UUID(str(think.claims["user"])), str(think.claims.get("caller", "")),
                                     think.said.strip())
        return whole_answer(text, model=MODEL, streaming=think.streaming, end_call=end)

    async def _take(self, user_id: uuid.UUID, caller: str, said: str) -> tuple[str, bool]:
        """What to answer, and whether the call ends."""
        if not said:
            return ASK_AGAIN, False
        async with self.live.sessions() as session:
            row: Any = (await session.execute(
                select(User.phone_e164, PhoneNumber.e164).join(PhoneNumber, PhoneNumber.user_id == User.id)
                .where(User.id == user_id, PhoneNumber.state == "assigned"))).one_or_none()
        if row is None:
            return FAILED, True
        if await self.limiter.acquire(Limit.MESSAGE, user_id):
            return FULL, True
        try:
            await self.telephony.send_sms(to=row[0], from_=row[1], body=f"Message from {caller or 'a caller'}: {said[:MAX_MESSAGE]}")
        except Exception as error:  # the caller hears an apology, never silence
            log.warning("could not text a message to user %s: %s", user_id, error)
            return FAILED, True
        log.info("took a message for user %s", user_id)
        return TAKEN, True
