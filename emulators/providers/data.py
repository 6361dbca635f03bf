"""What the calendar and mail stand-ins hold: per provider and account, events, messages, drafts and
what was sent. Google's and Microsoft's REST shapes are rendered from these (google.py, graph.py)."""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from emulators.providers.oauth import Tokens


def new_id(prefix: str = "") -> str:
    return prefix + secrets.token_hex(8)


@dataclass
class Event:
    id: str
    title: str
    start: datetime  # aware
    end: datetime
    location: str = ""
    description: str = ""
    cancelled: bool = False


@dataclass
class Mail:
    id: str
    thread_id: str
    sender_name: str
    sender: str
    to: str
    subject: str
    body: str
    received: datetime
    draft_of: str | None = None  # a draft: the message it replies to


@dataclass
class Account:
    events: dict[str, Event] = field(default_factory=dict)
    messages: dict[str, Mail] = field(default_factory=dict)
    drafts: dict[str, Mail] = field(default_factory=dict)
    sent: list[Mail] = field(default_factory=list)
    rate_limited: int = 0  # the next this many calls get 429

    def search(self, words: str, limit: int) -> list[Mail]:
        terms = [w.lower() for w in words.split() if w]
        found = [m for m in self.messages.values()
                 if all(t in f"{m.sender_name} {m.sender} {m.subject} {m.body}".lower() for t in terms)]
        return sorted(found, key=lambda m: m.received, reverse=True)[:limit]

    def live_event(self, event_id: str, not_found: Refused) -> Event:
        """The event, unless it is unknown or cancelled (then the provider's own 404, `not_found`)."""
        event = self.events.get(event_id)
        if event is None or event.cancelled:
            raise not_found.again()
        return event

    def send_draft(self, draft_id: str, not_found: Refused) -> Mail:
        """The draft, sent now (moved to `sent`); the provider's own 404 if there is no such draft."""
        draft = self.drafts.pop(draft_id, None)
        if draft is None:
            raise not_found.again()
        draft.received = datetime.now(UTC)
        self.sent.append(draft)
        return draft

    def between(self, start: datetime, end: datetime) -> list[Event]:
        return sorted((e for e in self.events.values() if not e.cancelled and e.start < end and e.end > start),
                      key=lambda e: e.start)

    def reply_draft(self, message: Mail, body: str, *, account: str) -> Mail:
        subject = message.subject if message.subject.lower().startswith("re:") else f"Re: {message.subject}"
        draft = Mail(new_id("r"), message.thread_id, "", account, message.sender, subject, body,
                     datetime.now(UTC), draft_of=message.id)
        self.drafts[draft.id] = draft
        return draft


def seeded() -> Account:
    """A new account's mailbox: a couple of messages to search, read and answer."""
    now = datetime.now(UTC)
    account = Account()
    for sender_name, sender, subject, body, hours in (
            ("Bob Lee", "bob@example.com", "Lunch on Friday?", "Are we still on for lunch on Friday at noon?", 2),
            ("City Library", "notices@library.example", "Your books are due",
             "Two books are due back on Monday.", 30)):
        mail = Mail(new_id(), new_id("t"), sender_name, sender, "you@example.com", subject, body,
                    now - timedelta(hours=hours))
        account.messages[mail.id] = mail
    return account


@dataclass
class Accounts:
    """One provider's accounts, made (seeded) on first use."""

    by_name: defaultdict[str, Account] = field(default_factory=lambda: defaultdict(seeded))

    def __getitem__(self, account: str) -> Account:
        return self.by_name[account.lower()]


class Refused(Exception):
    """A provider's error answer: the HTTP status, the provider's code for it, and its message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def again(self) -> Refused:
        """A fresh copy to raise (a module-level instance raised twice would pile up tracebacks)."""
        return Refused(self.status, self.code, self.message)


async def json_body(request: Request, invalid: Refused) -> dict[str, Any]:
    """The request's JSON object, or `invalid` raised."""
    try:
        data = await request.json()
    except ValueError:
        raise invalid.again() from None
    if not isinstance(data, dict):
        raise invalid.again()
    return data


Handler = Callable[[Request, Account, str], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass
class Api:
    """What every REST call of one provider goes through: the bearer token (401 if unknown, expired
    or revoked), the scope it was granted (403), a rate limit a test asked for (429), and the
    provider's own error body (`render`)."""

    accounts: Accounts
    tokens: Tokens
    render: Callable[[Refused], Response]
    unauthenticated: Refused
    forbidden: Refused
    rate_limited: Refused

    def __call__(self, granted: Callable[[set[str]], bool], handler: Handler) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            header = request.headers.get("authorization", "")
            found = self.tokens.account_of(header[7:]) if header.lower().startswith("bearer ") else None
            try:
                if found is None:
                    raise self.unauthenticated.again()
                name, scope = found
                if not granted(set(scope.split())):
                    raise self.forbidden.again()
                account = self.accounts[name]
                if account.rate_limited > 0:
                    account.rate_limited -= 1
                    raise self.rate_limited.again()
                return await handler(request, account, name)
            except Refused as refused:
                return self.render(refused)
        return endpoint
