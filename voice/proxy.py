"""The think endpoint Deepgram calls: `/llm/<token>/v1/chat/completions`.

It verifies the per-call token, wakes the user's agent through its lifecycle workflow, forwards
the caller's latest words to their OpenClaw (one session per call; memory is the agent's own) and
streams the answer back. While the agent wakes it says a short filler first, so no dead air.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError

from activities.runtime.openclaw_config import agent_id
from core import chat_format, tokens
from core.logs import log_context
from core.ports import AgentEndpoint
from voice.agent_settings import END_CALL_MARKER
from workflows.agent_lifecycle import AgentLifecycleWorkflow, workflow_id

log = logging.getLogger(__name__)

MODEL = "deepclaw"
FILLER_AFTER_S = 0.7
FILLER = "One moment. "
UNREACHABLE = "Sorry, I can't reach your assistant right now. Please try again in a minute."


def _chunk(content: str) -> bytes:
    return chat_format.text_chunk(content, model=MODEL)


def _completion(content: str) -> dict[str, Any]:
    return chat_format.text_completion(content, model=MODEL)


class MarkerFilter:
    """Removes the end-of-call marker from streamed text, even when it arrives split across chunks."""

    def __init__(self) -> None:
        self.held = ""
        self.seen = False

    def feed(self, text: str) -> str:
        text = self.held + text
        if END_CALL_MARKER in text:
            self.seen = True
            text = text.replace(END_CALL_MARKER, "")
        keep = next((n for n in range(len(END_CALL_MARKER) - 1, 0, -1) if text.endswith(END_CALL_MARKER[:n])), 0)
        self.held = text[len(text) - keep:] if keep else ""
        return text[: len(text) - keep] if keep else text

    def flush(self) -> str:
        held, self.held = self.held, ""
        return held


def latest_turn(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenClaw keeps the conversation itself: send the instructions and the newest user turn only."""
    system = [m for m in messages if m.get("role") == "system"][:1]
    user = [m for m in messages if m.get("role") == "user"][-1:]
    return system + user


class LlmProxy:
    def __init__(self, *, secret: str, temporal: Client, http: httpx.AsyncClient) -> None:
        self.secret = secret
        self.temporal = temporal
        self.http = http

    async def wake(self, user_id: uuid.UUID) -> AgentEndpoint:
        handle = self.temporal.get_workflow_handle(workflow_id(user_id))
        await handle.signal(AgentLifecycleWorkflow.touch)
        return await handle.execute_update(AgentLifecycleWorkflow.ensure_awake)

    async def __call__(self, request: Request) -> Response:
        try:
            claims = tokens.verify(request.path_params["token"], self.secret, kind="llm")
        except tokens.InvalidToken as error:
            return JSONResponse({"error": {"message": f"unauthorised: {error}", "type": "invalid_token"}}, status_code=401)
        try:
            body = await request.json()
            messages = body["messages"]
            assert isinstance(messages, list)
        except Exception:
            return JSONResponse({"error": {"message": "body must be JSON with a 'messages' list"}}, status_code=400)
        user_id, call_sid = uuid.UUID(claims["user"]), claims["call"]
        with log_context(user_id=str(user_id), call_id=call_sid):
            if messages and messages[-1].get("role") == "tool":
                # The end_call we asked for was carried out: nothing more to say.
                return (StreamingResponse(iter([chat_format.DONE.encode()]), media_type="text/event-stream")
                        if body.get("stream") else JSONResponse(_completion("")))
            waking = asyncio.create_task(self.wake(user_id))
            forward = {"model": f"openclaw/{agent_id(user_id)}", "messages": latest_turn(messages), "stream": True}
            headers = {"x-openclaw-session-key": f"call-{call_sid}"}
            if body.get("stream"):
                return StreamingResponse(self._stream(waking, forward, headers), media_type="text/event-stream")
            return JSONResponse(await self._complete(waking, forward, headers))

    async def _endpoint(self, waking: asyncio.Task[AgentEndpoint]) -> AgentEndpoint | None:
        try:
            return await waking
        except (WorkflowUpdateFailedError, RPCError) as error:
            log.warning("agent could not be woken: %s", error)
            return None

    async def _stream(self, waking: asyncio.Task[AgentEndpoint], forward: dict[str, Any],
                      headers: dict[str, str]) -> AsyncIterator[bytes]:
        done, _ = await asyncio.wait({waking}, timeout=FILLER_AFTER_S)
        if not done:
            yield _chunk(FILLER)  # the caller hears something while the agent wakes
        endpoint = await self._endpoint(waking)
        if endpoint is None:
            yield _chunk(UNREACHABLE)
            yield chat_format.DONE.encode()
            return
        try:
            async with self.http.stream("POST", f"{endpoint.base_url}/v1/chat/completions", json=forward,
                                        headers={**headers, **endpoint.authorization(self.secret)}) as answer:
                if answer.status_code != 200:
                    raise httpx.HTTPStatusError(f"OpenClaw answered {answer.status_code}", request=answer.request,
                                                response=answer)
                marker = MarkerFilter()
                async for line in answer.aiter_lines():
                    if not line.startswith("data: {"):
                        if line == "data: [DONE]":
                            if tail := marker.flush():
                                yield _chunk(tail)
                            if marker.seen:
                                yield chat_format.end_call_chunk(model=MODEL)
                        if line:
                            yield line.encode() + b"\n\n"
                        continue
                    chunk = json.loads(line[6:])
                    for choice in chunk.get("choices", []):
                        delta = choice.get("delta") or {}
                        if delta.get("content"):
                            delta["content"] = marker.feed(delta["content"])
                    yield f"data: {json.dumps(chunk)}\n\n".encode()
        except httpx.HTTPError as error:
            log.warning("OpenClaw call failed: %s", error)
            yield _chunk(UNREACHABLE)
            yield chat_format.DONE.encode()

    async def ask(self, user_id: uuid.UUID, session_key: str, text: str) -> str | None:
        """One plain question to the user's agent, outside any call (e.g. the next greeting)."""
        endpoint = await self._endpoint(asyncio.create_task(self.wake(user_id)))
        if endpoint is None:
            return None
        answer = await self.http.post(
            f"{endpoint.base_url}/v1/chat/completions",
            json={"model": f"openclaw/{agent_id(user_id)}", "messages": [{"role": "user", "content": text}]},
            headers={**endpoint.authorization(self.secret), "x-openclaw-session-key": session_key})
        answer.raise_for_status()
        return answer.json()["choices"][0]["message"]["content"]

    async def _complete(self, waking: asyncio.Task[AgentEndpoint], forward: dict[str, Any],
                        headers: dict[str, str]) -> dict[str, Any]:
        endpoint = await self._endpoint(waking)
        if endpoint is None:
            return _completion(UNREACHABLE)
        try:
            answer = await self.http.post(f"{endpoint.base_url}/v1/chat/completions",
                                          json={**forward, "stream": False},
                                          headers={**headers, **endpoint.authorization(self.secret)})
            answer.raise_for_status()
            completion = answer.json()
            message = completion["choices"][0]["message"]
            if END_CALL_MARKER in (message.get("content") or ""):
                message["content"] = message["content"].replace(END_CALL_MARKER, "").strip()
                message["tool_calls"] = [chat_format.tool_call("end_call", "{}")]
                completion["choices"][0]["finish_reason"] = "tool_calls"
            return completion
        except httpx.HTTPError as error:
            log.warning("OpenClaw call failed: %s", error)
            return _completion(UNREACHABLE)
