"""The side effects of reaching a user (workflows/delivery.py): each delivery's row written first
(a reminder's occurrence at most once), the user's opt-out, number, time zone and quiet hours
read at send time, the call placed with answering-machine detection, the text sent; every step
idempotent on the row, so retries never send twice."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.callbacks import agent_call_url
from core.db import transaction
from core.models import Channel, Delivery, DeliveryOutcome, FallbackReason, PhoneNumber, User, utcnow
from core.billing import load_plan, over_cap
from core.usage import UsageKind, record_usage, sms_segments
from core.ports import CallState, Telephony
from core.settings import Settings
from core.timezones import in_quiet_hours, zone_of_user

OPTED_OUT = "the user opted out of texts and calls from this number (they texted STOP; START undoes it)"
NO_NUMBER = "the user has no phone number to send from"
SUSPENDED = "the account is suspended by an operator: nothing is sent until it is resumed"
FINAL_CALL_STATUSES = ("completed", "busy", "no-answer", "failed", "canceled")


class DeliveryRequest(BaseModel):
    """A text (`text`) or a call (opening with `greeting`, about `purpose`; `text` is then what a
    call that does not reach the user sends instead)."""

    delivery_id: uuid.UUID
    user_id: uuid.UUID
    channel: Channel
    text: str
    greeting: str | None = None
    purpose: str | None = None
    reminder_id: uuid.UUID | None = None
    occurrence: int | None = None


class DeliveryPlan(BaseModel):
    channel: Channel  # what to try: a requested call in quiet hours is a text
    fallback_reason: FallbackReason | None = None
    refused: str | None = None  # why nothing may be sent
    finished: DeliveryOutcome | None = None  # this delivery (or its occurrence) was done already


class DeliveryEnd(BaseModel):
    delivery_id: uuid.UUID
    outcome: DeliveryOutcome
    channel: Channel | None = None
    fallback_reason: FallbackReason | None = None
    detail: str | None = None


class CallProgress(BaseModel):
    """What the call status callback, or the TwiML request of a machine-answered call, reported."""

    status: str | None = None
    answered_by: str | None = None


def fallback_for(call: CallProgress) -> FallbackReason | None:
    """None: the user was reached by the call; else why it becomes a text."""
    if call.answered_by and (call.answered_by.startswith("machine") or call.answered_by == "fax"):
        return FallbackReason.VOICEMAIL
    return {"completed": None, "busy": FallbackReason.BUSY, "no-answer": FallbackReason.NO_ANSWER}.get(
        call.status or "", FallbackReason.CALL_FAILED)


def delivery_workflow_id(delivery_id: uuid.UUID) -> str:
    return f"delivery-{delivery_id}"


def call_status_url(settings: Settings, delivery_id: uuid.UUID) -> str:
    return f"{settings.api_base_url}/twilio/calls/status?delivery={delivery_id}"


class DeliveryActivities:
    def __init__(self, telephony: Telephony, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        self.telephony = telephony
        self.sessions = sessions
        self.settings = settings

    @activity.defn
    async def open_delivery(self, request: DeliveryRequest, now: datetime) -> DeliveryPlan:
        """Writes the delivery's row (once) and says what may be sent at `now` (the workflow's time)."""
        async with transaction(self.sessions) as session:
            await session.execute(insert(Delivery).values(
                id=request.delivery_id, user_id=request.user_id, reminder_id=request.reminder_id,
                occurrence=request.occurrence, requested=request.channel, text=request.text,
                outcome=DeliveryOutcome.PENDING, created_at=utcnow()).on_conflict_do_nothing())
            row = await session.get(Delivery, request.delivery_id)
            if row is None:  # another delivery of this reminder's occurrence exists
                return DeliveryPlan(channel=request.channel, finished=DeliveryOutcome.FAILED,
                                    refused="this occurrence was delivered by another run")
            if row.outcome != DeliveryOutcome.PENDING:
                return DeliveryPlan(channel=request.channel, finished=DeliveryOutcome(row.outcome))
            user, number = await _user_and_number(session, request.user_id)
        if user is None or number is None:
            return DeliveryPlan(channel=request.channel, refused=NO_NUMBER)
        if user.sms_opted_out_at is not None:
            return DeliveryPlan(channel=request.channel, refused=OPTED_OUT)
        if user.suspended_at is not None:
            return DeliveryPlan(channel=request.channel, refused=SUSPENDED)
        if request.channel == Channel.CALL:
            zone = zone_of_user(user, self.settings.default_time_zone)
            async with self.sessions() as session:
                if await over_cap(session, load_plan(self.settings.price_plan), user, zone, now):
                    return DeliveryPlan(channel=Channel.SMS, fallback_reason=FallbackReason.MONTHLY_CAP)
            quiet = (user.quiet_from, user.quiet_until) if user.quiet_from and user.quiet_until \
                else self.settings.quiet_hours_range
            if in_quiet_hours(now, zone, quiet):
                return DeliveryPlan(channel=Channel.SMS, fallback_reason=FallbackReason.QUIET_HOURS)
        return DeliveryPlan(channel=request.channel)

    @activity.defn
    async def place_delivery_call(self, request: DeliveryRequest) -> str:
        """Rings the user from their number (once: a retry returns the call already placed); when they
        answer, their agent opens with the greeting. Machine detection tells a voicemail box apart."""
        row, user, number = await self._line(request)
        if row.call_sid:
            return row.call_sid
        url = agent_call_url(self.settings, user_id=user.id, greeting=request.greeting or request.text,
                             purpose=request.purpose or "", delivery=str(request.delivery_id))
        sid = await self.telephony.place_call(
            to=user.phone_e164, from_=number, url=url, status_callback=call_status_url(self.settings, request.delivery_id),
            machine_detection=True, ring_timeout_s=self.settings.call_ring_timeout_s)
        await self._set(request.delivery_id, call_sid=sid)
        return sid

    @activity.defn
    async def call_state(self, call_sid: str) -> CallProgress:
        """The provider's word on a call whose status callback has not come."""
        state: CallState = await self.telephony.call_state(call_sid)
        final = state.status in FINAL_CALL_STATUSES
        return CallProgress(status=state.status if final else None, answered_by=state.answered_by)

    @activity.defn
    async def send_delivery_text(self, request: DeliveryRequest) -> str:
        """Texts the user (once: a retry returns the text already sent); refuses an opted-out user."""
        row, user, number = await self._line(request)
        if row.message_sid:
            return row.message_sid
        sid = await self.telephony.send_sms(to=user.phone_e164, from_=number, body=request.text)
        async with transaction(self.sessions) as session:
            await session.execute(update(Delivery).where(Delivery.id == request.delivery_id).values(message_sid=sid))
            await record_usage(session, user_id=user.id, kind=UsageKind.SMS_SEGMENTS_OUT,
                               quantity=sms_segments(request.text), source=f"sms:{sid}")
        return sid

    @activity.defn
    async def finish_delivery(self, end: DeliveryEnd) -> None:
        await self._set(end.delivery_id, outcome=end.outcome, channel=end.channel, fallback_reason=end.fallback_reason,
                        detail=(end.detail or "")[:300] or None, finished_at=utcnow())

    async def _line(self, request: DeliveryRequest) -> tuple[Delivery, User, str]:
        """The delivery's row, and the user and number it may go to right now (opted out since?)."""
        async with self.sessions() as session:
            row = await session.get(Delivery, request.delivery_id)
            user, number = await _user_and_number(session, request.user_id)
        if row is None:
            raise ApplicationError(f"delivery {request.delivery_id} is gone", type="NoNumber", non_retryable=True)
        if user is None or number is None:
            raise ApplicationError(NO_NUMBER, type="NoNumber", non_retryable=True)
        if user.sms_opted_out_at is not None:
            raise ApplicationError(OPTED_OUT, type="OptedOut", non_retryable=True)
        if user.suspended_at is not None:
            raise ApplicationError(SUSPENDED, type="Suspended", non_retryable=True)
        return row, user, number

    async def _set(self, delivery_id: uuid.UUID, **values: object) -> None:
        async with transaction(self.sessions) as session:
            await session.execute(update(Delivery).where(Delivery.id == delivery_id).values(**values))

    def all(self) -> list[object]:
        return [self.open_delivery, self.place_delivery_call, self.call_state, self.send_delivery_text,
                self.finish_delivery]


async def _user_and_number(session: AsyncSession, user_id: uuid.UUID) -> tuple[User | None, str | None]:
    row = (await session.execute(
        select(User, PhoneNumber.e164).outerjoin(
            PhoneNumber, (PhoneNumber.user_id == User.id) & (PhoneNumber.state == "assigned"))
        .where(User.id == user_id))).one_or_none()
    return (row[0], row[1]) if row else (None, None)
