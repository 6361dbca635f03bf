"""What every think endpoint the voice agent calls shares (the user's LLM proxy, the hotline
conductor, the message taker): the token of its kind opened against its stream (401 otherwise),
an OpenAI-shaped body (400 otherwise), and the platform's own whole answers, streamed or not."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from core import chat_format
from core.db import DATABASE_DOWN
from core.streams import LiveStreams, open_think_token
from core.tokens import InvalidToken, Keyring, TokenKind


log = logging.getLogger(__name__)


class ChatBody(BaseModel):
    """The part of an OpenAI chat-completions body the platform reads."""

    messages: list[dict[str, Any]]  # anything else is a 400, never a handler tripping over it
    stream: bool | None = False


@dataclass
class ThinkRequest:
    claims: dict[str, Any]
    messages: list[dict[str, Any]]
    streaming: bool

    @property
    def after_function(self) -> bool:
        """The function we asked for (end_call, hand_off) was carried out: nothing more to say."""
        return bool(self.messages) and isinstance(self.messages[-1], dict) and self.messages[-1].get("role") == "tool"

    @property
    def said(self) -> str:
        return chat_format.latest_user_text(self.messages)


SAY_AGAIN = "Sorry, I missed that. Could you say it again?"
PLATFORM_MODEL = "deepclaw"  # the model name the platform's own answers give

# A think body is the whole conversation so far: a long call's is tens of kilobytes.
MAX_THINK_BODY_BYTES = 1024 * 1024


async def read_think_request(request: Request, keyring: Keyring, kind: TokenKind, token: str,
                             live: LiveStreams) -> ThinkRequest | Response:
    """The request, or the error response to give instead."""
    try:
        claims = await open_think_token(keyring, kind, token, live)
    except InvalidToken as error:
        return JSONResponse({"error": {"message": f"unauthorised: {error}", "type": "invalid_token"}}, status_code=401)
    except DATABASE_DOWN as error:
        log.error("a think request could not be checked, the database is unreachable: %s", error)
        return await say_again(request)
    try:
        body = ChatBody.model_validate_json(await request.body())
    except ValidationError:
        return JSONResponse({"error": {"message": "body must be JSON with a 'messages' list"}}, status_code=400)
    return ThinkRequest(claims, body.messages, bool(body.stream))


async def say_again(request: Request) -> Response:
    """The caller's turn could not be heard (the database was unreachable): they are asked to say it
    again, rather than met with silence."""
    try:
        streaming = bool(ChatBody.model_validate_json(await request.body()).stream)
    except ValidationError:
        streaming = False
    return whole_answer(SAY_AGAIN, model=PLATFORM_MODEL, streaming=streaming)


def whole_answer(text: str, *, model: str, streaming: bool, end_call: bool = False, then: str | None = None) -> Response:
    """An answer of the platform's own (not an agent's), streamed or not."""
    if streaming:
        return StreamingResponse(iter(chat_format.spoken_chunks(text, model=model, end_call=end_call, then=then)),
                                 media_type="text/event-stream")
    return JSONResponse(chat_format.text_completion(text, model=model, end_call=end_call, then=then))
