"""Twilio webhooks. Every request must carry a valid X-Twilio-Signature for the URL Twilio called."""

from __future__ import annotations

import logging
import uuid
from xml.sax.saxutils import escape, quoteattr

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from sqlalchemy import select
from temporalio.client import WorkflowUpdateStage
from temporalio.service import RPCError
from twilio.request_validator import RequestValidator

from api import hotline
from core import tokens
from core.logs import log_context
from core.models import PhoneNumber, User
from core.settings import Settings
from workflows.agent_lifecycle import AgentLifecycleWorkflow, workflow_id

log = logging.getLogger(__name__)
router = APIRouter(prefix="/twilio")

STREAM_TOKEN_TTL_S = 120.0  # Twilio connects the stream within seconds of our answer
UNKNOWN_NUMBER = "Sorry, this number is not in service. Goodbye."


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


async def signed_form(request: Request) -> dict[str, str]:
    settings: Settings = request.app.state.settings
    form = {k: str(v) for k, v in (await request.form()).items()}
    validator = RequestValidator(settings.twilio_auth_token.get_secret_value())
    if not validator.validate(public_url(request, settings), form, request.headers.get("x-twilio-signature", "")):
        log.warning("rejected unsigned or mis-signed Twilio request to %s", request.url.path)
        raise HTTPException(status_code=403, detail="invalid Twilio signature")
    return form


def twiml(body: str) -> Response:
    return Response(f'<?xml version="1.0" encoding="UTF-8"?><Response>{body}</Response>', media_type="application/xml")


def say_and_hang_up(text: str) -> Response:
    return twiml(f"<Say>{escape(text)}</Say><Hangup/>")


def connect_stream(settings: Settings, parameters: dict[str, str]) -> Response:
    params = "".join(f"<Parameter name={quoteattr(k)} value={quoteattr(v)}/>" for k, v in parameters.items())
    return twiml(f"<Connect><Stream url={quoteattr(settings.media_stream_url)}>{params}</Stream></Connect>")


def stream_to_bridge(settings: Settings, form: dict[str, str], **claims: object) -> Response:
    """TwiML streaming this call to the bridge, with a one-time token saying what the call is."""
    token = tokens.sign({"kind": "stream", "call": form.get("CallSid", ""), "from": form.get("From", ""),
                         "to": form.get("To", ""), "direction": "inbound", **claims},
                        settings.platform_secret.get_secret_value(), ttl_s=STREAM_TOKEN_TTL_S)
    return connect_stream(settings, {"token": token})


@router.post("/voice")
async def voice(request: Request) -> Response:
    form = await signed_form(request)
    settings: Settings = request.app.state.settings
    call_sid, to = form.get("CallSid", ""), form.get("To", "")
    with log_context(call_id=call_sid):
        if to == settings.hotline_number:
            return await _hotline(request, form)
        async with request.app.state.sessions() as session:
            user = (await session.execute(
                select(User).join(PhoneNumber, PhoneNumber.user_id == User.id)
                .where(PhoneNumber.e164 == to, PhoneNumber.state == "assigned"))).scalar_one_or_none()
        if user is None:
            log.info("call %s to unknown number %s", call_sid, to)
            return say_and_hang_up(UNKNOWN_NUMBER)
        with log_context(user_id=str(user.id)):
            await _start_waking(request, user.id)
            log.info("call %s for user %s: streaming to the bridge", call_sid, user.id)
            return stream_to_bridge(settings, form, user=str(user.id))


async def _hotline(request: Request, form: dict[str, str]) -> Response:
    settings: Settings = request.app.state.settings
    think_url, line = await hotline.answer_call(request, form)
    if line.end_call:
        return say_and_hang_up(line.text)
    return stream_to_bridge(settings, form, greeting=line.text, think_url=think_url, hotline=True)


async def _start_waking(request: Request, user_id: uuid.UUID) -> None:
    """Ask for the agent now and don't wait: the greeting plays while it wakes."""
    client = request.app.state.temporal
    if client is None:
        log.warning("Temporal unreachable: the agent will be woken by the first question")
        return
    try:
        await client.get_workflow_handle(workflow_id(user_id)).start_update(
            AgentLifecycleWorkflow.ensure_awake, wait_for_stage=WorkflowUpdateStage.ACCEPTED)
    except RPCError as error:
        log.warning("could not start waking agent of %s: %s", user_id, error)


@router.post("/outbound")
async def outbound(request: Request) -> Response:
    """A call the platform placed (reminder, call-back) was answered: stream it to the bridge."""
    form = await signed_form(request)
    settings: Settings = request.app.state.settings
    try:
        purpose = tokens.verify(request.query_params.get("purpose", ""), settings.platform_secret.get_secret_value(),
                                kind="purpose")
    except tokens.InvalidToken as error:
        log.warning("outbound call with a bad purpose token: %s", error)
        return say_and_hang_up("Sorry, something went wrong with this call. Goodbye.")
    call_sid = form.get("CallSid", "")
    with log_context(call_id=call_sid, user_id=purpose["user"]):
        await _start_waking(request, uuid.UUID(purpose["user"]))
        return stream_to_bridge(settings, form, user=purpose["user"], direction=purpose.get("direction", "outbound"),
                                greeting=purpose["greeting"], prompt=purpose["prompt"])
