"""The carrier's state and the JSON shapes of its REST resources (as Twilio's API returns them)."""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def rfc2822(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True)


def now() -> datetime:
    return datetime.now(UTC)


class CarrierError(Exception):
    """Rendered as Twilio's error JSON; the twilio client raises TwilioRestException from it."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "more_info": f"https://www.twilio.com/docs/errors/{self.code}", "status": self.status}


@dataclass
class OwnedNumber:
    sid: str
    phone_number: str
    voice_url: str | None = None
    voice_method: str = "POST"
    sms_url: str | None = None
    sms_method: str = "POST"
    status_callback: str | None = None
    friendly_name: str | None = None
    created: datetime = field(default_factory=now)
    updated: datetime = field(default_factory=now)

    def resource(self, account_sid: str) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "account_sid": account_sid,
            "phone_number": self.phone_number,
            "friendly_name": self.friendly_name or self.phone_number,
            "voice_url": self.voice_url,
            "voice_method": self.voice_method,
            "sms_url": self.sms_url,
            "sms_method": self.sms_method,
            "status_callback": self.status_callback,
            "capabilities": {"voice": True, "sms": True, "mms": False, "fax": False},
            "status": "in-use",
            "date_created": rfc2822(self.created),
            "date_updated": rfc2822(self.updated),
            "api_version": "2010-04-01",
            "uri": f"/2010-04-01/Accounts/{account_sid}/IncomingPhoneNumbers/{self.sid}.json",
        }


@dataclass
class MediaItem:
    """One MMS attachment, served at the message's Media/{sid} path (with the account's Basic auth)."""

    sid: str
    content_type: str
    data: bytes


@dataclass
class MessageRecord:
    sid: str
    to: str
    from_: str
    body: str
    direction: str  # outbound-api | inbound | outbound-reply
    status: str = "queued"
    status_callback: str | None = None
    created: datetime = field(default_factory=now)
    media: list[MediaItem] = field(default_factory=list)

    def media_path(self, account_sid: str, media_sid: str) -> str:
        return f"/2010-04-01/Accounts/{account_sid}/Messages/{self.sid}/Media/{media_sid}"

    def resource(self, account_sid: str) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "account_sid": account_sid,
            "to": self.to,
            "from": self.from_,
            "body": self.body,
            "status": self.status,
            "direction": self.direction,
            "num_segments": str(max(1, -(-len(self.body) // 160))),
            "num_media": str(len(self.media)),
            "date_created": rfc2822(self.created),
            "date_updated": rfc2822(now()),
            "date_sent": rfc2822(self.created),
            "api_version": "2010-04-01",
            "price": None,
            "error_code": None,
            "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{self.sid}.json",
        }


class NumberBook:
    """Numbers for sale (deterministic per area code) and numbers owned by the account."""

    def __init__(self) -> None:
        self.owned: dict[str, OwnedNumber] = {}
        self._counters: dict[str, itertools.count[int]] = {}

    def by_number(self, phone_number: str) -> OwnedNumber | None:
        return next((n for n in self.owned.values() if n.phone_number == phone_number), None)

    def available(self, area_code: str, limit: int) -> list[str]:
        counter = self._counters.setdefault(area_code, itertools.count(100))
        found: list[str] = []
        while len(found) < limit:
            candidate = f"+1{area_code}555{next(counter) % 10000:04d}"
            if self.by_number(candidate) is None and candidate not in found:
                found.append(candidate)
        # Searching doesn't reserve: rewind so the next search offers the same unsold numbers.
        self._counters[area_code] = itertools.count(int(found[0][-4:]))
        return found
