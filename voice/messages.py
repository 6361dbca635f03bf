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
from starlette.responses import JSONResponse, Response, StreamingResponse

from core import chat_format
from core.limits import Limit, UserLimiter
from core.models import PhoneNumber, User
from core.ports import Telephony
from core.streams import LiveStreams, open_think_token
from core.tokens import InvalidToken, Keyring, TokenKind

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
        try:
            claims = await open_think_token(self.keyring, TokenKind.MESSAGE, request.path_params["token"], self.live)
            user_id = uuid.UUID(str(claims["user"]))
        except (InvalidToken, KeyError, ValueError) as error:
            return JSONResponse({"error": {"message": f"unauthorised: {error}", "type": "invalid_token"}}, status_code=401)
        try:
            body = await request.json()
            messages = body["messages"]
            if not isinstance(messages, list):
                raise TypeError("messages must be a list")
        except Exception:
            return JSONResponse({"error": {"message": "body must be JSON with a 'messages' list"}}, status_code=400)
        if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "tool":
            text, end = "", False  # our end_call was carried out
        else:
            text, end = await self._take(user_id, str(claims.get("caller", "")),
                                         chat_format.latest_user_text(messages).strip())
        if body.get("stream"):
            return StreamingResponse(iter(chat_format.spoken_chunks(text, model=MODEL, end_call=end)),
                                     media_type="text/event-stream")
        return JSONResponse(chat_format.text_completion(text, model=MODEL, end_call=end))

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
