"""The warm pool of phone numbers: count, buy idempotently, claim exclusively."""

from __future__ import annotations

import uuid

from pydantic import BaseModel
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.db import transaction
from core.metrics import POOL_AVAILABLE
from core.models import PhoneNumber
from core.ports import NumberNotFound, OwnedNumber, Telephony


class BuyRequest(BaseModel):
    purchase_key: str  # the same key on every retry of one purchase
    area_code: str | None = None


class PoolNumber(BaseModel):
    e164: str
    provider_sid: str
    newly_claimed: bool = False  # this claim took it from the pool (a retried claim finds it already ours)


class NumberRelease(BaseModel):
    user_id: uuid.UUID
    to_pool: bool = True  # False: released at the provider


class ClaimRequest(BaseModel):
    user_id: uuid.UUID
    area_code: str | None = None


class NumberPoolActivities:
    def __init__(self, telephony: Telephony, sessions: async_sessionmaker[AsyncSession], *, voice_url: str,
                 sms_url: str) -> None:
        self.telephony = telephony
        self.sessions = sessions
        self.voice_url = voice_url
        self.sms_url = sms_url

    @activity.defn
    async def count_available_numbers(self, area_code: str | None) -> int:
        async with self.sessions() as session:
            query = select(func.count()).where(PhoneNumber.state == "available")
            if area_code:
                query = query.where(PhoneNumber.area_code == area_code)
            available = int((await session.execute(query)).scalar_one())
        POOL_AVAILABLE.labels(area_code=area_code or "any").set(available)  # the pool workflow counts often
        return available

    @activity.defn
    async def buy_pool_number(self, request: BuyRequest) -> PoolNumber:
        """Never buys twice for one key, even if a worker died between the purchase and the database
        write: the key is recorded with the provider (friendly name) and reconciled first."""
        async with self.sessions() as session:
            known = (await session.execute(
                select(PhoneNumber).where(PhoneNumber.purchase_key == request.purchase_key))).scalar_one_or_none()
        if known is not None:
            return PoolNumber(e164=known.e164, provider_sid=known.provider_sid)
        bought = next((n for n in await self.telephony.list_numbers() if n.friendly_name == request.purchase_key), None)
        if bought is None:
            candidates = await self.telephony.search_numbers(area_code=request.area_code, limit=1)
            if not candidates:
                raise ApplicationError(f"no numbers for sale in area {request.area_code}", type="NoNumbersForSale")
            bought = await self.telephony.buy_number(candidates[0], voice_url=self.voice_url, sms_url=self.sms_url,
                                                     friendly_name=request.purchase_key)
        await self._record(bought, request)
        return PoolNumber(e164=bought.e164, provider_sid=bought.sid)

    async def _record(self, bought: OwnedNumber, request: BuyRequest) -> None:
        async with transaction(self.sessions) as session:
            session.add(PhoneNumber(e164=bought.e164, provider_sid=bought.sid, state="available",
                                    area_code=bought.e164[2:5] if bought.e164.startswith("+1") else None,
                                    purchase_key=request.purchase_key))

    @activity.defn
    async def claim_number(self, request: ClaimRequest) -> PoolNumber | None:
        """One available number for this user, atomically; None if the pool is empty.
        Concurrent claims skip rows another transaction holds, so no number goes to two users."""
        async with transaction(self.sessions) as session:
            mine = (await session.execute(
                select(PhoneNumber).where(PhoneNumber.user_id == request.user_id))).scalar_one_or_none()
            if mine is not None:  # a retried claim returns what it claimed before
                return PoolNumber(e164=mine.e164, provider_sid=mine.provider_sid)
            query = select(PhoneNumber).where(PhoneNumber.state == "available")
            if request.area_code:  # the caller's area first (a number without one compares NULL: last)
                query = query.order_by((PhoneNumber.area_code == request.area_code).desc().nulls_last())
            number = (await session.execute(
                query.order_by(PhoneNumber.created_at).limit(1).with_for_update(skip_locked=True))).scalar_one_or_none()
            if number is None:
                return None
            number.state, number.user_id = "assigned", request.user_id
            number.assigned_at = (await session.execute(text("SELECT now()"))).scalar_one()
            return PoolNumber(e164=number.e164, provider_sid=number.provider_sid, newly_claimed=True)

    @activity.defn
    async def point_number_at_platform(self, number: PoolNumber) -> None:
        """The number's voice and SMS webhooks lead to the platform (idempotent)."""
        try:
            await self.telephony.configure_number(number.provider_sid, voice_url=self.voice_url, sms_url=self.sms_url)
        except NumberNotFound:
            await self._retire(number.e164)  # no one else should get it either
            raise ApplicationError(f"the provider no longer has {number.e164}", type="NumberGone",
                                   non_retryable=True) from None

    @activity.defn
    async def release_user_number(self, release: NumberRelease) -> str | None:
        """The user's number leaves them (their agent has long been archived): back to the pool, or
        released at the provider. Returns the number, or None if they had none. Idempotent."""
        async with self.sessions() as session:
            number = (await session.execute(
                select(PhoneNumber).where(PhoneNumber.user_id == release.user_id))).scalar_one_or_none()
        if number is None:
            return None
        if release.to_pool:
            await self.return_number(release.user_id)
        else:
            try:
                await self.telephony.release_number(number.provider_sid)
            except NumberNotFound:
                pass  # released already
            await self._retire(number.e164)
        return number.e164

    async def _retire(self, e164: str) -> None:
        async with transaction(self.sessions) as session:
            await session.execute(update(PhoneNumber).where(PhoneNumber.e164 == e164).values(
                state="releasing", user_id=None, released_at=func.now()))

    @activity.defn
    async def return_number(self, user_id: uuid.UUID) -> None:
        """Compensation: the user's number goes back to the pool, available to the next caller."""
        async with transaction(self.sessions) as session:
            number = (await session.execute(
                select(PhoneNumber).where(PhoneNumber.user_id == user_id).with_for_update())).scalar_one_or_none()
            if number is not None:
                number.state, number.user_id, number.assigned_at = "available", None, None

    @activity.defn
    async def configure_hotline(self, e164: str) -> bool:
        """Points the hotline number's voice and SMS webhooks at the platform; idempotent (True if
        it changed anything). The number must be one the account owns."""
        owned = next((n for n in await self.telephony.list_numbers() if n.e164 == e164), None)
        if owned is None:
            raise ApplicationError(f"the hotline number {e164} is not a number of this Twilio account",
                                   type="HotlineNotOwned", non_retryable=True)
        if (owned.voice_url, owned.sms_url) == (self.voice_url, self.sms_url):
            return False
        await self.telephony.configure_number(owned.sid, voice_url=self.voice_url, sms_url=self.sms_url)
        activity.logger.info("hotline %s now calls %s (voice) and %s (SMS)", e164, self.voice_url, self.sms_url)
        return True

    def all(self) -> list[object]:
        return [self.count_available_numbers, self.buy_pool_number, self.claim_number, self.point_number_at_platform,
                self.return_number, self.release_user_number, self.configure_hotline]
