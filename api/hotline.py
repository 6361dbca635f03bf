"""The setup hotline: its Twilio webhook answer and the conductor Deepgram thinks with.

The conductor is an OpenAI-compatible endpoint with no model behind it: each caller utterance
(or digit string) becomes the `hear` Update on the caller's OnboardingWorkflow, and the line the
workflow answers is what the hotline says. Deterministic; every step visible in Temporal UI.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from sqlalchemy import select
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from core import chat_format, tokens
from core.logs import log_context
from core.models import PhoneNumber, User
from core.settings import Settings
from workflows import onboarding_lines as lines
from workflows.agent_lifecycle import Thresholds
from workflows.onboarding import (
    CallStarted,
    Heard,
    Line,
    OnboardingInput,
    OnboardingWorkflow,
    workflow_id,
)

log = logging.getLogger(__name__)
router = APIRouter(prefix="/hotline")

MODEL = "deepclaw-hotline"
FILLER_AFTER_S = 0.7
FILLER = "One moment. "
UNAVAILABLE = "Sorry, setup isn't available right now. Please call again in a few minutes. Goodbye."
TROUBLE = "Sorry, I'm having trouble on my side. Could you say that again?"
CONDUCTOR_TOKEN_TTL_S = 3 * 3600.0


async def existing_number(request: Request, caller: str) -> str | None:
    """The number of the caller's agent, if they have one already."""
    async with request.app.state.sessions() as session:
        return (await session.execute(
            select(PhoneNumber.e164).join(User, PhoneNumber.user_id == User.id)
            .where(User.phone_e164 == caller, PhoneNumber.state == "assigned"))).scalar_one_or_none()


async def opening_line(client: Client, settings: Settings, caller: str, call_sid: str) -> Line:
    """Starts (or finds) the caller's onboarding and asks it how this call opens."""
    handle = await client.start_workflow(
        OnboardingWorkflow.run,
        OnboardingInput(caller=caller, hotline_number=settings.hotline_number, runtime=settings.agent_runtime.value,
                        thresholds=Thresholds(release_number_after=timedelta(days=settings.number_release_after_days)),
                        archived_numbers=settings.archived_numbers),
        id=workflow_id(caller), task_queue=settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)
    return await handle.execute_update(OnboardingWorkflow.call_started, CallStarted(call_sid=call_sid))


def conductor_url(settings: Settings, *, call_sid: str, caller: str) -> str:
    token = tokens.sign({"kind": "llm", "call": call_sid, "caller": caller, "hotline": True},
                        settings.platform_secret.get_secret_value(), ttl_s=CONDUCTOR_TOKEN_TTL_S)
    return f"{settings.api_base_url}/hotline/{token}/v1/chat/completions"


async def answer_call(request: Request, form: dict[str, str]) -> tuple[str, Line]:
    """For POST /twilio/voice to the hotline: what to say first, and whether to stream the call on."""
    settings: Settings = request.app.state.settings
    caller, call_sid = form.get("From", ""), form.get("CallSid", "")
    if number := await existing_number(request, caller):
        return "", Line(text=lines.already_registered(number), end_call=True)
    client: Client | None = request.app.state.temporal
    if client is None or not caller.startswith("+"):
        return "", Line(text=UNAVAILABLE, end_call=True)
    try:
        line = await opening_line(client, settings, caller, call_sid)
    except (RPCError, WorkflowUpdateFailedError) as error:
        log.error("hotline could not start onboarding for %s: %s", caller, error)
        return "", Line(text=UNAVAILABLE, end_call=True)
    return conductor_url(settings, call_sid=call_sid, caller=caller), line


@router.post("/{token}/v1/chat/completions")
async def conductor(token: str, request: Request) -> Response:
    settings: Settings = request.app.state.settings
    try:
        claims = tokens.verify(token, settings.platform_secret.get_secret_value(), kind="llm")
        if not claims.get("hotline"):
            raise tokens.InvalidToken("not a hotline token")
    except tokens.InvalidToken as error:
        return JSONResponse({"error": {"message": f"unauthorised: {error}", "type": "invalid_token"}}, status_code=401)
    try:
        body = await request.json()
        messages: list[dict[str, Any]] = body["messages"]
        if not isinstance(messages, list):
            raise TypeError("messages must be a list")
    except Exception:
        return JSONResponse({"error": {"message": "body must be JSON with a 'messages' list"}}, status_code=400)
    streaming = bool(body.get("stream"))
    if messages and messages[-1].get("role") == "tool":  # our end_call was carried out: nothing to add
        if streaming:
            return StreamingResponse(iter([chat_format.DONE.encode()]), media_type="text/event-stream")
        return JSONResponse(chat_format.text_completion("", model=MODEL))
    with log_context(call_id=claims["call"]):
        said = chat_format.latest_user_text(messages)
        reply = asyncio.create_task(_hear(request.app.state.temporal, claims, said))
        if streaming:
            return StreamingResponse(_stream(reply), media_type="text/event-stream")
        line = await reply
        return JSONResponse(chat_format.text_completion(line.text, model=MODEL, end_call=line.end_call))


async def _hear(client: Client | None, claims: dict[str, Any], said: str) -> Line:
    if client is None:
        return Line(text=UNAVAILABLE, end_call=True)
    handle = client.get_workflow_handle(workflow_id(claims["caller"]))
    try:
        return await handle.execute_update(OnboardingWorkflow.hear, Heard(call_sid=claims["call"], text=said))
    except WorkflowUpdateFailedError as error:
        log.warning("onboarding refused %r: %s", said, error.cause or error)
        finished = isinstance(error.cause, ApplicationError) and error.cause.type == "OnboardingFinished"
        return Line(text=lines.ONBOARDING_CLOSED, end_call=True) if finished else Line(text=TROUBLE)
    except RPCError as error:
        log.error("onboarding unreachable: %s", error)
        return Line(text=TROUBLE)
    except Exception:  # the caller hears an apology, never silence
        log.exception("onboarding did not answer %r", said)
        return Line(text=TROUBLE)


async def _stream(reply: asyncio.Task[Line]) -> AsyncIterator[bytes]:
    done, _ = await asyncio.wait({reply}, timeout=FILLER_AFTER_S)
    if not done:
        yield chat_format.text_chunk(FILLER, model=MODEL)  # no dead air while provisioning runs
    line = await reply
    yield chat_format.text_chunk(line.text, model=MODEL)
    if line.end_call:
        yield chat_format.end_call_chunk(model=MODEL)
    yield chat_format.DONE.encode()
