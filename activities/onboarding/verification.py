"""Verification codes for the hotline: made, sent and checked here, never in workflow history.

The workflow keeps only an HMAC of each code (keyed by the platform secret), so operators reading
Temporal UI cannot recover a code, and checking a guess is one local activity."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from enum import StrEnum

from pydantic import BaseModel
from temporalio import activity

from core.ports import Mailer, Telephony

CODE_LENGTH = 6


class Channel(StrEnum):
    SMS = "sms"
    EMAIL = "email"


class CodeRequest(BaseModel):
    channel: Channel
    to: str  # E.164 for SMS, an address for email
    sender: str = ""  # the number an SMS comes from


class CodeGuess(BaseModel):
    to: str
    code: str


def new_code() -> str:
    return f"{secrets.randbelow(10**CODE_LENGTH):0{CODE_LENGTH}d}"


class VerificationActivities:
    def __init__(self, telephony: Telephony, mailer: Mailer, *, secret: str) -> None:
        self.telephony = telephony
        self.mailer = mailer
        self.secret = secret.encode()

    def _digest(self, to: str, code: str) -> str:
        return hmac.new(self.secret, f"{to}:{code}".encode(), hashlib.sha256).hexdigest()

    @activity.defn
    async def send_code(self, request: CodeRequest) -> str:
        """Sends a fresh code; returns its digest for the workflow to compare guesses against."""
        code = new_code()
        spaced = " ".join(code)
        if request.channel == Channel.SMS:
            await self.telephony.send_sms(to=request.to, from_=request.sender,
                                          body=f"Your DeepClaw code is {code}. It expires in 10 minutes.")
        else:
            await self.mailer.send(to=request.to, subject=f"Your DeepClaw code: {code}",
                                   body=f"Your DeepClaw email verification code is {code} ({spaced}).\n\n"
                                        "Say it or key it in on the call. It expires in 10 minutes.\n"
                                        "If you did not call DeepClaw, ignore this message.")
        activity.logger.info("sent a %s code to %s", request.channel.value, request.to)
        return self._digest(request.to, code)

    @activity.defn
    async def code_digest(self, guess: CodeGuess) -> str:
        return self._digest(guess.to, guess.code)

    def all(self) -> list[object]:
        return [self.send_code, self.code_digest]
