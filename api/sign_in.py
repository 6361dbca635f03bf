"""Signing in to the dashboard without a password: a phone number or an email, a one-time code sent
there, then a web session.

Codes are kept only as keyed digests (core.tokens, kind CODE) and are single use, short-lived and
void after a few wrong guesses; a guess is compared in constant time (`Keyring.matches`). Asking for
a code is rate-limited per address and per client. Whether an address has an account is never
revealed: a stranger's request looks the same as a user's, it just sends nothing.

The session cookie is sealed (kind SESSION: authenticated, with an expiry) and names a row in
web_sessions holding only the digest of the cookie's secret, so a session is revoked by its row
(sign out, sign out everywhere) whatever the cookie says. CSRF tokens are keyed digests of the
session (or, before sign-in, of a random pre-session cookie) sent back with every form.
"""

from __future__ import annotations

import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import phonenumbers
from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activities.onboarding.verification import new_code
from core.db import transaction
from core.limits import Limit, Refusal, UserLimiter
from core.models import SignInCode, User, WebSession, utcnow
from core.ports import Mailer, Telephony
from core.settings import Settings
from core.tokens import InvalidToken, Keyring, TokenKind

SESSION_COOKIE = "deepclaw_session"
PRE_SESSION_COOKIE = "deepclaw_pre"  # before sign-in: what the sign-in forms' CSRF tokens are bound to
SESSION_AUDIENCE = "dashboard"
DEFAULT_REGION = "US"  # a phone number typed without +country code
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")


class AddressKind(StrEnum):
    PHONE = "phone"
    EMAIL = "email"


@dataclass(frozen=True)
class Address:
    kind: AddressKind
    value: str  # E.164, or the email in lower case

    @property
    def shown(self) -> str:
        """How the code page names it: enough for its owner to recognise, no more."""
        if self.kind == AddressKind.PHONE:
            return f"the phone ending {self.value[-4:]}"
        name, _, domain = self.value.partition("@")
        return f"{name[:2]}…@{domain}"


def parse_address(text: str) -> Address:
    """A phone number (E.164, or national in the default region) or an email; ValueError saying
    what is wrong otherwise."""
    text = text.strip()
    if not text:
        raise ValueError("Enter your phone number or your email address.")
    if "@" in text:
        if len(text) > 320 or not _EMAIL.match(text):
            raise ValueError("That doesn't look like an email address.")
        return Address(AddressKind.EMAIL, text.lower())
    try:
        number = phonenumbers.parse(text, DEFAULT_REGION)
    except phonenumbers.NumberParseException:
        raise ValueError("That doesn't look like a phone number or an email address.") from None
    if not phonenumbers.is_possible_number(number):
        raise ValueError("That phone number has too few or too many digits.")
    return Address(AddressKind.PHONE, phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


SIGN_IN = "sign-in"


def change_of_address(user_id: uuid.UUID) -> str:
    """The purpose of a code proving a new phone or email for this user (it opens nothing else)."""
    return f"change|{user_id}"


def _address_digest(keyring: Keyring, address: Address, purpose: str) -> str:
    return keyring.digest(TokenKind.CODE, f"{purpose}|{address.value}")[:64]


def _guess(address: Address, code: str, purpose: str) -> str:
    return f"{purpose}|{address.value}|{code}"


def operator_address(settings: Settings, address: Address) -> str | None:
    listed = set()
    for entry in settings.operators:
        try:
            listed.add(parse_address(entry).value)
        except ValueError:
            continue  # a malformed entry grants nothing
    return address.value if address.value in listed else None


async def account_of(session: AsyncSession, address: Address) -> uuid.UUID | None:
    """The user this address signs in as: their phone, or their verified email."""
    if address.kind == AddressKind.PHONE:
        query = select(User.id).where(User.phone_e164 == address.value)
    else:
        query = select(User.id).where(func.lower(User.email) == address.value, User.email_verified.is_(True))  # type: ignore[attr-defined]
    return (await session.execute(query.limit(1))).scalar_one_or_none()


@dataclass
class CodeSender:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    telephony: Telephony
    mailer: Mailer
    limiter: UserLimiter

    async def request(self, address: Address, client: str, *, purpose: str = SIGN_IN) -> Refusal | None:
        """Sends a fresh code: to sign in, if the address has an account (or is an operator's); to
        prove a new address (`change_of_address`), always. A Refusal when a limit says no. Either way
        the caller shows the same page."""
        keyring = self.settings.keyring
        address_key = _address_digest(keyring, address, purpose)
        for kind, key in ((Limit.SIGN_IN_CLIENT, client),
                          (Limit.SIGN_IN_ADDRESS, _address_digest(keyring, address, "limit"))):
            if refusal := await self.limiter.acquire(kind, key):
                return refusal
        if purpose == SIGN_IN:
            async with self.sessions() as session:
                if not (await account_of(session, address) or operator_address(self.settings, address)):
                    return None
        code = new_code()
        async with transaction(self.sessions) as session:
            # A new code voids the ones before it: only the latest message counts.
            await session.execute(update(SignInCode).where(SignInCode.address_digest == address_key,
                                                           SignInCode.used_at.is_(None))  # type: ignore[union-attr]
                                  .values(used_at=utcnow()))
            session.add(SignInCode(address_digest=address_key, code_digest=keyring.tagged_digest(
                TokenKind.CODE, _guess(address, code, purpose)),
                expires_at=utcnow() + timedelta(seconds=self.settings.sign_in_code_ttl_s)))
        minutes = max(1, round(self.settings.sign_in_code_ttl_s / 60))
        what = "sign-in" if purpose == SIGN_IN else "verification"
        if address.kind == AddressKind.PHONE:
            await self.telephony.send_sms(to=address.value, from_=self.settings.hotline_number,
                                          body=f"Your DeepClaw {what} code is {code}. It expires in {minutes} "
                                               "minutes. Don't share it: DeepClaw never asks for it.")
        else:
            why = "sign in" if purpose == SIGN_IN else "add this address to a DeepClaw account"
            await self.mailer.send(to=address.value, subject=f"Your DeepClaw {what} code: {code}",
                                   body=f"Your DeepClaw {what} code is {code}. It expires in {minutes} minutes.\n\n"
                                        f"If you did not ask to {why}, ignore this message.")
        return None


async def redeem(settings: Settings, sessions: async_sessionmaker[AsyncSession], address: Address,
                 code: str, *, purpose: str = SIGN_IN) -> bool:
    """Whether `code` is the address's latest code for `purpose`, unused and unexpired; it is used
    up if so. Each wrong guess counts against that code."""
    keyring = settings.keyring
    code = re.sub(r"\D", "", code)
    async with transaction(sessions) as session:
        row = (await session.execute(
            select(SignInCode).where(SignInCode.address_digest == _address_digest(keyring, address, purpose),
                                     SignInCode.used_at.is_(None),  # type: ignore[union-attr]
                                     SignInCode.expires_at > utcnow())
            .order_by(SignInCode.created_at.desc()).limit(1).with_for_update())).scalar_one_or_none()  # type: ignore[attr-defined]
        if row is None:
            return False
        if keyring.matches(TokenKind.CODE, _guess(address, code, purpose), row.code_digest):
            row.used_at = utcnow()
            return True
        row.attempts += 1
        if row.attempts >= settings.sign_in_code_attempts:
            row.used_at = utcnow()  # void: ask for a new one
        return False


# ---- sessions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Viewer:
    """Who is signed in: a user, an operator, or an operator who is also a user."""

    session_id: uuid.UUID
    user_id: uuid.UUID | None
    operator: str | None
    csrf: str


def csrf_token(keyring: Keyring, basis: str) -> str:
    return keyring.digest(TokenKind.SESSION, f"csrf|{basis}")


def csrf_matches(keyring: Keyring, basis: str, token: str) -> bool:
    return hmac.compare_digest(csrf_token(keyring, basis), token)


async def open_session(settings: Settings, sessions: async_sessionmaker[AsyncSession], *,
                       user_id: uuid.UUID | None, operator: str | None, user_agent: str | None) -> str:
    """A new session; returns the cookie value."""
    secret = secrets.token_urlsafe(24)
    ttl = timedelta(hours=settings.session_hours)
    row = WebSession(secret_digest=settings.keyring.tagged_digest(TokenKind.SESSION, secret), user_id=user_id,
                     operator=operator, expires_at=utcnow() + ttl, user_agent=(user_agent or "")[:256] or None)
    async with transaction(sessions) as session:
        session.add(row)
    return settings.keyring.seal(TokenKind.SESSION, {"sid": str(row.id), "secret": secret},
                                 audience=SESSION_AUDIENCE, ttl_s=ttl.total_seconds())


async def viewer_of(settings: Settings, session: AsyncSession, cookie: str | None) -> Viewer | None:
    if not cookie:
        return None
    keyring = settings.keyring
    try:
        claims = keyring.open(TokenKind.SESSION, cookie, audience=SESSION_AUDIENCE)
        session_id = uuid.UUID(str(claims["sid"]))
        secret = str(claims["secret"])
    except (InvalidToken, KeyError, ValueError):
        return None
    row = await session.get(WebSession, session_id)
    if (row is None or row.revoked_at is not None or row.expires_at <= datetime.now(UTC)
            or not keyring.matches(TokenKind.SESSION, secret, row.secret_digest)):
        return None
    return Viewer(session_id=row.id, user_id=row.user_id, operator=row.operator,
                  csrf=csrf_token(keyring, str(row.id)))


async def close_sessions(sessions: async_sessionmaker[AsyncSession], viewer: Viewer, *, everywhere: bool) -> int:
    """Revokes this session, or every session of whoever is signed in; how many were revoked."""
    query = update(WebSession).where(WebSession.revoked_at.is_(None))  # type: ignore[union-attr]
    if not everywhere:
        query = query.where(WebSession.id == viewer.session_id)
    else:  # as a user and as an operator, for one person may be both
        whose = [WebSession.user_id == viewer.user_id] if viewer.user_id else []
        whose += [WebSession.operator == viewer.operator] if viewer.operator else []
        query = query.where(or_(*whose))
    async with transaction(sessions) as session:
        return int((await session.execute(query.values(revoked_at=utcnow()))).rowcount)  # type: ignore[attr-defined]
