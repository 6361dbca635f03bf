"""Google Calendar v3 and Gmail v1, the parts the platform's tools use, shaped like Google's: the
paths, the JSON (events with start/end dateTime, freeBusy, messages with a payload of headers and a
base64url body, drafts of RFC 822 `raw`), the error bodies ({"error": {"code", "message", "status"}})
and a 401 for an expired, revoked or unknown access token, 403 for a scope not granted, 429 when a
test asks for it (Account.rate_limited)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from email import message_from_bytes
from email.utils import format_datetime, parseaddr
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from emulators.providers.data import Account, Accounts, Api, Event, Mail, Refused, json_body, new_id
from emulators.providers.oauth import Tokens

CALENDAR_SCOPE = "https://www.googleapis.com/auth/calendar.events"
READ_MAIL_SCOPE = "https://www.googleapis.com/auth/gmail.readonly"
COMPOSE_SCOPE = "https://www.googleapis.com/auth/gmail.compose"
MAX_RESULTS = 100


def _render(refused: Refused) -> JSONResponse:
    return JSONResponse({"error": {"code": refused.status, "message": refused.message, "status": refused.code,
                                   "errors": [{"message": refused.message, "reason": refused.code.lower()}]}},
                        status_code=refused.status, headers={"Retry-After": "1"} if refused.status == 429 else None)


def _invalid(message: str) -> Refused:
    return Refused(400, "INVALID_ARGUMENT", message)


NOT_FOUND = Refused(404, "NOT_FOUND", "Requested entity was not found.")


def _time(value: Any, field: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise _invalid(f"Invalid value for {field}: {value}") from None
    if parsed.tzinfo is None:
        raise _invalid(f"Missing time zone definition for {field}")
    return parsed


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def event_json(event: Event) -> dict[str, Any]:
    return {"kind": "calendar#event", "id": event.id, "status": "cancelled" if event.cancelled else "confirmed",
            "summary": event.title, "location": event.location, "description": event.description,
            "start": {"dateTime": _rfc3339(event.start)}, "end": {"dateTime": _rfc3339(event.end)},
            "htmlLink": f"https://calendar.google.com/event?eid={event.id}"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def message_json(mail: Mail, *, labels: list[str] | None = None) -> dict[str, Any]:
    headers = [{"name": "From", "value": f"{mail.sender_name} <{mail.sender}>" if mail.sender_name else mail.sender},
               {"name": "To", "value": mail.to}, {"name": "Subject", "value": mail.subject},
               {"name": "Date", "value": format_datetime(mail.received)},
               {"name": "Message-ID", "value": f"<{mail.id}@mail.example>"}]
    return {"id": mail.id, "threadId": mail.thread_id, "labelIds": labels or ["INBOX"], "snippet": mail.body[:100],
            "internalDate": str(int(mail.received.timestamp() * 1000)),
            "payload": {"mimeType": "text/plain", "headers": headers,
                        "body": {"size": len(mail.body.encode()), "data": _b64(mail.body.encode())}}}


def routes(accounts: Accounts, tokens: Tokens) -> list[Route]:
    api = Api(accounts, tokens, _render,
              unauthenticated=Refused(401, "UNAUTHENTICATED", "Request had invalid authentication credentials. "
                                      "Expected OAuth 2 access token, login cookie or other valid authentication "
                                      "credential."),
              forbidden=Refused(403, "PERMISSION_DENIED", "Request had insufficient authentication scopes."),
              rate_limited=Refused(429, "RESOURCE_EXHAUSTED", "Rate Limit Exceeded"))

    def calendar_scope(granted: set[str]) -> bool:
        return CALENDAR_SCOPE in granted

    def read_scope(granted: set[str]) -> bool:  # compose includes reading
        return bool({READ_MAIL_SCOPE, COMPOSE_SCOPE} & granted)

    def compose_scope(granted: set[str]) -> bool:
        return COMPOSE_SCOPE in granted

    async def body(request: Request) -> dict[str, Any]:
        return await json_body(request, _invalid("Invalid JSON payload received."))

    def event_of(account: Account, request: Request) -> Event:
        return account.live_event(request.path_params["event"], NOT_FOUND)

    async def list_events(request: Request, account: Account, _: str) -> Response:
        start = _time(request.query_params.get("timeMin"), "timeMin")
        end = _time(request.query_params.get("timeMax"), "timeMax")
        limit = min(int(request.query_params.get("maxResults", "250")), 2500)
        return JSONResponse({"kind": "calendar#events", "summary": "primary", "timeZone": "UTC",
                             "items": [event_json(e) for e in account.between(start, end)[:limit]]})

    async def insert_event(request: Request, account: Account, _: str) -> Response:
        data = await body(request)
        start = _time((data.get("start") or {}).get("dateTime"), "start.dateTime")
        end = _time((data.get("end") or {}).get("dateTime"), "end.dateTime")
        if end <= start:
            raise _invalid("The specified time range is empty.")
        event = Event(new_id(), str(data.get("summary", "")), start, end, str(data.get("location", "")),
                      str(data.get("description", "")))
        account.events[event.id] = event
        return JSONResponse(event_json(event))

    async def get_event(request: Request, account: Account, _: str) -> Response:
        return JSONResponse(event_json(event_of(account, request)))

    async def patch_event(request: Request, account: Account, _: str) -> Response:
        event, data = event_of(account, request), await body(request)
        start = _time(data["start"]["dateTime"], "start.dateTime") if "start" in data else event.start
        end = _time(data["end"]["dateTime"], "end.dateTime") if "end" in data else event.end
        if end <= start:
            raise _invalid("The specified time range is empty.")
        event.start, event.end = start, end
        event.title = str(data.get("summary", event.title))
        event.location = str(data.get("location", event.location))
        return JSONResponse(event_json(event))

    async def delete_event(request: Request, account: Account, _: str) -> Response:
        event_of(account, request).cancelled = True
        return Response(status_code=204)

    async def free_busy(request: Request, account: Account, _: str) -> Response:
        data = await body(request)
        start, end = _time(data.get("timeMin"), "timeMin"), _time(data.get("timeMax"), "timeMax")
        busy = [{"start": _rfc3339(e.start), "end": _rfc3339(e.end)} for e in account.between(start, end)]
        return JSONResponse({"kind": "calendar#freeBusy", "timeMin": _rfc3339(start), "timeMax": _rfc3339(end),
                             "calendars": {"primary": {"busy": busy}}})

    async def list_messages(request: Request, account: Account, _: str) -> Response:
        limit = min(int(request.query_params.get("maxResults", "100")), MAX_RESULTS)
        found = account.search(request.query_params.get("q", ""), limit)
        return JSONResponse({"messages": [{"id": m.id, "threadId": m.thread_id} for m in found],
                             "resultSizeEstimate": len(found)} if found else {"resultSizeEstimate": 0})

    async def get_message(request: Request, account: Account, _: str) -> Response:
        mail = account.messages.get(request.path_params["message"])
        if mail is None:
            raise NOT_FOUND.again()
        return JSONResponse(message_json(mail))

    async def create_draft(request: Request, account: Account, name: str) -> Response:
        data = await body(request)
        raw = (data.get("message") or {}).get("raw")
        if not isinstance(raw, str):
            raise _invalid("Missing draft message")
        parsed = message_from_bytes(_unb64(raw))
        payload = parsed.get_payload(decode=True)
        text = payload.decode(parsed.get_content_charset() or "utf-8") if isinstance(payload, bytes) else ""
        replying = parsed.get("In-Reply-To", "").strip("<>").split("@")[0]
        original = account.messages.get(replying)
        thread = (data.get("message") or {}).get("threadId") or (original.thread_id if original else new_id("t"))
        draft = Mail(new_id("r"), str(thread), "", name, parseaddr(str(parsed.get("To", "")))[1],
                     str(parsed.get("Subject", "")), text, datetime.now(UTC), draft_of=original.id if original else None)
        account.drafts[draft.id] = draft
        return JSONResponse({"id": draft.id, "message": {"id": draft.id, "threadId": draft.thread_id,
                                                         "labelIds": ["DRAFT"]}})

    async def get_draft(request: Request, account: Account, _: str) -> Response:
        draft = account.drafts.get(request.path_params["draft"])
        if draft is None:
            raise NOT_FOUND.again()
        return JSONResponse({"id": draft.id, "message": message_json(draft, labels=["DRAFT"])})

    async def send_draft(request: Request, account: Account, _: str) -> Response:
        data = await body(request)
        draft = account.send_draft(str(data.get("id", "")), NOT_FOUND)
        return JSONResponse({"id": draft.id, "threadId": draft.thread_id, "labelIds": ["SENT"]})

    calendar, gmail = "/google/calendar/v3", "/google/gmail/v1/users/me"
    return [
        Route(f"{calendar}/calendars/primary/events", api(calendar_scope, list_events), methods=["GET"]),
        Route(f"{calendar}/calendars/primary/events", api(calendar_scope, insert_event), methods=["POST"]),
        Route(f"{calendar}/calendars/primary/events/{{event}}", api(calendar_scope, get_event), methods=["GET"]),
        Route(f"{calendar}/calendars/primary/events/{{event}}", api(calendar_scope, patch_event), methods=["PATCH"]),
        Route(f"{calendar}/calendars/primary/events/{{event}}", api(calendar_scope, delete_event), methods=["DELETE"]),
        Route(f"{calendar}/freeBusy", api(calendar_scope, free_busy), methods=["POST"]),
        Route(f"{gmail}/messages", api(read_scope, list_messages), methods=["GET"]),
        Route(f"{gmail}/messages/{{message}}", api(read_scope, get_message), methods=["GET"]),
        Route(f"{gmail}/drafts", api(compose_scope, create_draft), methods=["POST"]),
        Route(f"{gmail}/drafts/send", api(compose_scope, send_draft), methods=["POST"]),
        Route(f"{gmail}/drafts/{{draft}}", api(compose_scope, get_draft), methods=["GET"]),
    ]

