"""The setup hotline: its Twilio webhook answer and the conductor Deepgram thinks with.

The conductor is an OpenAI-compatible endpoint with no model behind it: each caller utterance
(or digit string) becomes the `hear` Update on the caller's OnboardingWorkflow, and the line the
workflow answers is what the hotline says. Deterministic; every step visible in Temporal UI.
Its URL's token (made by the bridge, core.streams) is bound to the hotline call's stream and says
nothing to whoever sees it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.enums.v1 import WorkflowExecutionStatus
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import SessionsDep, SettingsDep, TemporalDep
from core import chat_format
from core.callers import PIN_DIGITS, pin_digest
from core.fillers import with_fillers
from core.logs import log_context
from core.models import PhoneNumber, User
from core.settings import Settings
from core.spoken import parse_digits, wants_skip
from core.streams import LiveStreams
from core.think import read_think_request, whole_answer
from core.tokens import TokenKind
from voice.agent_settings import HAND_OFF
from workflows import onboarding_lines as lines
from workflows.agent_lifecycle import Thresholds
from workflows.onboarding import (
    CallStarted,
    Heard,
    Line,
    OnboardingInput,
    OnboardingWorkflow,
    ReturningUser,
    Step,
    workflow_id,
)

log = logging.getLogger(__name__)
router = APIRouter(prefix="/hotline")

MODEL = "deepclaw-hotline"
HAND_OFF_FUNCTION = HAND_OFF["name"]  # the bridge tells the onboarding when the line before it has played
UNAVAILABLE = "Sorry, setup isn't available right now. Please call again in a few minutes. Goodbye."
TROUBLE = "Sorry, I'm having trouble on my side. Could you say that again?"


async def existing_number(sessions: async_sessionmaker[AsyncSession], caller: str) -> str | None:
    """The number of the caller's agent, if they have one already."""
    async with sessions() as session:
        return (await session.execute(
            select(PhoneNumber.e164).join(User, PhoneNumber.user_id == User.id)
            .where(User.phone_e164 == caller, PhoneNumber.state == "assigned"))).scalar_one_or_none()


async def returning_user(sessions: async_sessionmaker[AsyncSession], caller: str) -> ReturningUser | None:
    """A caller who was a user and has no number any more (released after a long archive)."""
    async with sessions() as session:
        user = (await session.execute(select(User).where(User.phone_e164 == caller))).scalar_one_or_none()
    if user is None or not user.email_verified or not user.email:
        return None
    return ReturningUser(user_id=user.id, email=user.email, voice=user.voice, personality=user.personality,
                         agent_name=user.agent_name)


async def opening_line(client: Client, settings: Settings, caller: str, call_sid: str,
                       returning: ReturningUser | None = None) -> Line:
    """Starts (or finds) the caller's onboarding and asks it how this call opens."""
    handle = await client.start_workflow(
        OnboardingWorkflow.run,
        OnboardingInput(caller=caller, hotline_number=settings.hotline_number, returning=returning,
                        runtime=settings.agent_runtime.value,
                        thresholds=Thresholds(release_number_after=timedelta(days=settings.number_release_after_days)),
                        archived_numbers=settings.archived_numbers),
        id=workflow_id(settings.keyring, caller), task_queue=settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)
    return await handle.execute_update(OnboardingWorkflow.call_started, CallStarted(call_sid=call_sid))


async def answer_call(settings: Settings, sessions: async_sessionmaker[AsyncSession], client: Client | None, *,
                      caller: str, call_sid: str) -> Line:
    """For POST /twilio/voice to the hotline: what to say first, and whether to stream the call on."""
    if number := await existing_number(sessions, caller):
        return Line(text=lines.already_registered(number), end_call=True)
    if client is None or not caller.startswith("+"):
        return Line(text=UNAVAILABLE, end_call=True)
    try:
        return await opening_line(client, settings, caller, call_sid, await returning_user(sessions, caller))
    except (RPCError, WorkflowUpdateFailedError) as error:
        log.error("hotline could not start onboarding for %s: %s", caller, error)
        return Line(text=UNAVAILABLE, end_call=True)


@router.post("/{token}/v1/chat/completions")
async def conductor(token: str, request: Request, settings: SettingsDep, sessions: SessionsDep,
                    temporal: TemporalDep) -> Response:
    think = await read_think_request(request, settings.keyring, TokenKind.HOTLINE, token, LiveStreams(sessions))
    if isinstance(think, Response):
        return think
    if think.after_function:  # our end_call or hand_off was carried out: nothing to add
        return whole_answer("", model=MODEL, streaming=think.streaming)
    claims = think.claims
    with log_context(call_id=claims["call"]):
        if think.streaming:
            return StreamingResponse(with_fillers(_spoken(_hear(temporal, sessions, settings, claims, think.said)), _say),
                                     media_type="text/event-stream")
        line = await _hear(temporal, sessions, settings, claims, think.said)
        return whole_answer(line.text, model=MODEL, streaming=False, end_call=line.end_call,
                            then=HAND_OFF_FUNCTION if line.hand_off else None)


def _say(text: str) -> bytes:
    return chat_format.text_chunk(text, model=MODEL)


async def _hear(client: Client | None, sessions: async_sessionmaker[AsyncSession], settings: Settings,
                claims: dict[str, Any], said: str) -> Line:
    if client is None:
        return Line(text=UNAVAILABLE, end_call=True)
    caller = str(claims["caller"])
    if settings.local_mode:  # what callers say stays out of production logs (codes, addresses, PINs)
        log.debug("call %s: the caller said %r", claims["call"], said)
    handle = client.get_workflow_handle(workflow_id(settings.keyring, caller))
    try:
        heard = Heard(call_sid=claims["call"], text=said)
        if await handle.query(OnboardingWorkflow.current_step) == Step.PIN:
            heard = _pin_heard(settings, caller, heard)
        return await handle.execute_update(OnboardingWorkflow.hear, heard)
    except WorkflowUpdateFailedError as error:
        log.warning("call %s: onboarding refused what the caller said: %s", claims["call"], error.cause or error)
        if isinstance(error.cause, ApplicationError) and error.cause.type == "OnboardingFinished":
            return await _finished(sessions, caller)
        return Line(text=TROUBLE)
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND or await _closed(handle):
            return await _finished(sessions, caller)
        log.error("onboarding unreachable: %s", error)
        return Line(text=TROUBLE)
    except Exception:  # the caller hears an apology, never silence
        log.exception("call %s: onboarding did not answer", claims["call"])
        return Line(text=TROUBLE)


def _pin_heard(settings: Settings, caller: str, heard: Heard) -> Heard:
    """At the PIN step the workflow gets the PIN's digest, or "skip", never the digits (history keeps
    an Update's input)."""
    digits = parse_digits(heard.text)
    if len(digits) in PIN_DIGITS:
        return Heard(call_sid=heard.call_sid, text="", pin_digest=pin_digest(settings.keyring, caller, digits))
    return Heard(call_sid=heard.call_sid, text="skip" if wants_skip(heard.text) else "")


async def _closed(handle: Any) -> bool:
    try:
        return (await handle.describe()).raw_description.workflow_execution_info.status != \
            WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING
    except RPCError:
        return False


async def _finished(sessions: async_sessionmaker[AsyncSession], caller: str) -> Line:
    """The caller's setup is over: if it gave them a number, say so (and which)."""
    if number := await existing_number(sessions, caller):
        return Line(text=lines.setup_complete(number), end_call=True)
    return Line(text=lines.ONBOARDING_CLOSED, end_call=True)


async def _spoken(reply: Any) -> AsyncIterator[bytes]:
    line = await reply
    for chunk in chat_format.spoken_chunks(line.text, model=MODEL, end_call=line.end_call,
                                           then=HAND_OFF_FUNCTION if line.hand_off else None):
        yield chunk
