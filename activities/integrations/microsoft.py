"""The Workspace port on Microsoft Graph: the signed-in user's (`me`) calendar and Outlook mail.
Times go out and come back in UTC (`Prefer: outlook.timezone` is left at its default, UTC)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from activities.integrations.credentials import Credentials
from activities.integrations.provider_api import ProviderApi
from core.integrations import Provider
from core.workspace import CalendarEvent, MailDraft, MailMessage, MailSummary

MESSAGE_FIELDS = "id,subject,from,toRecipients,receivedDateTime,bodyPreview,body"


def _error_text(body: Any) -> str:
    return str((body.get("error") or {}).get("message", "")) if isinstance(body, dict) else ""


def _zoned(moment: datetime) -> dict[str, str]:
    return {"dateTime": moment.astimezone(UTC).replace(tzinfo=None).isoformat(), "timeZone": "UTC"}


def _moment(value: dict[str, Any]) -> datetime:
    text = str(value["dateTime"])
    if "." in text:  # Graph gives seven fractional digits; Python reads six
        head, fraction = text.split(".", 1)
        text = f"{head}.{fraction[:6]}"
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # asked (and given) in UTC


def _event(item: dict[str, Any]) -> CalendarEvent:
    return CalendarEvent(id=item["id"], title=item.get("subject") or "(no title)", start=_moment(item["start"]),
                         end=_moment(item["end"]), location=(item.get("location") or {}).get("displayName") or "")


def _person(value: dict[str, Any] | None) -> str:
    address = (value or {}).get("emailAddress") or {}
    name, email = address.get("name") or "", address.get("address") or ""
    return f"{name} <{email}>" if name and name != email else email


def _received(item: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(item.get("receivedDateTime") or datetime.now(UTC).isoformat())
                                  .replace("Z", "+00:00"))


def _draft(item: dict[str, Any]) -> MailDraft:
    return MailDraft(id=item["id"], to=", ".join(_person(r) for r in item.get("toRecipients") or []),
                     subject=item.get("subject") or "", body=(item.get("body") or {}).get("content") or "")


class MicrosoftWorkspace:
    def __init__(self, credentials: Credentials, user_id: uuid.UUID) -> None:
        self.api = ProviderApi(credentials, user_id, Provider.OUTLOOK, _error_text)
        self.me = f"{self.api.config.calendar_api}/me"

    async def events(self, start: datetime, end: datetime) -> list[CalendarEvent]:
        found = await self.api.call("GET", f"{self.me}/calendarView", params={
            "startDateTime": start.astimezone(UTC).isoformat(), "endDateTime": end.astimezone(UTC).isoformat(),
            "$orderby": "start/dateTime", "$top": "50"})
        return [_event(item) for item in found.get("value", []) if not item.get("isCancelled")]

    async def busy(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        return [(e.start, e.end) for e in await self.events(start, end)]

    async def event(self, event_id: str) -> CalendarEvent:
        return _event(await self.api.call("GET", f"{self.me}/events/{event_id}"))

    async def create_event(self, title: str, start: datetime, end: datetime, location: str) -> CalendarEvent:
        body: dict[str, Any] = {"subject": title, "start": _zoned(start), "end": _zoned(end)}
        if location:
            body["location"] = {"displayName": location}
        return _event(await self.api.call("POST", f"{self.me}/events", body=body))

    async def move_event(self, event_id: str, start: datetime, end: datetime) -> CalendarEvent:
        return _event(await self.api.call("PATCH", f"{self.me}/events/{event_id}", body={
            "start": _zoned(start), "end": _zoned(end)}))

    async def cancel_event(self, event_id: str) -> None:
        await self.api.call("DELETE", f"{self.me}/events/{event_id}")

    async def search_mail(self, query: str, limit: int) -> list[MailSummary]:
        found = await self.api.call("GET", f"{self.me}/messages", params={
            "$search": f'"{query.replace(chr(34), "")}"', "$top": str(limit), "$select": MESSAGE_FIELDS})
        return [MailSummary(id=item["id"], sender=_person(item.get("from")), subject=item.get("subject") or "",
                            received=_received(item), snippet=item.get("bodyPreview") or "")
                for item in found.get("value", [])[:limit]]

    async def read_mail(self, message_id: str) -> MailMessage:
        item = await self.api.call("GET", f"{self.me}/messages/{message_id}", params={"$select": MESSAGE_FIELDS})
        return MailMessage(id=item["id"], sender=_person(item.get("from")), subject=item.get("subject") or "",
                           received=_received(item), snippet=item.get("bodyPreview") or "",
                           to=", ".join(_person(r) for r in item.get("toRecipients") or []),
                           body=(item.get("body") or {}).get("content") or "")

    async def draft_reply(self, message_id: str, body: str) -> MailDraft:
        made = await self.api.call("POST", f"{self.me}/messages/{message_id}/createReply", body={"comment": body})
        return _draft(made)

    async def draft(self, draft_id: str) -> MailDraft:
        return _draft(await self.api.call("GET", f"{self.me}/messages/{draft_id}", params={"$select": MESSAGE_FIELDS}))

    async def send_draft(self, draft_id: str) -> None:
        await self.api.call("POST", f"{self.me}/messages/{draft_id}/send")
