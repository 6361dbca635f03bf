"""Twilio webhooks. Every request must carry a valid X-Twilio-Signature for the URL Twilio called,
and its form is at most MAX_FORM_BYTES (Twilio's are a few kilobytes)."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, TypeVar
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import WorkflowUpdateStage
from temporalio.service import RPCError
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import Connect, VoiceResponse

from activities.delivery import CallProgress
from activities.integrations.actions import PendingActions, reply_of
from activities.texts import InboundText
from api.deps import CredentialsDep, LimiterDep, SessionsDep, SettingsDep, TelephonyDep, TemporalDep
from api.routes import hotline
from core.callbacks import PURPOSE_AUDIENCE
from core.callers import CallerTrust, classify
from core.db import transaction
from core.limits import Limit, Refusal
from core.logs import log_context
from core.metrics import WEBHOOK_REJECTIONS
from core.message_taking import Taken, pass_message_on
from core.models import BlockedNumber, Conversation, Message, PhoneNumber, User, utcnow
from core.ports import MAX_MEDIA
from core.settings import Settings
from core.streams import issue_ticket
from core.texts import MAX_TEXT_CHARS, Keyword, keyword
from core.tokens import InvalidToken, TokenKind
from core.tracing import current_traceparent
from core.usage import UsageKind, record_usage, sms_segments
from workflows.agent_lifecycle import AgentLifecycleWorkflow, workflow_id
from workflows.delivery import DeliveryWorkflow
from workflows.delivery import workflow_id as delivery_workflow_id
from workflows.sms_conversation import SmsConversationInput, SmsConversationWorkflow
from workflows.sms_conversation import workflow_id as sms_workflow_id

log = logging.getLogger(__name__)
router = APIRouter(prefix="/twilio")

MAX_FORM_BYTES = 64 * 1024
UNKNOWN_NUMBER = "Sorry, this number is not in service. Goodbye."
HOTLINE_TEXT = "This is DeepClaw's setup line: call this number to get your own assistant."
TEXT_PASSED_ON = "Thanks, I've passed your message on."
TOO_MANY_CALLS = "Sorry, there have been too many calls from your number. Please try again later. Goodbye."
SUSPENDED_CALL = "Sorry, this number's service is paused. Goodbye."
SUSPENDED_TEXT = "This DeepClaw number's service is paused; your text was not passed on."
TEXT_NOT_PASSED_ON = "Sorry, I can't pass on any more messages right now. Please try again later."
# Twilio's order of delivery states: a late callback never takes a text back to an earlier one.
DELIVERY_RANK = {"pending": 0, "accepted": 0, "queued": 0, "sending": 1, "sent": 2, "undelivered": 3, "failed": 3,
                 "delivered": 4, "read": 5}
CALL_FAILED = "Sorry, something went wrong with this call. Goodbye."
# After the stream: heard only if the bridge ends it with the call still up (it lost its voice
# agent, or its process died). Every other end hangs up through Twilio's API or is the caller's.
LINE_LOST = "Sorry, we lost the connection on our side. Please call again in a minute. Goodbye."


class TwilioForm(BaseModel):
    """Fields every Twilio webhook carries; the rest of the form is ignored."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")
    from_: str = Field("", alias="From", max_length=64)
    to: str = Field("", alias="To", max_length=64)


class SmsForm(TwilioForm):
    message_sid: str = Field(alias="MessageSid", min_length=1, max_length=64)
    body: str = Field("", alias="Body", max_length=MAX_TEXT_CHARS)
    num_media: int = Field(0, alias="NumMedia", ge=0, le=MAX_MEDIA)
    opt_out: str = Field("", alias="OptOutType", max_length=16)  # Twilio's own STOP / START / HELP handling


class StatusForm(BaseModel):
    model_config = ConfigDict(extra="ignore")
    MessageSid: str = Field(min_length=1, max_length=64)
    MessageStatus: str = Field(max_length=16)


class CallForm(TwilioForm):
    call_sid: str = Field("", alias="CallSid", max_length=64)
    attestation: str = Field("", alias="StirVerstat", max_length=32)  # caller ID attestation (A, B, C)
    status: str = Field("", alias="CallStatus", max_length=16)
    answered_by: str = Field("", alias="AnsweredBy", max_length=32)  # with answering-machine detection

    @property
    def machine(self) -> bool:
        return self.answered_by.startswith("machine") or self.answered_by == "fax"


FormT = TypeVar("FormT", bound=BaseModel)


def public_url(request: Request, settings: Settings) -> str:
    """The URL Twilio signed: the configured public base. Without one (a local platform), the URL
    as this server was reached; X-Forwarded-Proto counts only from a configured proxy (uvicorn's
    forwarded_allow_ips), and X-Forwarded-Host never: a client cannot pick the URL it is checked against."""
    base = (settings.public_base_url or f"{request.url.scheme}://{request.url.netloc}").rstrip("/")
    query = f"?{request.url.query}" if request.url.query else ""
    return f"{base}{request.url.path}{query}"


async def signed_form(request: Request, settings: SettingsDep) -> dict[str, str]:
    body = await request.body()  # bounded by core.bounded.BodyLimit (api/app.py)
    form = dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
    validator = RequestValidator(settings.twilio_auth_token.get_secret_value())
    if not validator.validate(public_url(request, settings), form, request.headers.get("x-twilio-signature", "")):
        log.warning("rejected unsigned or mis-signed Twilio request to %s", request.url.path)
        WEBHOOK_REJECTIONS.labels(reason="bad_signature").inc()
        raise HTTPException(status_code=403, detail="invalid Twilio signature")
    return form


SignedForm = Annotated[dict[str, str], Depends(signed_form)]


def parsed(model: type[FormT], form: dict[str, str]) -> FormT:
    """The form as `model`, or 400 naming the fields that are wrong."""
    try:
        return model.model_validate(form)
    except ValidationError as error:
        fields = sorted({".".join(str(part) for part in e["loc"]) for e in error.errors()})
        WEBHOOK_REJECTIONS.labels(reason="malformed").inc()
        raise HTTPException(status_code=400, detail=f"bad fields: {', '.join(fields)}") from None


async def signed_call(form: SignedForm) -> CallForm:
    return parsed(CallForm, form)


SignedCall = Annotated[CallForm, Depends(signed_call)]


def twiml(response: object) -> Response:
    return Response(str(response), media_type="application/xml")


def say_and_hang_up(text: str) -> Response:
    response = VoiceResponse()
    response.say(text)
    response.hangup()
    return twiml(response)


async def stream_to_bridge(settings: Settings, sessions: async_sessionmaker[AsyncSession], call: CallForm, *,
                           user_id: uuid.UUID | None, **params: str) -> Response:
    """TwiML streaming this call to the bridge, then an apology (LINE_LOST). Twilio carries only a
    one-time ticket; what the call is (whose, its greeting, why we placed it) stays in the database
    (core.streams)."""
    ticket = await issue_ticket(sessions, call_sid=call.call_sid, user_id=user_id, params={
        "from": call.from_, "to": call.to, "direction": "inbound", **params})
    connect = Connect()
    stream = connect.stream(url=settings.media_stream_url)
    stream.parameter(name="ticket", value=ticket)
    for name, value in current_traceparent().items():  # the bridge continues this request's trace
        stream.parameter(name=name, value=value)
    response = VoiceResponse()
    response.append(connect)
    response.say(LINE_LOST)
    response.hangup()
    return twiml(response)


async def is_blocked(sessions: async_sessionmaker[AsyncSession], number: str) -> bool:
    """Whether an operator blocked this calling number (everywhere on the platform)."""
    async with sessions() as session:
        return await session.get(BlockedNumber, number) is not None


def rejected() -> Response:
    response = VoiceResponse()
    response.reject()
    return twiml(response)


async def user_of_number(sessions: async_sessionmaker[AsyncSession], number: str) -> User | None:
    """The user a platform number is assigned to."""
    async with sessions() as session:
        return (await session.execute(
            select(User).join(PhoneNumber, PhoneNumber.user_id == User.id)
            .where(PhoneNumber.e164 == number, PhoneNumber.state == "assigned"))).scalar_one_or_none()


@router.post("/voice")
async def voice(call: SignedCall, settings: SettingsDep, sessions: SessionsDep, temporal: TemporalDep,
                limiter: LimiterDep) -> Response:
    with log_context(call_id=call.call_sid):
        if refusal := await limiter.acquire(Limit.INBOUND_CALL, call.from_):
            log.warning("call %s from %s not taken: %s", call.call_sid, call.from_, refusal)
            WEBHOOK_REJECTIONS.labels(reason="sender_limit").inc()
            return say_and_hang_up(TOO_MANY_CALLS)
        if await is_blocked(sessions, call.from_):
            log.warning("call %s from blocked %s rejected", call.call_sid, call.from_)
            WEBHOOK_REJECTIONS.labels(reason="blocked").inc()
            return rejected()
        if call.to == settings.hotline_number:
            line = await hotline.answer_call(settings, sessions, temporal, caller=call.from_, call_sid=call.call_sid)
            if line.end_call:
                return say_and_hang_up(line.text)
            return await stream_to_bridge(settings, sessions, call, user_id=None, greeting=line.text)
        user = await user_of_number(sessions, call.to)
        if user is None:
            log.info("call %s to unknown number %s", call.call_sid, call.to)
            return say_and_hang_up(UNKNOWN_NUMBER)
        with log_context(user_id=str(user.id)):
            if user.suspended_at is not None:
                log.info("call %s for suspended user %s: paused", call.call_sid, user.id)
                return say_and_hang_up(SUSPENDED_CALL)
            trust = classify(user, call.from_, call.attestation)
            if trust != CallerTrust.MESSAGE:  # a message is taken without the agent
                await start_waking(temporal, user.id)
            log.info("call %s for user %s (%s, caller ID %s): streaming to the bridge", call.call_sid, user.id,
                     trust.value, call.attestation or "unattested")
            return await stream_to_bridge(settings, sessions, call, user_id=user.id, trust=trust.value,
                                          attestation=call.attestation)


async def start_waking(temporal: TemporalDep, user_id: uuid.UUID) -> None:
    """Ask for the agent now and don't wait: the greeting plays (or the text is read) while it wakes."""
    if temporal is None:
        log.warning("Temporal unreachable: the agent will be woken by the first question")
        return
    try:
        await temporal.get_workflow_handle(workflow_id(user_id)).start_update(
            AgentLifecycleWorkflow.ensure_awake, wait_for_stage=WorkflowUpdateStage.ACCEPTED)
    except RPCError as error:
        log.warning("could not start waking agent of %s: %s", user_id, error)


@router.post("/outbound")
async def outbound(call: SignedCall, settings: SettingsDep, sessions: SessionsDep, temporal: TemporalDep,
                   purpose: str = "") -> Response:
    """A call the platform placed (reminder, call-back) or handed off was answered: stream it to the bridge."""
    try:
        claims = settings.keyring.open(TokenKind.PURPOSE, purpose, audience=PURPOSE_AUDIENCE)
        user_id = uuid.UUID(claims["user"])
    except (InvalidToken, KeyError, ValueError) as error:
        log.warning("outbound call with a bad purpose token: %s", error)
        return say_and_hang_up(CALL_FAILED)
    with log_context(call_id=call.call_sid, user_id=str(user_id)):
        if call.machine and claims.get("delivery"):
            # A voicemail box: hang up; the delivery sends a text instead.
            log.info("call %s reached %s: hanging up, the delivery will text", call.call_sid, call.answered_by)
            await _tell_delivery(temporal, claims["delivery"], CallProgress(answered_by=call.answered_by))
            response = VoiceResponse()
            response.hangup()
            return twiml(response)
        await start_waking(temporal, user_id)
        return await stream_to_bridge(settings, sessions, call, user_id=user_id,
                                      direction=claims.get("direction", "outbound"),
                                      greeting=claims.get("greeting", ""), purpose=claims.get("purpose", ""))


@router.post("/calls/status")
async def call_status(call: SignedCall, temporal: TemporalDep, delivery: uuid.UUID) -> Response:
    """The status callback of a call a delivery placed: its final status (and who answered)."""
    await _tell_delivery(temporal, str(delivery), CallProgress(status=call.status or None,
                                                               answered_by=call.answered_by or None))
    return Response(status_code=204)


async def _tell_delivery(temporal: TemporalDep, delivery: str, progress: CallProgress) -> None:
    """Signals the delivery; if Temporal is unreachable it asks the provider itself a little later."""
    if temporal is None:
        log.warning("Temporal unreachable: delivery %s will poll for its call's status", delivery)
        return
    try:
        await temporal.get_workflow_handle(delivery_workflow_id(uuid.UUID(delivery))).signal(
            DeliveryWorkflow.call_progress, progress)
    except (RPCError, ValueError) as error:
        log.warning("could not tell delivery %s about its call: %s", delivery, error)


def too_many_texts(refusal: Refusal) -> str:
    return (f"Sorry, you've sent more texts than I can take just now; texts you send before "
            f"{refusal.retry_at:%H:%M} UTC won't be read. Please try again after that.")


def message_twiml(text: str | None = None) -> Response:
    response = MessagingResponse()
    if text:
        response.message(text)
    return twiml(response)


async def signed_sms(form: SignedForm, telephony: TelephonyDep) -> tuple[SmsForm, list[str]]:
    """The text and its attachments' URLs: only ones on the provider's account (whatever else a
    form names is dropped, so a link the platform makes never fetches from anywhere else)."""
    text = parsed(SmsForm, form)
    media = [form.get(f"MediaUrl{n}", "") for n in range(text.num_media)]
    kept = [url for url in media if telephony.owns_media_url(url)]
    if len(kept) < len(media):
        log.warning("text %s: %d attachment URL(s) not the provider's, dropped: %s", text.message_sid,
                    len(media) - len(kept), ", ".join(url[:80] for url in media if url not in kept))
    return text, kept


SignedSms = Annotated[tuple[SmsForm, list[str]], Depends(signed_sms)]


@router.post("/sms")
async def sms(signed: SignedSms, settings: SettingsDep, sessions: SessionsDep, temporal: TemporalDep,
              telephony: TelephonyDep, limiter: LimiterDep, credentials: CredentialsDep) -> Response:
    """A text to a platform number. Answered at once (empty TwiML, or a short reply of the platform's
    own); the owner's texts go, in order, to their SmsConversationWorkflow, which answers by REST. The
    owner's "YES 4821" / "NO 4821" to a confirmation text is answered here (a pending action carried
    out or declined, activities/integrations/actions.py) and never reaches the agent."""
    text, media = signed
    if refusal := await limiter.acquire(Limit.INBOUND_TEXT, text.from_):
        log.warning("text %s from %s not taken: %s", text.message_sid, text.from_, refusal)
        WEBHOOK_REJECTIONS.labels(reason="sender_limit").inc()
        # One polite reply per window, never silence; then nothing more until the window passes.
        noticed = await limiter.acquire(Limit.OVER_LIMIT_NOTICE, f"text:{text.from_}")
        return message_twiml(None if noticed else too_many_texts(refusal))
    if await is_blocked(sessions, text.from_):
        log.warning("text %s from blocked %s dropped", text.message_sid, text.from_)
        WEBHOOK_REJECTIONS.labels(reason="blocked").inc()
        return message_twiml()
    if text.to == settings.hotline_number:
        return message_twiml(HOTLINE_TEXT)
    user = await user_of_number(sessions, text.to)
    if user is None:
        await _record_unrouted(sessions, text)
        log.info("text %s to unassigned number %s recorded and ignored", text.message_sid, text.to)
        return message_twiml()
    with log_context(user_id=str(user.id)):
        if user.suspended_at is not None:
            log.info("text %s for suspended user %s: not passed on", text.message_sid, user.id)
            return message_twiml(SUSPENDED_TEXT)
        if text.from_ != user.phone_e164:  # owner-only: someone else's text is a message for the user
            attached = f" (with {len(media)} attachment{'s' if len(media) > 1 else ''}, not passed on)" if media else ""
            taken = await pass_message_on(sessions, telephony, limiter, user_id=user.id, sender=text.from_,
                                          words=text.body + attached, what="Text")
            return message_twiml(TEXT_PASSED_ON if taken == Taken.PASSED_ON else TEXT_NOT_PASSED_ON)
        if said := keyword(text.opt_out) or keyword(text.body):
            await _opt(sessions, user.id, said)
            return message_twiml()  # Twilio (and the carrier stand-in) answers these words itself
        if user.sms_opted_out_at is not None:
            log.info("text %s from opted-out user %s: no answer can be sent", text.message_sid, user.id)
            return message_twiml()
        if not media and (reply := reply_of(text.body)) is not None:
            if (answer := await PendingActions(credentials, sessions).decide(user.id, reply)) is not None:
                await _record_confirmation(sessions, user.id, text, answer)
                return message_twiml(answer)
        return await _to_conversation(settings, temporal, InboundText(
            message_sid=text.message_sid, user_id=user.id, from_=text.from_, to=text.to, body=text.body,
            media=media, received_at=utcnow()))


async def _record_confirmation(sessions: async_sessionmaker[AsyncSession], user_id: uuid.UUID, text: SmsForm,
                               answer: str) -> None:
    """The owner's confirmation and the platform's answer, billed like any text in and out."""
    async with transaction(sessions) as session:
        await record_usage(session, user_id=user_id, kind=UsageKind.SMS_SEGMENTS_IN,
                           quantity=sms_segments(text.body), source=f"sms:{text.message_sid}")
        await record_usage(session, user_id=user_id, kind=UsageKind.SMS_SEGMENTS_OUT,
                           quantity=sms_segments(answer), source=f"sms:{text.message_sid}:confirmation")


async def _to_conversation(settings: Settings, temporal: TemporalDep, text: InboundText) -> Response:
    if temporal is None:
        log.error("Temporal unreachable: text %s not taken (Twilio may retry it)", text.message_sid)
        return Response(status_code=503)
    try:
        await temporal.start_workflow(
            SmsConversationWorkflow.run, SmsConversationInput(user_id=text.user_id),
            id=sms_workflow_id(text.user_id), task_queue=settings.temporal_task_queue,
            start_signal="text_received", start_signal_args=[text])
    except RPCError as error:
        log.error("text %s not taken: %s", text.message_sid, error)
        return Response(status_code=503)
    return message_twiml()


async def _opt(sessions: async_sessionmaker[AsyncSession], user_id: uuid.UUID, said: Keyword) -> None:
    if said == Keyword.HELP:
        return
    async with transaction(sessions) as session:
        await session.execute(update(User).where(User.id == user_id).values(
            sms_opted_out_at=utcnow() if said == Keyword.STOP else None))
    log.info("user %s opted %s texts and calls", user_id, "out of" if said == Keyword.STOP else "back into")


async def _record_unrouted(sessions: async_sessionmaker[AsyncSession], text: SmsForm) -> None:
    async with transaction(sessions) as session:
        conversation = Conversation(kind="sms", direction="inbound", from_number=text.from_, to_number=text.to)
        session.add(conversation)
        await session.flush()
        await session.execute(insert(Message).values(
            id=uuid.uuid4(), conversation_id=conversation.id, role="user", content=text.body,
            provider_sid=text.message_sid, status="ignored", created_at=utcnow()).on_conflict_do_nothing())


@router.post("/sms/status")
async def sms_status(form: SignedForm, sessions: SessionsDep, message: uuid.UUID | None = None) -> Response:
    """Twilio's delivery status callback for a text the platform sent (`message`: its row, named in
    the callback URL because the callback can arrive before the send's reply gave us the SID)."""
    status = parsed(StatusForm, form)
    new = status.MessageStatus.lower()
    which = Message.id == message if message is not None else Message.provider_sid == status.MessageSid
    async with transaction(sessions) as session:
        message_row = (await session.execute(select(Message).where(which).with_for_update())).scalar_one_or_none()
        if message_row is not None and DELIVERY_RANK.get(new, 0) >= DELIVERY_RANK.get(message_row.status or "", 0):
            message_row.status = new
    return Response(status_code=204)
