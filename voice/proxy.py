"""The think endpoint Deepgram calls: `/llm/<token>/v1/chat/completions`.

It opens the call's think token (bound to its Media Stream: refused once the stream has ended),
wakes the user's agent through its lifecycle workflow on the call's first turn and keeps its endpoint
for the rest of the call, forwards the caller's latest words to their OpenClaw (one session per
call; memory is the agent's own) and streams the answer back. An answer slow to start opens with
short fillers (core.fillers), so no dead air. Keeping the agent awake (`touch`) is off the turn's path,
and so is keeping its OpenClaw warm through the call's silences (voice.keep_warm).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError

from activities.runtime.openclaw_config import agent_id
from core import chat_format
from core.fillers import with_fillers
from core.logs import log_context
from core.ports import AgentEndpoint
from core.callers import pin_matches
from voice.confirmations import SpokenConfirmations
from core.limits import Limit, UserLimiter
from core.metrics import THINK_SECONDS
from core.models import User
from core.spoken import parse_digits
from core.recall import recall_note
from core.streams import MAX_REMEMBERED, LiveStreams, mark_verified, stream_verified
from core.think import read_think_request, whole_answer
from core.tokens import Keyring, TokenKind
from core.usage import record_model_tokens
from voice.agent_settings import END_CALL_MARKER
from voice.keep_warm import KeepWarm
from activities.follow_ups import UnheardAnswer
from workflows.agent_lifecycle import AgentLifecycleWorkflow, workflow_id
from workflows.follow_up import FollowUpWorkflow
from workflows.follow_up import workflow_id as follow_up_id

log = logging.getLogger(__name__)

MODEL = "deepclaw"
PIN_TRIES = 3  # per call
PIN_NOT_HEARD = "Please say or key in your PIN, digit by digit."
PIN_WRONG = "That PIN isn't right. Please try again."
PIN_OK = "Thanks, that's you. What can I do for you?"
PIN_FAILED = "Sorry, I can't confirm it's you. Goodbye."
FOLLOW_UP_CHECK_S = 1.0  # after an answer is cut off, is the call still up (or was it a barge-in)?
TOUCH_EVERY_S = 30.0  # during a call the agent is kept awake this often (its idle timer is minutes)
# Said on the call when the user's OpenClaw cannot answer the turn; the agent then finishes it and
# texts the answer (FollowUpWorkflow), so the question is not lost.
UNREACHABLE = "Sorry, I can't reach your assistant right now. I'll text you the answer as soon as I have it."
TOO_SLOW = "Sorry, this is taking longer than it should. I'll text you the answer as soon as it's ready."
OUTCOMES = {UNREACHABLE: "unreachable", TOO_SLOW: "too_slow"}  # a turn's outcome, for the think metric


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


@dataclass
class Turn:
    stream: uuid.UUID
    user_id: uuid.UUID
    forward: dict[str, Any]
    headers: dict[str, str]
    received: float  # when the think request arrived
    said: str = ""  # the caller's latest words


def latest_turn(messages: list[dict[str, Any]], recall: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """OpenClaw keeps the conversation itself: send the instructions (with what the user said lately
    elsewhere, core.recall) and the newest user turn only."""
    system = [m for m in messages if m.get("role") == "system"][:1]
    user = [m for m in messages if m.get("role") == "user"][-1:]
    return system + ([recall] if recall else []) + user


class LlmProxy:
    def __init__(self, *, keyring: Keyring, temporal: Client, http: httpx.AsyncClient, live: LiveStreams,
                 limiter: UserLimiter, task_queue: str, confirmations: SpokenConfirmations | None = None,
                 answer_timeout_s: float = 60.0) -> None:
        self.keyring = keyring
        self.answer_timeout_s = answer_timeout_s  # until the answer's first words, once OpenClaw has the turn
        self.confirmations = confirmations  # the owner's spoken yes/no to what the agent proposed
        self.task_queue = task_queue  # the workers', for follow-ups of answers a call ended before
        self.temporal = temporal
        self.http = http
        self.live = live
        self.limiter = limiter  # wrong PINs per user
        self.touched: dict[uuid.UUID, float] = {}
        self.background: set[asyncio.Task[None]] = set()
        self.warmth = KeepWarm(http=http, call_is_up=self._call_is_up)

    def tasks(self) -> list[asyncio.Task[None]]:
        """What runs in the background (cancelled when the bridge stops)."""
        return [*self.background, *self.warmth.waiting.values()]

    def _warm_while_quiet(self, stream: uuid.UUID, user_id: uuid.UUID, endpoint: AgentEndpoint) -> None:
        self.warmth.arm(stream, endpoint.base_url, endpoint.authorization(self.keyring), agent_id(user_id))

    async def _call_is_up(self, stream: uuid.UUID) -> bool:
        """Is the call still up (not within its think tokens' grace: ended is ended)?"""
        if stream in self.live.ended:
            return self.live.ended[stream] is None
        return await self.live.is_open(stream)  # another bridge's stream: the database knows

    async def wake(self, user_id: uuid.UUID) -> AgentEndpoint | None:
        """The agent's endpoint, waking it if needed (the update marks it used, too); None if it cannot be."""
        try:
            return await self.temporal.get_workflow_handle(workflow_id(user_id)).execute_update(
                AgentLifecycleWorkflow.ensure_awake)
        except (WorkflowUpdateFailedError, RPCError) as error:
            log.warning("agent could not be woken: %s", error)
            return None

    def _keep_awake(self, user_id: uuid.UUID) -> None:
        """A `touch` now and then, in the background: the turn never waits for Temporal."""
        now = asyncio.get_running_loop().time()
        if now - self.touched.get(user_id, -TOUCH_EVERY_S) < TOUCH_EVERY_S:
            return
        self.touched[user_id] = now

        async def touch() -> None:
            try:
                await self.temporal.get_workflow_handle(workflow_id(user_id)).signal(AgentLifecycleWorkflow.touch)
            except RPCError as error:
                log.warning("could not keep the agent of %s awake: %s", user_id, error)

        task = asyncio.create_task(touch())
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _endpoint(self, stream: uuid.UUID, user_id: uuid.UUID) -> AgentEndpoint | None:
        """The stream's agent: known after its first turn, else woken (None if it cannot be)."""
        if (endpoint := self.live.remembered.get(stream)) is not None:
            self._keep_awake(user_id)
            return endpoint
        if (endpoint := await self.wake(user_id)) is None:
            return None
        self.live.remember(stream, endpoint)
        self.touched[user_id] = asyncio.get_running_loop().time()
        return endpoint

    async def __call__(self, request: Request) -> Response:
        received = time.monotonic()
        think = await read_think_request(request, self.keyring, TokenKind.THINK, request.path_params["token"], self.live)
        if isinstance(think, Response):
            return think
        claims = think.claims
        user_id, call_sid, stream = uuid.UUID(claims["user"]), str(claims["call"]), uuid.UUID(claims["stream"])
        with log_context(user_id=str(user_id), call_id=call_sid):
            if think.after_function:
                return whole_answer("", model=MODEL, streaming=think.streaming)
            if claims.get("pin") and (gate := await self._pin_gate(stream, user_id, think.said)) is not None:
                text, end = gate
                return whole_answer(text, model=MODEL, streaming=think.streaming, end_call=end)
            if self.confirmations and (decided := await self.confirmations.heard(stream, user_id, think.said)):
                return whole_answer(decided, model=MODEL, streaming=think.streaming)
            forward = {"model": f"openclaw/{agent_id(user_id)}", "stream": True,
                       "stream_options": {"include_usage": True},  # the tokens used, in a last chunk
                       "messages": latest_turn(think.messages, await self._recall(stream, user_id, call_sid))}
            turn = Turn(stream=stream, user_id=user_id, forward=forward,
                        headers={"x-openclaw-session-key": f"call-{call_sid}"}, received=received, said=think.said)
            if think.streaming:
                return StreamingResponse(with_fillers(self._stream(turn), _chunk), media_type="text/event-stream")
            return JSONResponse(await self._complete(turn))

    async def _recall(self, stream: uuid.UUID, user_id: uuid.UUID, call_sid: str) -> dict[str, Any] | None:
        """What the user said lately in other calls and texts: read at the call's first turn, kept for the call."""
        if stream not in self.live.recalls:
            if len(self.live.recalls) >= MAX_REMEMBERED:
                del self.live.recalls[next(iter(self.live.recalls))]
            self.live.recalls[stream] = await recall_note(self.live.sessions, user_id, call_sid=call_sid)
        return self.live.recalls[stream]

    async def _pin_gate(self, stream: uuid.UUID, user_id: uuid.UUID, said_words: str) -> tuple[str, bool] | None:
        """None once this call's caller has said the user's PIN; until then what to answer, and
        whether the call ends. Nothing reaches the agent before."""
        if stream in self.live.verified or await stream_verified(self.live.sessions, stream):
            self.live.verified.add(stream)
            return None
        if not await self.limiter.allows(Limit.WRONG_PIN, user_id):
            log.warning("user %s: too many wrong PINs lately; call refused", user_id)
            return PIN_FAILED, True
        said = parse_digits(said_words)
        if not said:
            return PIN_NOT_HEARD, False
        async with self.live.sessions() as session:
            row = (await session.execute(select(User.phone_e164, User.pin_digest).where(User.id == user_id))).one()
        if pin_matches(self.keyring, row.phone_e164, row.pin_digest, said):
            await mark_verified(self.live.sessions, stream)
            self.live.verified.add(stream)
            log.info("user %s: the caller said the PIN", user_id)
            return PIN_OK, False
        tries = self.live.pin_tries[stream] = self.live.pin_tries.get(stream, 0) + 1
        refused = await self.limiter.acquire(Limit.WRONG_PIN, user_id)
        log.warning("user %s: wrong PIN (%d on this call)", user_id, tries)
        if refused or tries >= PIN_TRIES:
            return PIN_FAILED, True
        return PIN_WRONG, False

    async def _stream(self, turn: Turn) -> AsyncIterator[bytes]:
        self.warmth.pause(turn.stream)
        endpoint = await self._endpoint(turn.stream, turn.user_id)
        if endpoint is None:
            self._given_up(turn, UNREACHABLE)
            yield _chunk(UNREACHABLE)
            yield chat_format.DONE.encode()
            return
        forwarded = time.monotonic()
        first_token = 0.0
        said: list[str] = []
        finished = False
        failed: str | None = None  # what the caller hears instead of an answer
        marker = MarkerFilter()
        used: dict[str, Any] = {}  # the answer's id and token usage, from its last chunk
        try:
            async with asyncio.timeout(self.answer_timeout_s) as deadline, self.http.stream(
                    "POST", f"{endpoint.base_url}/v1/chat/completions", json=turn.forward,
                    headers={**turn.headers, **endpoint.authorization(self.keyring)}) as answer:
                if answer.status_code != 200:
                    raise httpx.HTTPStatusError(f"OpenClaw answered {answer.status_code}", request=answer.request,
                                                response=answer)
                async for line in answer.aiter_lines():
                    if not line.startswith("data: {"):
                        if line == "data: [DONE]":
                            finished = True
                            if tail := marker.flush():
                                yield _chunk(tail)
                            if marker.seen:
                                yield chat_format.end_call_chunk(model=MODEL)
                        if line:
                            yield line.encode() + b"\n\n"
                        continue
                    chunk = json.loads(line[6:])
                    if chunk.get("usage") and not chunk.get("choices"):  # ours to record, not the voice agent's
                        used = chunk
                        continue
                    for choice in chunk.get("choices", []):
                        delta = choice.get("delta") or {}
                        if delta.get("content"):
                            if not first_token:  # the first words, what the caller waits for
                                first_token = time.monotonic()
                                deadline.reschedule(None)  # a long answer may take its time to say
                                THINK_SECONDS.labels(outcome="answered").observe(first_token - turn.received)
                                log.info("think turn: platform %.1f ms, agent's first token after %.1f ms",
                                         (forwarded - turn.received) * 1000, (first_token - forwarded) * 1000)
                            delta["content"] = marker.feed(delta["content"])
                            said.append(delta["content"])
                    yield f"data: {json.dumps(chunk)}\n\n".encode()
            self._warm_while_quiet(turn.stream, turn.user_id, endpoint)
            await self._record_tokens(turn, used)
        except httpx.HTTPError as error:
            log.warning("OpenClaw call failed: %s", error)
            self.live.remembered.pop(turn.stream, None)  # the next turn asks the lifecycle workflow again
            failed = UNREACHABLE
        except TimeoutError:
            log.warning("OpenClaw had not started its answer after %.0f s: given up on the call", self.answer_timeout_s)
            failed = TOO_SLOW
        finally:
            if failed is None and not marker.seen:  # a goodbye is not followed up
                self._follow_up(turn, "".join(said) if finished else None)
        if failed is not None:
            self._given_up(turn, failed)
            yield _chunk(failed)
            yield chat_format.DONE.encode()

    def _given_up(self, turn: Turn, apology: str) -> None:
        """The turn could not be answered on the call: counted, and the agent finishes it by text."""
        THINK_SECONDS.labels(outcome=OUTCOMES[apology]).observe(time.monotonic() - turn.received)
        self._follow_up(turn, None, call_up_too=True)

    async def _record_tokens(self, turn: Turn, completion: dict[str, Any]) -> None:
        """The tokens an answer used, as the user's usage (where OpenClaw reported them)."""
        if not completion.get("id") or not completion.get("usage"):
            return
        try:
            async with self.live.sessions() as session, session.begin():
                await record_model_tokens(session, user_id=turn.user_id, usage=completion["usage"],
                                          run=str(completion["id"]))
        except SQLAlchemyError as error:  # the call goes on; usage is not worth a broken answer
            log.warning("could not record the tokens of an answer for %s: %s", turn.user_id, error)

    def _follow_up(self, turn: Turn, answer: str | None, *, call_up_too: bool = False) -> None:
        """The user never heard this answer if the call was over before it was complete, or if the
        agent could not give it (`call_up_too`: the caller was told it would come by text): a
        FollowUpWorkflow texts it, or (cut off, not given) has the agent finish the task first. A
        finished answer is judged at once (a caller who hangs up while it plays heard it); a cut-off
        one a moment later, since a barge-in cuts answers off too, but then the call is still up."""
        async def hand_off() -> None:
            if not turn.said or (answer is not None and not answer.strip()):
                return
            if not call_up_too:
                if answer is None:
                    await asyncio.sleep(FOLLOW_UP_CHECK_S)
                if await self._call_is_up(turn.stream):
                    return
            call_sid = turn.headers["x-openclaw-session-key"].removeprefix("call-")
            unheard = UnheardAnswer(user_id=turn.user_id, call_sid=call_sid,
                                    session_key=turn.headers["x-openclaw-session-key"],
                                    question=turn.said, answer=answer)
            try:
                await self.temporal.start_workflow(FollowUpWorkflow.run, unheard, id=follow_up_id(unheard),
                                                   task_queue=self.task_queue)
                log.info("the answer was not heard on the call: following up by text")
            except RPCError as error:  # started already, or Temporal unreachable
                log.warning("could not follow up an unheard answer: %s", error)

        task = asyncio.create_task(hand_off())
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def ask(self, user_id: uuid.UUID, session_key: str, text: str) -> str | None:
        """One plain question to the user's agent, outside any call (e.g. the next greeting)."""
        if (endpoint := await self.wake(user_id)) is None:
            return None
        answer = await self.http.post(
            f"{endpoint.base_url}/v1/chat/completions",
            json={"model": f"openclaw/{agent_id(user_id)}", "messages": [{"role": "user", "content": text}]},
            headers={**endpoint.authorization(self.keyring), "x-openclaw-session-key": session_key})
        answer.raise_for_status()
        return answer.json()["choices"][0]["message"]["content"]

    async def _complete(self, turn: Turn) -> dict[str, Any]:
        self.warmth.pause(turn.stream)
        endpoint = await self._endpoint(turn.stream, turn.user_id)
        failed = UNREACHABLE
        if endpoint is not None:
            try:
                answer = await asyncio.wait_for(self.http.post(
                    f"{endpoint.base_url}/v1/chat/completions", json={**turn.forward, "stream": False, "stream_options": None},
                    headers={**turn.headers, **endpoint.authorization(self.keyring)}), self.answer_timeout_s)
                answer.raise_for_status()
                THINK_SECONDS.labels(outcome="answered").observe(time.monotonic() - turn.received)
                completion = answer.json()
                await self._record_tokens(turn, completion)
                message = completion["choices"][0]["message"]
                if END_CALL_MARKER in (message.get("content") or ""):
                    message["content"] = message["content"].replace(END_CALL_MARKER, "").strip()
                    message["tool_calls"] = [chat_format.tool_call("end_call", "{}")]
                    completion["choices"][0]["finish_reason"] = "tool_calls"
                self._warm_while_quiet(turn.stream, turn.user_id, endpoint)
                return completion
            except httpx.HTTPError as error:
                log.warning("OpenClaw call failed: %s", error)
                self.live.remembered.pop(turn.stream, None)
            except TimeoutError:
                log.warning("OpenClaw had not answered after %.0f s: given up on the call", self.answer_timeout_s)
                failed = TOO_SLOW
        self._given_up(turn, failed)
        return _completion(failed)
