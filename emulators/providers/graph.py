"""Microsoft Graph v1.0, the calendar and mail parts the platform's tools use, shaped like Graph's:
/me/calendarView and /me/events (dateTimeTimeZone values), /me/messages with $search and $top,
createReply and send for drafts, and Graph's error bodies ({"error": {"code", "message"}}):
InvalidAuthenticationToken (401), ErrorAccessDenied (403), ErrorItemNotFound (404),
TooManyRequests (429 with Retry-After)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from emulators.providers.data import Account, Accounts, Api, Event, Mail, Refused, json_body, new_id
from emulators.providers.oauth import Tokens

GRAPH = "/graph/v1.0/me"


def _render(refused: Refused) -> JSONResponse:
    return JSONResponse({"error": {"code": refused.code, "message": refused.message,
                                   "innerError": {"date": datetime.now(UTC).isoformat(timespec="seconds"),
                                                  "request-id": new_id()}}},
                        status_code=refused.status, headers={"Retry-After": "1"} if refused.status == 429 else None)


def _invalid(message: str) -> Refused:
    return Refused(400, "ErrorInvalidRequest", message)


NOT_FOUND = Refused(404, "ErrorItemNotFound", "The specified object was not found in the store.")


def _zoned(value: Any, field: str) -> datetime:
    """A Graph dateTimeTimeZone ({"dateTime": "2026-12-07T12:00:00", "timeZone": "UTC"})."""
    if not isinstance(value, dict):
        raise _invalid(f"{field} must be a dateTimeTimeZone")
    try:
        moment = datetime.fromisoformat(str(value.get("dateTime")))
        zone = ZoneInfo(str(value.get("timeZone") or "UTC"))
    except (ValueError, ZoneInfoNotFoundError):
        raise _invalid(f"{field} is not a valid dateTimeTimeZone") from None
    return moment.replace(tzinfo=zone) if moment.tzinfo is None else moment


def _query_time(request: Request, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(request.query_params[name].replace("Z", "+00:00"))
    except (KeyError, ValueError):
        raise _invalid(f"This request requires a time window specified by the query string parameters "
                       f"StartDateTime and EndDateTime ({name}).") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _utc(moment: datetime) -> dict[str, str]:
    return {"dateTime": moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "0",
            "timeZone": "UTC"}


def event_json(event: Event) -> dict[str, Any]:
    return {"id": event.id, "subject": event.title, "isCancelled": event.cancelled, "bodyPreview": event.description,
            "start": _utc(event.start), "end": _utc(event.end), "location": {"displayName": event.location},
            "webLink": f"https://outlook.office365.com/calendar/item/{event.id}"}


def _address(name: str, address: str) -> dict[str, Any]:
    return {"emailAddress": {"name": name or address, "address": address}}


def message_json(mail: Mail, *, draft: bool = False) -> dict[str, Any]:
    return {"id": mail.id, "conversationId": mail.thread_id, "subject": mail.subject, "bodyPreview": mail.body[:255],
            "receivedDateTime": mail.received.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "isDraft": draft, "from": _address(mail.sender_name, mail.sender),
            "toRecipients": [_address("", mail.to)], "body": {"contentType": "text", "content": mail.body}}


def routes(accounts: Accounts, tokens: Tokens) -> list[Route]:
    api = Api(accounts, tokens, _render,
              unauthenticated=Refused(401, "InvalidAuthenticationToken",
                                      "Access token has expired or is not yet valid."),
              forbidden=Refused(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."),
              rate_limited=Refused(429, "TooManyRequests", "Too many requests."))

    def calendars(granted: set[str]) -> bool:
        return "Calendars.ReadWrite" in granted

    def mail(granted: set[str]) -> bool:
        return "Mail.ReadWrite" in granted

    def send(granted: set[str]) -> bool:
        return "Mail.Send" in granted

    async def body(request: Request) -> dict[str, Any]:
        return await json_body(request, _invalid("Unable to read JSON request payload."))

    def event_of(account: Account, request: Request) -> Event:
        return account.live_event(request.path_params["event"], NOT_FOUND)

    def message_of(account: Account, request: Request) -> Mail:
        found = account.messages.get(request.path_params["message"])
        if found is None:
            raise NOT_FOUND.again()
        return found

    async def calendar_view(request: Request, account: Account, _: str) -> Response:
        start, end = _query_time(request, "startDateTime"), _query_time(request, "endDateTime")
        top = min(int(request.query_params.get("$top", "100")), 1000)
        return JSONResponse({"value": [event_json(e) for e in account.between(start, end)[:top]]})

    async def create_event(request: Request, account: Account, _: str) -> Response:
        data = await body(request)
        start, end = _zoned(data.get("start"), "start"), _zoned(data.get("end"), "end")
        if end <= start:
            raise _invalid("The end of the event must come after its start.")
        event = Event(new_id("AAMk"), str(data.get("subject", "")), start, end,
                      str((data.get("location") or {}).get("displayName", "")),
                      str((data.get("body") or {}).get("content", "")))
        account.events[event.id] = event
        return JSONResponse(event_json(event), status_code=201)

    async def get_event(request: Request, account: Account, _: str) -> Response:
        return JSONResponse(event_json(event_of(account, request)))

    async def update_event(request: Request, account: Account, _: str) -> Response:
        event, data = event_of(account, request), await body(request)
        start = _zoned(data["start"], "start") if "start" in data else event.start
        end = _zoned(data["end"], "end") if "end" in data else event.end
        if end <= start:
            raise _invalid("The end of the event must come after its start.")
        event.start, event.end = start, end
        event.title = str(data.get("subject", event.title))
        if "location" in data:
            event.location = str((data.get("location") or {}).get("displayName", ""))
        return JSONResponse(event_json(event))

    async def delete_event(request: Request, account: Account, _: str) -> Response:
        event_of(account, request).cancelled = True
        return Response(status_code=204)

    async def list_messages(request: Request, account: Account, _: str) -> Response:
        top = min(int(request.query_params.get("$top", "10")), 1000)
        words = request.query_params.get("$search", "").strip('"')
        return JSONResponse({"value": [message_json(m) for m in account.search(words, top)]})

    async def get_message(request: Request, account: Account, _: str) -> Response:
        draft = account.drafts.get(request.path_params["message"])
        if draft is not None:
            return JSONResponse(message_json(draft, draft=True))
        return JSONResponse(message_json(message_of(account, request)))

    async def create_reply(request: Request, account: Account, name: str) -> Response:
        original, data = message_of(account, request), await body(request)
        draft = account.reply_draft(original, str(data.get("comment", "")), account=name)
        return JSONResponse(message_json(draft, draft=True), status_code=201)

    async def send_draft(request: Request, account: Account, _: str) -> Response:
        account.send_draft(request.path_params["message"], NOT_FOUND)
        return Response(status_code=202)

    return [
        Route(f"{GRAPH}/calendarView", api(calendars, calendar_view), methods=["GET"]),
        Route(f"{GRAPH}/events", api(calendars, create_event), methods=["POST"]),
        Route(f"{GRAPH}/events/{{event}}", api(calendars, get_event), methods=["GET"]),
        Route(f"{GRAPH}/events/{{event}}", api(calendars, update_event), methods=["PATCH"]),
        Route(f"{GRAPH}/events/{{event}}", api(calendars, delete_event), methods=["DELETE"]),
        Route(f"{GRAPH}/messages", api(mail, list_messages), methods=["GET"]),
        Route(f"{GRAPH}/messages/{{message}}", api(mail, get_message), methods=["GET"]),
        Route(f"{GRAPH}/messages/{{message}}/createReply", api(mail, create_reply), methods=["POST"]),
        Route(f"{GRAPH}/messages/{{message}}/send", api(send, send_draft), methods=["POST"]),
    ]
