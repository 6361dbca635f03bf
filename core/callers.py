"""Who may reach a user's agent: only its owner, and only as sure as the caller ID is.

Caller ID can be spoofed. Twilio's STIR/SHAKEN verdict (`StirVerstat`) says how sure the carrier is:
full attestation (TN-Validation-Passed-A) from the owner's phone is the owner. The owner's phone
without it, or another phone when the owner allows that, must say the user's PIN before the agent
may use their memory or act for them. Anyone else (and an unattested owner with no PIN) reaches a
message taker: the message is texted to the owner, the agent is never involved.
"""

from __future__ import annotations

import uuid
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db import transaction
from core.models import User
from core.tokens import Keyring, TokenKind

FULL_ATTESTATION = "TN-Validation-Passed-A"
PIN_DIGITS = range(4, 9)  # 4 to 8 digits


class CallerTrust(StrEnum):
    OWNER = "owner"  # the agent serves them at once
    PIN = "pin"  # the agent serves them once they have said the PIN
    MESSAGE = "message"  # they may leave a message for the owner


def classify(user: User, caller: str, attestation: str | None) -> CallerTrust:
    if caller == user.phone_e164 and attestation == FULL_ATTESTATION:
        return CallerTrust.OWNER
    if user.pin_digest and (caller == user.phone_e164 or user.allow_other_phones):
        return CallerTrust.PIN
    return CallerTrust.MESSAGE


class InvalidPin(ValueError):
    pass


def pin_digest(keyring: Keyring, phone: str, pin: str) -> str:
    """What is kept of a PIN: a keyed digest, bound to the user's phone (equal PINs of two users differ;
    the database alone does not reveal one)."""
    if not pin.isdigit() or len(pin) not in PIN_DIGITS:
        raise InvalidPin(f"a PIN is {PIN_DIGITS.start} to {PIN_DIGITS.stop - 1} digits")
    return keyring.tagged_digest(TokenKind.PIN, f"{phone}:{pin}")


async def set_pin(sessions: async_sessionmaker[AsyncSession], keyring: Keyring, user_id: uuid.UUID, pin: str) -> None:
    async with transaction(sessions) as session:
        phone = (await session.execute(select(User.phone_e164).where(User.id == user_id))).scalar_one()
        await session.execute(update(User).where(User.id == user_id).values(pin_digest=pin_digest(keyring, phone, pin)))


def pin_matches(keyring: Keyring, phone: str, digest: str | None, said: str) -> bool:
    return bool(digest) and keyring.matches(TokenKind.PIN, f"{phone}:{said}", digest or "")
