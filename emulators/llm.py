"""An OpenAI-compatible chat-completions server: deterministic, scriptable from tests.

OpenClaw uses it when no model provider is configured. It answers JSON or SSE (`stream: true`,
which is what OpenClaw always asks for) and replies:
  1. to a tool's result with a sentence about it (emulators.demo_model),
  2. with the next scripted reply whose pattern matches the last user message (POST /control/replies), or
  3. as the local demo model: a few plain-word requests become real tool calls, the rest an echo
     that says it is the demo (emulators.demo_model).
Every request is kept (GET /control/requests) so tests can see exactly what the model was sent.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from core import chat_format
from emulators import demo_model

MODEL_ID = "deepclaw-local"


@dataclass
class ScriptedReply:
    pattern: re.Pattern[str]
    text: str
    times: int | None = 1  # None: forever
    tool_call: dict[str, Any] | None = None  # {"name": ..., "arguments": {...}}: call a tool instead
    delay_s: float = 0.0  # think this long first (a long task)


@dataclass
class ModelScript:
    replies: list[ScriptedReply] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def scripted_for(self, prompt: str) -> ScriptedReply | None:
        for scripted in self.replies:
            if scripted.pattern.search(prompt):
                if scripted.times is not None:
                    scripted.times -= 1
                    if scripted.times <= 0:
                        self.replies.remove(scripted)
                return scripted
        return None


ANYTHING = re.compile("")


def respond(script: ModelScript, messages: list[dict[str, Any]], offered: list[str]) -> ScriptedReply:
    """A tool's result is phrased; else a scripted reply for the caller's words; else the demo model's."""
    said = user_texts(messages)
    prompt = said[-1] if said else ""
    if (pending := demo_model.pending_tool_result(messages)) is not None:
        answer = demo_model.after_tool(*pending, said=prompt)
    elif (scripted := script.scripted_for(prompt)) is not None:
        return scripted
    else:
        earlier = demo_model.recalled(messages) + said[:-1]
        answer = demo_model.send_it(prompt, messages) or demo_model.answer_words(
            prompt, earlier, on_a_call=demo_model.on_a_call(messages))
    if answer.tool is None:
        return ScriptedReply(ANYTHING, answer.text)
    if (call := demo_model.tool_call_for(answer.tool, answer.args or {}, offered)) is None:
        return ScriptedReply(ANYTHING, f"I can't do that here: no {answer.tool.replace('_', ' ')} tool is connected.")
    return ScriptedReply(ANYTHING, "", tool_call={"name": call[0], "arguments": call[1]})


def message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


# OpenClaw frames the user's words: a "[Tue 2026-11-24 22:31 UTC] " prefix, a "Runtime: ..."
# footer, and separate internal-context messages. The stand-in answers the words themselves.
_INTERNAL = "<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>"
_STAMP = re.compile(r"^\[[^\]]*\d{1,2}:\d{2}[^\]]*\]\s*")
_FOOTER = re.compile(r"\n\s*Runtime: .*$", re.S)


def user_texts(messages: list[dict[str, Any]]) -> list[str]:
    """What the user said, turn by turn, without OpenClaw's framing."""
    texts = []
    for message in messages:
        if message.get("role") != "user":
            continue
        text = message_text(message).strip()
        if text.startswith(_INTERNAL):
            continue
        texts.append(_FOOTER.sub("", _STAMP.sub("", text)).strip())
    return texts


def _tool_calls(reply: ScriptedReply) -> list[dict[str, Any]]:
    assert reply.tool_call is not None
    return [chat_format.tool_call(reply.tool_call["name"], reply.tool_call.get("arguments", {}), index=0)]


async def _stream(reply: ScriptedReply, completion_id: str, created: int, include_usage: bool,
                  word_interval_s: float) -> AsyncIterator[str]:
    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
        return chat_format.chunk(delta, model=MODEL_ID, finish_reason=finish_reason, completion_id=completion_id,
                                 created=created)

    yield chunk({"role": "assistant", "content": ""})
    await asyncio.sleep(reply.delay_s)
    words = reply.text.split(" ") if reply.text else []
    for i, word in enumerate(words):
        if i and word_interval_s:
            await asyncio.sleep(word_interval_s)
        yield chunk({"content": word if i == 0 else " " + word})
    if reply.tool_call:
        yield chunk({"tool_calls": _tool_calls(reply)})
    yield chunk({}, "tool_calls" if reply.tool_call else "stop")
    if include_usage:
        body = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": MODEL_ID,
                "choices": [], "usage": _usage(len(words))}
        yield f"data: {json.dumps(body)}\n\n"
    yield chat_format.DONE


def _usage(completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": 1, "completion_tokens": completion_tokens, "total_tokens": 1 + completion_tokens}


def create_app(script: ModelScript | None = None, *, word_interval_s: float = 0.0) -> Starlette:
    """`word_interval_s`: stream a reply's words this far apart, the first at once (0: all in one go).
    A real model generates its tokens one after another; a reply written whole lands in one read,
    and OpenClaw then processes all of it, and ends its run, before its first word goes out."""
    script = script or ModelScript()

    async def completions(request: Request) -> Response:
        try:
            body = await request.json()
            messages = body["messages"]
            assert isinstance(messages, list)
        except Exception:
            return JSONResponse(
                {"error": {"message": "body must be JSON with a 'messages' list", "type": "invalid_request_error"}},
                status_code=400,
            )
        script.requests.append(body)
        offered = [str((tool.get("function") or {}).get("name", "")) for tool in body.get("tools") or []
                   if isinstance(tool, dict)]
        reply = respond(script, messages, offered)
        text = reply.text
        if not body.get("stream"):
            await asyncio.sleep(reply.delay_s)
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        created = int(time.time())
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(
                _stream(reply, completion_id, created, include_usage, word_interval_s), media_type="text/event-stream"
            )
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if reply.tool_call:
            message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in _tool_calls(reply)]
        return JSONResponse(chat_format.completion(
            message, model=MODEL_ID, finish_reason="tool_calls" if reply.tool_call else "stop",
            completion_id=completion_id, created=created, usage=_usage(len(text.split()))))

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": MODEL_ID, "object": "model", "owned_by": "deepclaw"}]})

    async def add_reply(request: Request) -> Response:
        body = await request.json()
        try:
            scripted = ScriptedReply(re.compile(body.get("match", ".*"), re.I | re.S), body.get("reply", ""),
                                     body.get("times", 1), body.get("tool_call"), float(body.get("delay_s", 0)))
            if not scripted.text and not scripted.tool_call:
                raise KeyError("reply or tool_call")
        except (KeyError, ValueError, re.error) as error:
            return JSONResponse({"error": f"bad script: {error}"}, status_code=400)
        script.replies.append(scripted)
        return JSONResponse({"queued": len(script.replies)})

    async def requests_seen(request: Request) -> Response:
        return JSONResponse({"requests": script.requests})

    async def reset(request: Request) -> Response:
        script.replies.clear()
        script.requests.clear()
        return JSONResponse({"reset": True})

    return Starlette(routes=[
        Route("/v1/chat/completions", completions, methods=["POST"]),
        Route("/v1/models", models),
        Route("/control/replies", add_reply, methods=["POST"]),
        Route("/control/requests", requests_seen),
        Route("/control/reset", reset, methods=["POST"]),
    ])
