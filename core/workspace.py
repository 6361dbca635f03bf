"""The Workspace port: a user's calendar and mail at a provider they connected (Google Calendar and
Gmail, or Outlook through Microsoft Graph). Adapters: activities/integrations/google.py and
activities/integrations/microsoft.py; each talks to the real provider or, with no client id set, to
its local stand-in (emulators/providers), by the same code.

What an adapter gives back is plain data (no token): the platform's MCP tools phrase it for the agent.
Sending mail and cancelling events are here as the adapters' abilities; only a confirmed pending
action (activities/integrations/actions.py) calls them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel


class CalendarEvent(BaseModel):
    id: str
    title: str
    start: datetime
    end: datetime
    location: str = ""


class MailSummary(BaseModel):
    id: str
    sender: str  # "Bob Lee <bob@example.com>"
    subject: str
    received: datetime
    snippet: str = ""


class MailMessage(MailSummary):
    to: str
    body: str


class MailDraft(BaseModel):
    id: str
    to: str
    subject: str
    body: str


class Trouble(StrEnum):
    """What went wrong at the provider, as the agent can act on it."""

    NOT_FOUND = "not_found"
    RATE_LIMITED = "rate_limited"
    REFUSED = "refused"  # a bad request or a scope not granted
    UNAVAILABLE = "unavailable"


class ProviderFailed(Exception):
    def __init__(self, trouble: Trouble, detail: str) -> None:
        super().__init__(detail)
        self.trouble, self.detail = trouble, detail


class Workspace(Protocol):
    async def events(self, start: datetime, end: datetime) -> list[CalendarEvent]: ...

    async def busy(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]: ...

    async def event(self, event_id: str) -> CalendarEvent: ...

    async def create_event(self, title: str, start: datetime, end: datetime, location: str) -> CalendarEvent: ...

    async def move_event(self, event_id: str, start: datetime, end: datetime) -> CalendarEvent: ...

    async def cancel_event(self, event_id: str) -> None: ...

    async def search_mail(self, query: str, limit: int) -> list[MailSummary]: ...

    async def read_mail(self, message_id: str) -> MailMessage: ...

    async def draft_reply(self, message_id: str, body: str) -> MailDraft: ...

    async def draft(self, draft_id: str) -> MailDraft: ...

    async def send_draft(self, draft_id: str) -> None: ...
