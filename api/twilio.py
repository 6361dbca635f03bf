"""Twilio webhooks. Every request must carry a valid X-Twilio-Signature for the URL Twilio called."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import WorkflowUpdateStage
from temporalio.service import RPCError
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, VoiceResponse

from api import hotline
from api.deps import SessionsDep, SettingsDep, TemporalDep
from core.callbacks import PURPOSE_AUDIENCE
from core.callers import CallerTrust, classify
from core.logs import log_context
from core.models import PhoneNumber, User
from core.settings import Settings
from core.streams import issue_ticket
from core.tokens import InvalidToken, TokenKind
from workflows.agent_lifecycle import AgentLifecycleWorkflow, workflow_id

log = logging.getLogger(__name__)
router = APIRouter(prefix="/twilio")

UNKNOWN_NUMBER = "Sorry, this number is not in service. Goodbye."
CALL_FAILED = "Sorry, something went wrong with this call. Goodbye."


def public_url(request: Request, settings: Settings) -> str:
    """The URL Twilio signed: the configured public base, or what the proxy in front says."""
    if settings.public_base_url:
        base = settings.public_base_url.rstrip("/")
    else:
        proto = request.headers.get("x-forwarded-proto", request.url.scheme)
        host = request.headers.get("x-forwarded-host", request.headers.get("host", request.url.netloc))
        base = f"{proto}://{host}"
    query = f"?{request.url.query}" if request.url.query else ""
    return f"{base}{request.url.path}{query}"


async def signed_form(request: Request, settings: SettingsDep) -> dict[str, str]:
    form = {k: str(v) for k, v in (await request.form()).items()}
    validator = RequestValidator(settings.twilio_auth_token.get_secret_value())
    if not validator.validate(public_url(request, settings), form, request.headers.get("x-twilio-signature", "")):
        log.warning("rejected unsigned or mis-signed Twilio request to %s", request.url.path)
        raise HTTPException(status_code=403, detail="invalid Twilio signature")
    return form


SignedForm = Annotated[dict[str, str], Depends(signed_form)]


def twiml(response: VoiceResponse) -> Response:
    return Response(str(response), media_type="application/xml")


def say_and_hang_up(text: str) -> Response:
    response = VoiceResponse()
    response.say(text)
    response.hangup()
    return twiml(response)


async def stream_to_bridge(settings: Settings, sessions: async_sessionmaker[AsyncSession], form: dict[str, str], *,
                           user_id: uuid.UUID | None, **params: str) -> Response:
    """TwiML streaming this call to the bridge. Twilio carries only a one-time ticket; what the call
    is (whose, its greeting, why we placed it) stays in the database (core.streams)."""
    ticket = await issue_ticket(sessions, call_sid=form.get("CallSid", ""), user_id=user_id, params={
        "from": form.get("From", ""), "to": form.get("To", ""), "direction": "inbound", **params})
    connect = Connect()
    connect.stream(url=settings.media_stream_url).parameter(name="ticket", value=ticket)
    response = VoiceResponse()
    response.append(connect)
    return twiml(response)


@router.post("/voice")
async def voice(form: SignedForm, settings: SettingsDep, sessions: SessionsDep, temporal: TemporalDep) -> Response:
    call_sid, to = form.get("CallSid", ""), form.get("To", "")
    with log_context(call_id=call_sid):
        if to == settings.hotline_number:
            line = await hotline.answer_call(settings, sessions, temporal, form)
            if line.end_call:
                return say_and_hang_up(line.text)
            return await stream_to_bridge(settings, sessions, form, user_id=None, greeting=line.text)
        async with sessions() as session:
            user = (await session.execute(
                select(User).join(PhoneNumber, PhoneNumber.user_id == User.id)
                .where(PhoneNumber.e164 == to, PhoneNumber.state == "assigned"))).scalar_one_or_none()
        if user is None:
            log.info("call %s to unknown number %s", call_sid, to)
            return say_and_hang_up(UNKNOWN_NUMBER)
        with log_context(user_id=str(user.id)):
            attestation = form.get("StirVerstat", "")
            trust = classify(user, form.get("From", ""), attestation)
            if trust != CallerTrust.MESSAGE:  # a message is taken without the agent
                await _start_waking(temporal, user.id)
            log.info("call %s for user %s (%s, caller ID %s): streaming to the bridge", call_sid, user.id,
                     trust.value, attestation or "unattested")
            return await stream_to_bridge(settings, sessions, form, user_id=user.id, trust=trust.value,
                                          attestation=attestation)


async def _start_waking(temporal: TemporalDep, user_id: uuid.UUID) -> None:
    """Ask for the agent now and don't wait: the greeting plays while it wakes."""
    if temporal is None:
        log.warning("Temporal unreachable: the agent will be woken by the first question")
        return
    try:
        await temporal.get_workflow_handle(workflow_id(user_id)).start_update(
            AgentLifecycleWorkflow.ensure_awake, wait_for_stage=WorkflowUpdateStage.ACCEPTED)
    except RPCError as error:
        log.warning("could not start waking agent of %s: %s", user_id, error)


@router.post("/outbound")
async def outbound(request: Request, form: SignedForm, settings: SettingsDep, sessions: SessionsDep,
                   temporal: TemporalDep) -> Response:
    """A call the platform placed (reminder, call-back) or handed off was answered: stream it to the bridge."""
    try:
        purpose = settings.keyring.open(TokenKind.PURPOSE, request.query_params.get("purpose", ""),
                                        audience=PURPOSE_AUDIENCE)
        user_id = uuid.UUID(purpose["user"])
    except (InvalidToken, KeyError, ValueError) as error:
        log.warning("outbound call with a bad purpose token: %s", error)
        return say_and_hang_up(CALL_FAILED)
    with log_context(call_id=form.get("CallSid", ""), user_id=str(user_id)):
        await _start_waking(temporal, user_id)
        return await stream_to_bridge(settings, sessions, form, user_id=user_id,
                                      direction=purpose.get("direction", "outbound"),
                                      greeting=purpose.get("greeting", ""), purpose=purpose.get("purpose", ""))
