"""Verification codes for the hotline: made, sent and checked here, never in workflow history.

The workflow keeps only a keyed digest of each code (core.tokens, kind CODE, tagged with its key
id), so operators reading Temporal UI cannot recover a code, a rotated secret still checks a code
sent before, and checking a guess is one local activity."""

from __future__ import annotations

import secrets
from enum import StrEnum

from pydantic import BaseModel
from temporalio import activity

from core.ports import Mailer, Telephony
from core.tokens import InvalidToken, Keyring, TokenKind

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
    # The digest of the code sent: the guess is digested with the same key (it may have rotated since).
    sent_digest: str = ""


def new_code() -> str:
    return f"{secrets.randbelow(10**CODE_LENGTH):0{CODE_LENGTH}d}"


class VerificationActivities:
    def __init__(self, telephony: Telephony, mailer: Mailer, *, keyring: Keyring) -> None:
        self.telephony = telephony
        self.mailer = mailer
        self.keyring = keyring

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
        return self.keyring.tagged_digest(TokenKind.CODE, f"{request.to}:{code}")

    @activity.defn
    async def code_digest(self, guess: CodeGuess) -> str:
        """The guess's digest, made with the key that made `sent_digest`: equal iff the guess is right."""
        kid = guess.sent_digest.partition(":")[0] if ":" in guess.sent_digest else None
        try:
            return f"{kid or self.keyring.kid}:" + self.keyring.digest(TokenKind.CODE, f"{guess.to}:{guess.code}", kid=kid)
        except InvalidToken:  # made under a secret that has been retired: no guess matches
            return ""

    def all(self) -> list[object]:
        return [self.send_code, self.code_digest]
