"""OpenAI chat-completions wire shapes (JSON and SSE chunks), for the LLM proxy and the model stand-in."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

DONE = "data: [DONE]\n\n"


def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:12]}"


def tool_call(name: str, arguments: str | dict[str, Any], *, index: int | None = None) -> dict[str, Any]:
    call: dict[str, Any] = {"id": f"call_{uuid.uuid4().hex[:10]}", "type": "function",
                            "function": {"name": name,
                                         "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)}}
    return {"index": index, **call} if index is not None else call


def chunk(delta: dict[str, Any], *, model: str, finish_reason: str | None = None, completion_id: str | None = None,
          created: int | None = None) -> str:
    """One SSE event of a streamed completion."""
    body = {"id": completion_id or new_id(), "object": "chat.completion.chunk", "created": created or int(time.time()),
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
    return f"data: {json.dumps(body)}\n\n"


def completion(message: dict[str, Any], *, model: str, finish_reason: str = "stop", completion_id: str | None = None,
               created: int | None = None, usage: dict[str, int] | None = None) -> dict[str, Any]:
    """A whole (non-streamed) completion."""
    body: dict[str, Any] = {
        "id": completion_id or new_id(), "object": "chat.completion", "created": created or int(time.time()),
        "model": model, "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}]}
    if usage is not None:
        body["usage"] = usage
    return body


def text_chunk(content: str, *, model: str) -> bytes:
    return chunk({"content": content}, model=model).encode()


def function_chunk(name: str, *, model: str) -> bytes:
    """A call of one of the voice agent's client-side functions (end_call, hand_off): the bridge carries
    it out once the words before it have been said."""
    delta = {"tool_calls": [tool_call(name, "{}", index=0)]}
    return chunk(delta, model=model, finish_reason="tool_calls").encode()


def end_call_chunk(*, model: str) -> bytes:
    return function_chunk("end_call", model=model)


def spoken_chunks(content: str, *, model: str, end_call: bool = False, then: str | None = None) -> list[bytes]:
    """A whole streamed answer: its text (if any), the end_call if asked (or the function `then`), the end."""
    chunks = [text_chunk(content, model=model)] if content else []
    if end_call or then:
        chunks.append(function_chunk("end_call" if end_call else str(then), model=model))
    return [*chunks, DONE.encode()]


def text_completion(content: str, *, model: str, end_call: bool = False, then: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if end_call or then:
        message["tool_calls"] = [tool_call("end_call" if end_call else str(then), "{}")]
    return completion(message, model=model, finish_reason="tool_calls" if end_call or then else "stop")


def latest_user_text(messages: list[dict[str, Any]]) -> str:
    return next((str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "user"), "")
