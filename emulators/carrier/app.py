"""The carrier's HTTP face: Twilio's REST paths (Basic auth with the account SID and auth token)
and the handset websocket that the softphone and the test client use."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from emulators.carrier.carrier import RING_TIMEOUT_S, Carrier, Source, WhenCalled
from emulators.carrier.store import CarrierError, OwnedNumber, new_sid, now

log = logging.getLogger(__name__)

API = "/2010-04-01/Accounts/{account}"


def _page(key: str, items: list[dict[str, Any]], uri: str) -> dict[str, Any]:
    return {key: items, "start": 0, "end": max(0, len(items) - 1), "page": 0, "page_size": max(50, len(items)),
            "first_page_uri": uri, "next_page_uri": None, "previous_page_uri": None, "uri": uri}


def create_app(carrier: Carrier, *, extra_routes: list[Any] | None = None) -> Starlette:
    def authorised(request: Request) -> None:
        header = request.headers.get("authorization", "")
        try:
            scheme, encoded = header.split(" ", 1)
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise CarrierError(401, 20003, "Authenticate") from None
        if scheme.lower() != "basic" or user != carrier.account_sid or password != carrier.auth_token:
            raise CarrierError(401, 20003, "Authenticate")
        if request.path_params.get("account") != carrier.account_sid:
            raise CarrierError(404, 20404, "The requested resource was not found")

    def endpoint(handler: Callable[[Request], Awaitable[Any]], status: int = 200) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            try:
                authorised(request)
                result = await handler(request)
            except CarrierError as error:
                return JSONResponse(error.body(), status_code=error.status)
            if result is None:
                return Response(status_code=204)
            return JSONResponse(result, status_code=status if request.method == "POST" else 200)
        return wrapped

    def owned(sid: str) -> OwnedNumber:
        number = carrier.numbers.owned.get(sid)
        if number is None:
            raise CarrierError(404, 20404, f"The requested resource /IncomingPhoneNumbers/{sid}.json was not found")
        return number

    async def available(request: Request) -> dict[str, Any]:
        area = request.query_params.get("AreaCode") or "415"
        if not (area.isdigit() and len(area) == 3):
            raise CarrierError(400, 21452, f"AreaCode {area!r} is not a valid area code")
        limit = min(int(request.query_params.get("PageSize", "20")), 50)
        numbers = [{"phone_number": n, "friendly_name": f"({n[2:5]}) {n[5:8]}-{n[8:]}", "region": "CA",
                    "iso_country": request.path_params["country"], "capabilities": {"voice": True, "SMS": True}}
                   for n in carrier.numbers.available(area, limit)]
        return _page("available_phone_numbers", numbers, str(request.url.path))

    async def numbers(request: Request) -> dict[str, Any]:
        if request.method == "GET":
            wanted = request.query_params.get("PhoneNumber")
            items = [n.resource(carrier.account_sid) for n in carrier.numbers.owned.values()
                     if wanted is None or n.phone_number == wanted]
            return _page("incoming_phone_numbers", items, str(request.url.path))
        form = await request.form()
        phone = str(form.get("PhoneNumber") or "")
        if not phone and form.get("AreaCode"):
            phone = carrier.numbers.available(str(form["AreaCode"]), 1)[0]
        if not phone.startswith("+"):
            raise CarrierError(400, 21421, "PhoneNumber is required and must be in E.164 format.")
        if carrier.numbers.by_number(phone):
            raise CarrierError(400, 21422, f"PhoneNumber {phone} is not available.")
        number = OwnedNumber(new_sid("PN"), phone)
        _apply(number, form)
        carrier.numbers.owned[number.sid] = number
        return number.resource(carrier.account_sid)

    async def number(request: Request) -> dict[str, Any] | None:
        item = owned(request.path_params["sid"])
        if request.method == "DELETE":
            del carrier.numbers.owned[item.sid]
            return None
        if request.method == "POST":
            _apply(item, await request.form())
            item.updated = now()
        return item.resource(carrier.account_sid)

    async def messages(request: Request) -> dict[str, Any]:
        if request.method == "GET":  # Twilio's filters: To, From, DateSent> (sent at or after, to the second)
            query = request.query_params
            after = datetime.strptime(query["DateSent>"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) \
                if "DateSent>" in query else None
            items = [m.resource(carrier.account_sid) for m in carrier.messages.values()
                     if query.get("To", m.to) == m.to and query.get("From", m.from_) == m.from_
                     and (after is None or m.created.replace(microsecond=0) >= after)]
            return _page("messages", items, str(request.url.path))
        form = await request.form()
        message = await carrier.send_message(to=str(form.get("To", "")), from_=str(form.get("From", "")),
                                             body=str(form.get("Body", "")),
                                             status_callback=_opt(form, "StatusCallback"))
        return message.resource(carrier.account_sid)

    async def message(request: Request) -> dict[str, Any]:
        item = carrier.messages.get(request.path_params["sid"])
        if item is None:
            raise CarrierError(404, 20404, "The requested resource was not found")
        return item.resource(carrier.account_sid)

    async def media(request: Request) -> Response:
        """An MMS attachment's bytes. Basic auth, as Twilio serves media with HTTP auth enforced
        (the platform fetches attachments for its agents; a link without credentials gets 401)."""
        try:
            authorised(request)
            item = carrier.messages.get(request.path_params["sid"])
            found = next((m for m in item.media if m.sid == request.path_params["media"]), None) if item else None
            if found is None:
                raise CarrierError(404, 20404, "The requested resource was not found")
        except CarrierError as error:
            return JSONResponse(error.body(), status_code=error.status)
        return Response(found.data, media_type=found.content_type)

    async def calls(request: Request) -> dict[str, Any]:
        if request.method == "GET":
            return _page("calls", [c.resource(carrier.account_sid) for c in carrier.calls.values()], str(request.url.path))
        form = await request.form()
        source = _source(form)
        if source is None:
            raise CarrierError(400, 21205, "Either Url or Twiml is required.")
        try:
            timeout = int(form.get("Timeout") or RING_TIMEOUT_S)
        except ValueError:
            raise CarrierError(400, 21216, "Timeout must be a number of seconds") from None
        if not 1 <= timeout <= 600:
            raise CarrierError(400, 21216, "Timeout must be between 1 and 600 seconds")
        call = carrier.place_call(to=str(form.get("To", "")), from_=str(form.get("From", "")), source=source,
                                  status_callback=_opt(form, "StatusCallback"), ring_timeout_s=float(timeout),
                                  machine_detection=_opt(form, "MachineDetection"))
        return call.resource(carrier.account_sid)

    async def call(request: Request) -> dict[str, Any]:
        item = carrier.calls.get(request.path_params["sid"])
        if item is None:
            raise CarrierError(404, 20404, "The requested resource was not found")
        if request.method == "POST":
            form = await request.form()
            carrier.update_call(item, source=_source(form), status=_opt(form, "Status"))
        return item.resource(carrier.account_sid)

    async def state(request: Request) -> JSONResponse:
        """Everything the carrier holds, for tests and the softphone's debug panel."""
        return JSONResponse({
            "numbers": [n.resource(carrier.account_sid) for n in carrier.numbers.owned.values()],
            "messages": [m.resource(carrier.account_sid) for m in carrier.messages.values()],
            "calls": [{**c.resource(carrier.account_sid), "said": c.transcript} for c in carrier.calls.values()],
            "handsets": sorted(carrier.handsets),
        })

    async def handset_socket(websocket: WebSocket) -> None:
        number = websocket.query_params.get("number", "")
        if not (number.startswith("+") and number[1:].isdigit() and 8 <= len(number) <= 16):
            await websocket.close(code=4400, reason="number must be E.164")
            return
        await websocket.accept()
        try:
            when_called = WhenCalled(websocket.query_params.get("when_called", WhenCalled.RING))
        except ValueError:
            await websocket.close(code=4400, reason=f"when_called must be one of {', '.join(WhenCalled)}")
            return
        handset = carrier.attach(number, websocket.send_json, when_called=when_called,
                                 auto_answer=websocket.query_params.get("auto_answer") == "1")
        await websocket.send_json({"type": "ready", "number": number})
        try:
            while True:
                event = await websocket.receive_json()
                try:
                    await _handset_event(carrier, handset, event)
                except CarrierError as error:
                    await websocket.send_json({"type": "error", "message": error.message})
                except (KeyError, ValueError, TypeError, binascii.Error) as error:
                    await websocket.send_json({"type": "error", "message": f"bad event: {error}"})
        except (WebSocketDisconnect, json.JSONDecodeError):
            pass
        finally:
            carrier.detach(handset)

    routes = [
        Route(API + "/AvailablePhoneNumbers/{country}/Local.json", endpoint(available)),
        Route(API + "/IncomingPhoneNumbers.json", endpoint(numbers, 201), methods=["GET", "POST"]),
        Route(API + "/IncomingPhoneNumbers/{sid}.json", endpoint(number), methods=["GET", "POST", "DELETE"]),
        Route(API + "/Messages.json", endpoint(messages, 201), methods=["GET", "POST"]),
        Route(API + "/Messages/{sid}.json", endpoint(message)),
        Route(API + "/Messages/{sid}/Media/{media}", media),
        Route(API + "/Calls.json", endpoint(calls, 201), methods=["GET", "POST"]),
        Route(API + "/Calls/{sid}.json", endpoint(call), methods=["GET", "POST"]),
        Route("/control/state", state),
        WebSocketRoute("/phone/ws", handset_socket),
        *(extra_routes or []),
    ]
    return Starlette(routes=routes)


def _opt(form: Any, key: str) -> str | None:
    value = form.get(key)
    return str(value) if value else None


def _apply(number: OwnedNumber, form: Any) -> None:
    for field, key in (("voice_url", "VoiceUrl"), ("voice_method", "VoiceMethod"), ("sms_url", "SmsUrl"),
                       ("sms_method", "SmsMethod"), ("status_callback", "StatusCallback"),
                       ("friendly_name", "FriendlyName")):
        if key in form:
            setattr(number, field, str(form[key]))


def _source(form: Any) -> Source | None:
    if form.get("Twiml"):
        return Source(document=str(form["Twiml"]))
    if form.get("Url"):
        return Source(url=str(form["Url"]), method=str(form.get("Method") or "POST"))
    return None


async def _handset_event(carrier: Carrier, handset: Any, event: dict[str, Any]) -> None:
    kind = event["type"]
    if kind == "audio":
        await carrier.handset_audio(handset, base64.b64decode(event["payload"]))
    elif kind == "dial":
        call = await carrier.handset_dial(handset, str(event["to"]), caller_id=event.get("caller_id") or None,
                                          attestation=event.get("attestation") or None)
        await handset.send({"type": "dialing", "call_sid": call.sid, "to": call.to})
    elif kind == "answer":
        carrier.answer(handset, str(event["call_sid"]))
    elif kind == "hangup":
        await carrier.handset_hangup(handset)
    elif kind == "speak":
        await carrier.handset_speak(handset, str(event["text"]))
    elif kind == "dtmf":
        await carrier.handset_dtmf(handset, str(event["digits"]))
    elif kind == "when_called":
        handset.when_called = WhenCalled(str(event["mode"]))
        await handset.send({"type": "when_called", "mode": handset.when_called.value})
    elif kind == "sms":
        media = [(str(item["content_type"]), base64.b64decode(item["data"])) for item in event.get("media") or []]
        message = await carrier.handset_sms(from_=handset.number, to=str(event["to"]), body=str(event.get("body", "")),
                                            media=media)
        await handset.send({"type": "sms_sent", "sid": message.sid, "to": message.to})
    else:
        raise ValueError(f"unknown event type {kind!r}")
