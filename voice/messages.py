"""The message taker: what a caller who is not the user reaches (`/message/<token>/v1/chat/completions`).

Deterministic, no model, nothing of the user's: the caller's words are texted to the user from
their own number, and the call ends. Messages per user are limited (the same limiter as the
agent's own texts), so a stranger cannot flood the user through their number.
"""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import Response

from core.limits import UserLimiter
from core.message_taking import Taken, pass_message_on
from core.ports import Telephony
from core.streams import LiveStreams
from core.think import read_think_request, whole_answer
from core.tokens import Keyring, TokenKind

MODEL = "deepclaw-messages"
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
        taken = await pass_message_on(self.live.sessions, self.telephony, self.limiter, user_id=user_id, sender=caller,
                                      words=said)
        return {Taken.PASSED_ON: TAKEN, Taken.FULL: FULL, Taken.FAILED: FAILED}[taken], True
