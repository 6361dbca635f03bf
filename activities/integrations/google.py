"""The Workspace port on Google: Calendar v3 (the primary calendar) and Gmail v1 (`me`)."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from typing import Any

from activities.integrations.credentials import Credentials
from activities.integrations.provider_api import ProviderApi
from core.integrations import Provider
from core.workspace import CalendarEvent, MailDraft, MailMessage, MailSummary

SEARCH_FIELDS = ("From", "Subject", "Date", "To", "Message-ID")


def _error_text(body: Any) -> str:
    return str((body.get("error") or {}).get("message", "")) if isinstance(body, dict) else ""


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _moment(value: dict[str, Any]) -> datetime:
    # All-day events have a `date` and no `dateTime`: they start at midnight UTC here.
    text = value.get("dateTime") or f"{value.get('date')}T00:00:00+00:00"
    return datetime.fromisoformat(str(text).replace("Z", "+00:00"))


def _event(item: dict[str, Any]) -> CalendarEvent:
    return CalendarEvent(id=item["id"], title=item.get("summary") or "(no title)", start=_moment(item["start"]),
                         end=_moment(item["end"]), location=item.get("location") or "")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _plain_text(payload: dict[str, Any]) -> str:
    """The text/plain body of a Gmail message payload (the first such part)."""
    if payload.get("mimeType") == "text/plain" and (data := (payload.get("body") or {}).get("data")):
        return _b64decode(data).decode("utf-8", "replace")
    for part in payload.get("parts") or []:
        if text := _plain_text(part):
            return text
    return ""


def _headers(message: dict[str, Any]) -> dict[str, str]:
    return {h["name"].lower(): h["value"] for h in (message.get("payload") or {}).get("headers", [])}


def _received(message: dict[str, Any], headers: dict[str, str]) -> datetime:
    if internal := message.get("internalDate"):
        return datetime.fromtimestamp(int(internal) / 1000, UTC)
    return parsedate_to_datetime(headers["date"]) if "date" in headers else datetime.now(UTC)


class GoogleWorkspace:
    def __init__(self, credentials: Credentials, user_id: uuid.UUID) -> None:
        self.api = ProviderApi(credentials, user_id, Provider.GOOGLE, _error_text)
        config = self.api.config
        self.calendar = f"{config.calendar_api}/calendars/primary"
        self.freebusy = f"{config.calendar_api}/freeBusy"
        self.mail = f"{config.mail_api}/users/me"

    async def events(self, start: datetime, end: datetime) -> list[CalendarEvent]:
        found = await self.api.call("GET", f"{self.calendar}/events", params={
            "timeMin": _rfc3339(start), "timeMax": _rfc3339(end), "singleEvents": "true", "orderBy": "startTime",
            "maxResults": "50"})
        return [_event(item) for item in found.get("items", []) if item.get("status") != "cancelled"]

    async def busy(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        found = await self.api.call("POST", self.freebusy, body={
            "timeMin": _rfc3339(start), "timeMax": _rfc3339(end), "items": [{"id": "primary"}]})
        spans = ((found.get("calendars") or {}).get("primary") or {}).get("busy", [])
        return [(_moment({"dateTime": s["start"]}), _moment({"dateTime": s["end"]})) for s in spans]

    async def event(self, event_id: str) -> CalendarEvent:
        return _event(await self.api.call("GET", f"{self.calendar}/events/{event_id}"))

    async def create_event(self, title: str, start: datetime, end: datetime, location: str) -> CalendarEvent:
        body: dict[str, Any] = {"summary": title, "start": {"dateTime": start.isoformat()},
                                "end": {"dateTime": end.isoformat()}}
        if location:
            body["location"] = location
        return _event(await self.api.call("POST", f"{self.calendar}/events", body=body))

    async def move_event(self, event_id: str, start: datetime, end: datetime) -> CalendarEvent:
        return _event(await self.api.call("PATCH", f"{self.calendar}/events/{event_id}", body={
            "start": {"dateTime": start.isoformat()}, "end": {"dateTime": end.isoformat()}}))

    async def cancel_event(self, event_id: str) -> None:
        await self.api.call("DELETE", f"{self.calendar}/events/{event_id}")

    async def search_mail(self, query: str, limit: int) -> list[MailSummary]:
        found = await self.api.call("GET", f"{self.mail}/messages", params={"q": query, "maxResults": str(limit)})
        summaries = []
        for ref in found.get("messages", [])[:limit]:
            message = await self.api.call("GET", f"{self.mail}/messages/{ref['id']}", params={
                "format": "metadata", "metadataHeaders": list(SEARCH_FIELDS)})
            headers = _headers(message)
            summaries.append(MailSummary(id=message["id"], sender=headers.get("from", ""),
                                         subject=headers.get("subject", ""), received=_received(message, headers),
                                         snippet=message.get("snippet", "")))
        return summaries

    async def read_mail(self, message_id: str) -> MailMessage:
        message = await self.api.call("GET", f"{self.mail}/messages/{message_id}", params={"format": "full"})
        headers = _headers(message)
        return MailMessage(id=message["id"], sender=headers.get("from", ""), subject=headers.get("subject", ""),
                           received=_received(message, headers), snippet=message.get("snippet", ""),
                           to=headers.get("to", ""), body=_plain_text(message.get("payload") or {}))

    async def draft_reply(self, message_id: str, body: str) -> MailDraft:
        original = await self.api.call("GET", f"{self.mail}/messages/{message_id}", params={
            "format": "metadata", "metadataHeaders": list(SEARCH_FIELDS)})
        headers = _headers(original)
        subject = headers.get("subject", "")
        reply = EmailMessage()
        reply["To"] = headers.get("from", "")
        reply["Subject"] = subject if subject.lower().startswith("re:") else f"Re: {subject}"
        if message_ref := headers.get("message-id"):
            reply["In-Reply-To"] = reply["References"] = message_ref
        reply.set_content(body)
        raw = base64.urlsafe_b64encode(bytes(reply)).decode().rstrip("=")
        made = await self.api.call("POST", f"{self.mail}/drafts", body={
            "message": {"raw": raw, "threadId": original.get("threadId")}})
        return MailDraft(id=made["id"], to=str(reply["To"]), subject=str(reply["Subject"]), body=body)

    async def draft(self, draft_id: str) -> MailDraft:
        found = await self.api.call("GET", f"{self.mail}/drafts/{draft_id}", params={"format": "full"})
        message = found.get("message") or {}
        if raw := message.get("raw"):  # format=raw answers
            parsed = message_from_bytes(_b64decode(raw))
            return MailDraft(id=found["id"], to=str(parsed.get("To", "")), subject=str(parsed.get("Subject", "")),
                             body=str(parsed.get_payload()))
        headers = _headers(message)
        return MailDraft(id=found["id"], to=headers.get("to", ""), subject=headers.get("subject", ""),
                         body=_plain_text(message.get("payload") or {}))

    async def send_draft(self, draft_id: str) -> None:
        await self.api.call("POST", f"{self.mail}/drafts/send", body={"id": draft_id})
