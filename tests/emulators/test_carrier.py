"""The local carrier over its wire protocols: the real `twilio` client for REST, signed webhooks
checked with twilio's RequestValidator, TwiML followed, and a Media Stream both ways."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from core.serve import serving
from emulators.carrier.app import create_app
from emulators.carrier.media import FRAME_BYTES, FRAME_S, QUIET_S, SILENCE, MediaStream
from emulators.carrier.carrier import Carrier
from emulators.carrier.handset import handset
from tests.conftest import free_port

ACCOUNT = "AC" + "0" * 32
TOKEN = "local-auth-token"
CALLER = "+15550100001"


@dataclass
class Platform:
    """Stands where the DeepClaw API and bridge stand: validates signatures, answers TwiML, takes streams."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    voice_twiml: str = "<Response><Hangup/></Response>"
    sms_twiml: str = "<Response/>"
    stream_events: list[dict[str, Any]] = field(default_factory=list)
    stream_script: Any = None


@pytest.fixture
async def platform() -> AsyncIterator[Platform]:
    port = free_port()
    state = Platform(url=f"http://127.0.0.1:{port}")
    validator = RequestValidator(TOKEN)

    async def hook(request: Request) -> Response:
        form = dict(await request.form())
        valid = validator.validate(str(request.url), form, request.headers.get("X-Twilio-Signature", ""))
        state.requests.append({"path": request.url.path, "form": form, "valid": valid})
        if not valid:
            return Response("bad signature", status_code=403)
        body = {"/voice": state.voice_twiml, "/sms": state.sms_twiml}.get(request.url.path, "<Response/>")
        return Response(body, media_type="application/xml")

    async def stream(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            if state.stream_script:
                await state.stream_script(websocket, state.stream_events)
        except WebSocketDisconnect:
            pass

    app = Starlette(routes=[Route("/{path:path}", hook, methods=["POST"]), WebSocketRoute("/stream", stream)])
    async with serving(app, "127.0.0.1", port):
        yield state


@pytest.fixture
async def carrier_url() -> AsyncIterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with serving(create_app(Carrier(ACCOUNT, TOKEN, public_url=url)), "127.0.0.1", port):
        yield url


@pytest.fixture
async def twilio(carrier_url: str) -> AsyncIterator[Client]:
    http = AsyncTwilioHttpClient()
    client = Client(ACCOUNT, TOKEN, http_client=http)
    client.api.base_url = carrier_url  # the only difference from real Twilio
    yield client
    await http.close()


async def _buy(twilio: Client, platform: Platform) -> str:
    candidates = await twilio.available_phone_numbers("US").local.list_async(area_code="415", limit=3)
    assert len(candidates) == 3
    bought = await twilio.incoming_phone_numbers.create_async(
        phone_number=candidates[0].phone_number, voice_url=f"{platform.url}/voice", sms_url=f"{platform.url}/sms")
    return bought.phone_number


async def test_number_lifecycle_through_the_twilio_client(twilio: Client, platform: Platform) -> None:
    number = await _buy(twilio, platform)
    listed = await twilio.incoming_phone_numbers.list_async(phone_number=number)
    assert [n.phone_number for n in listed] == [number] and listed[0].sid.startswith("PN")
    again = await twilio.available_phone_numbers("US").local.list_async(area_code="415", limit=5)
    assert number not in [c.phone_number for c in again], "sold numbers are not offered again"

    updated = await twilio.incoming_phone_numbers(listed[0].sid).update_async(voice_url=f"{platform.url}/other")
    assert updated.voice_url == f"{platform.url}/other" and updated.sms_url == f"{platform.url}/sms"

    with pytest.raises(TwilioRestException) as taken:
        await twilio.incoming_phone_numbers.create_async(phone_number=number)
    assert taken.value.code == 21422

    assert await twilio.incoming_phone_numbers(listed[0].sid).delete_async() is True
    with pytest.raises(TwilioRestException) as gone:
        await twilio.incoming_phone_numbers(listed[0].sid).fetch_async()
    assert gone.value.status == 404


async def test_wrong_credentials_are_refused(carrier_url: str) -> None:
    http = AsyncTwilioHttpClient()
    client = Client(ACCOUNT, "wrong-token", http_client=http)
    client.api.base_url = carrier_url
    try:
        with pytest.raises(TwilioRestException) as refused:
            await client.messages.create_async(to=CALLER, from_="+14155550100", body="hi")
    finally:
        await http.close()
    assert refused.value.status == 401 and refused.value.code == 20003


async def test_sms_both_ways_with_signed_webhooks(twilio: Client, platform: Platform, carrier_url: str) -> None:
    number = await _buy(twilio, platform)
    platform.sms_twiml = "<Response><Message>Got it, thanks!</Message></Response>"
    async with handset(carrier_url, CALLER) as phone:
        sent = await twilio.messages.create_async(to=CALLER, from_=number, body="Your code is 427119",
                                                  status_callback=f"{platform.url}/sms-status")
        assert sent.sid.startswith("SM") and sent.status == "queued"
        received = await phone.wait_for("sms")
        assert received == {"type": "sms", "sid": sent.sid, "from": number, "body": "Your code is 427119"}

        await phone.text(number, "hello agent")
        reply = await phone.wait_for("sms", lambda e: e["from"] == number and e["sid"] != sent.sid)
        assert reply["body"] == "Got it, thanks!"

    statuses = [r["form"]["MessageStatus"] for r in platform.requests if r["path"] == "/sms-status"]
    assert statuses == ["sent", "delivered"]
    inbound = next(r for r in platform.requests if r["path"] == "/sms")
    assert inbound["valid"] and inbound["form"]["Body"] == "hello agent" and inbound["form"]["From"] == CALLER
    assert all(r["valid"] for r in platform.requests)


async def test_an_mms_carries_signed_media_urls_served_with_the_accounts_credentials(
        twilio: Client, platform: Platform, carrier_url: str) -> None:
    number = await _buy(twilio, platform)
    picture = b"\x89PNG\r\n\x1a\n" + bytes(64)
    async with handset(carrier_url, CALLER) as phone:
        await phone.text(number, "look", media=[("image/png", picture), ("text/plain", b"locker 4471")])
        await phone.wait_for("sms_sent")
        await phone.text(number, "x", media=[("text/plain", b"x")] * 11)
        assert "at most 10 attachments" in (await phone.wait_for("error"))["message"]
    for _ in range(100):
        inbound = next((r for r in platform.requests if r["path"] == "/sms"), None)
        if inbound:
            break
        await asyncio.sleep(0.05)
    assert inbound is not None and inbound["valid"]
    form = inbound["form"]
    assert form["NumMedia"] == "2" and form["MessageSid"].startswith("MM") and form["Body"] == "look"
    assert [form["MediaContentType0"], form["MediaContentType1"]] == ["image/png", "text/plain"]
    prefix = f"{carrier_url}/2010-04-01/Accounts/{ACCOUNT}/Messages/{form['MessageSid']}/Media/ME"
    assert form["MediaUrl0"].startswith(prefix) and form["MediaUrl1"].startswith(prefix)
    async with httpx.AsyncClient() as http:
        assert (await http.get(form["MediaUrl0"])).status_code == 401, "media needs the account's credentials"
        served = await http.get(form["MediaUrl0"], auth=(ACCOUNT, TOKEN))
        assert served.status_code == 200 and served.content == picture
        assert served.headers["content-type"] == "image/png"
        assert (await http.get(form["MediaUrl0"][:-4] + "0000", auth=(ACCOUNT, TOKEN))).status_code == 404
    message = await twilio.messages(form["MessageSid"]).fetch_async()
    assert message.num_media == "2"


async def test_inbound_call_streams_media_both_ways(twilio: Client, platform: Platform, carrier_url: str) -> None:
    number = await _buy(twilio, platform)
    ws_url = platform.url.replace("http", "ws") + "/stream"
    platform.voice_twiml = (
        f'<Response><Say>Connecting you</Say><Connect><Stream url="{ws_url}">'
        f'<Parameter name="token" value="one-time-123"/></Stream></Connect><Say>Goodbye</Say></Response>'
    )
    tone = bytes(range(0, 160)) * 5  # five 20 ms frames of "speech"

    async def bridge(ws: WebSocket, events: list[dict[str, Any]]) -> None:
        while True:
            event = json.loads(await ws.receive_text())
            events.append(event)
            if event["event"] == "dtmf":
                break
        stream_sid = events[1]["streamSid"]
        reply = base64.b64encode(b"\x10" * 160 * 10).decode()  # 200 ms of audio to the caller
        await ws.send_json({"event": "media", "streamSid": stream_sid, "media": {"payload": reply}})
        await ws.send_json({"event": "mark", "streamSid": stream_sid, "mark": {"name": "turn-1"}})
        while not any(e["event"] == "mark" for e in events):
            events.append(json.loads(await ws.receive_text()))
        # Barge-in: queue a long answer, then clear it; the mark behind it comes back at once.
        long = base64.b64encode(b"\x20" * 160 * 250).decode()  # 5 s
        await ws.send_json({"event": "media", "streamSid": stream_sid, "media": {"payload": long}})
        await ws.send_json({"event": "mark", "streamSid": stream_sid, "mark": {"name": "turn-2"}})
        await asyncio.sleep(0.1)
        await ws.send_json({"event": "clear", "streamSid": stream_sid})
        while sum(e["event"] == "mark" for e in events) < 2:
            events.append(json.loads(await ws.receive_text()))
        await ws.close()

    platform.stream_script = bridge
    async with handset(carrier_url, CALLER) as phone:
        call_sid = await phone.dial(number)
        await phone.wait_for("say", lambda e: e["text"] == "Connecting you")
        await asyncio.sleep(0.2)
        await phone.send_audio(tone)
        await phone.dtmf("7")
        await phone.wait_for("say", lambda e: e["text"] == "Goodbye", timeout=20)
        await phone.wait_for("call_state", lambda e: e["state"] == "completed")

    events = platform.stream_events
    assert events[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = events[1]["start"]
    assert start["callSid"] == call_sid and start["customParameters"] == {"token": "one-time-123"}
    assert start["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    media = [base64.b64decode(e["media"]["payload"]) for e in events if e["event"] == "media"]
    assert all(len(frame) == 160 for frame in media)
    spoken = [frame for frame in media if frame != b"\xff" * 160]  # between words the line carries silence
    assert spoken == [tone[i:i + 160] for i in range(0, len(tone), 160)], "the caller's audio arrives frame for frame"
    assert [e["dtmf"]["digit"] for e in events if e["event"] == "dtmf"] == ["7"]
    assert [e["mark"]["name"] for e in events if e["event"] == "mark"] == ["turn-1", "turn-2"]
    heard = bytes(phone.heard)
    assert heard.count(b"\x10") == 1600, "the first answer played in full"
    assert 0 < heard.count(b"\x20") < 160 * 250 // 2, "clear cut the second answer short"
    voice = next(r for r in platform.requests if r["path"] == "/voice")
    assert voice["valid"] and voice["form"]["CallSid"] == call_sid and voice["form"]["Direction"] == "inbound"


async def test_outbound_call_redirect_and_hangup(twilio: Client, platform: Platform, carrier_url: str) -> None:
    number = await _buy(twilio, platform)
    platform.voice_twiml = "<Response><Say>Redirected here</Say><Pause length=\"30\"/></Response>"
    async with handset(carrier_url, CALLER, auto_answer=True) as phone:
        call = await twilio.calls.create_async(
            to=CALLER, from_=number, twiml="<Response><Say>Your reminder</Say><Pause length=\"30\"/></Response>",
            status_callback=f"{platform.url}/call-status")
        assert call.sid.startswith("CA")
        await phone.wait_for("say", lambda e: e["text"] == "Your reminder")
        await twilio.calls(call.sid).update_async(url=f"{platform.url}/voice")
        await phone.wait_for("say", lambda e: e["text"] == "Redirected here")
        await twilio.calls(call.sid).update_async(status="completed")
        await phone.wait_for("call_state", lambda e: e["state"] == "completed")
    fetched = await twilio.calls(call.sid).fetch_async()
    assert fetched.status == "completed" and fetched.direction == "outbound-api"
    status = next(r for r in platform.requests if r["path"] == "/call-status")
    assert status["valid"] and status["form"]["CallStatus"] == "completed"


async def _final_status(platform: Platform, sid: str) -> dict[str, Any]:
    for _ in range(200):
        if found := [r["form"] for r in platform.requests if r["path"] == "/call-status" and r["form"]["CallSid"] == sid]:
            return found[-1]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no status callback for {sid}")


@pytest.mark.parametrize(("when_called", "status", "answered_by"), [
    ("busy", "busy", None),
    ("no-answer", "no-answer", None),
    ("voicemail", "completed", "machine_start"),
])
async def test_a_phone_can_be_busy_leave_a_call_unanswered_or_answer_as_voicemail(
        twilio: Client, platform: Platform, carrier_url: str, when_called: str, status: str,
        answered_by: str | None) -> None:
    """What Twilio reports: the final CallStatus, and with MachineDetection, AnsweredBy on the TwiML
    request and the status callback (a voicemail box "hears" the <Say>)."""
    number = await _buy(twilio, platform)
    platform.voice_twiml = "<Response><Say>Your reminder: stretch</Say></Response>"
    async with handset(carrier_url, CALLER, when_called=when_called) as phone:
        call = await twilio.calls.create_async(to=CALLER, from_=number, url=f"{platform.url}/voice", timeout=2,
                                               machine_detection="Enable", status_callback=f"{platform.url}/call-status")
        final = await _final_status(platform, call.sid)
        assert final["CallStatus"] == status and final.get("AnsweredBy") == answered_by, final
        fetched = await twilio.calls(call.sid).fetch_async()
        assert fetched.status == status and fetched.answered_by == answered_by
        asked = [r["form"] for r in platform.requests if r["path"] == "/voice" and r["form"]["CallSid"] == call.sid]
        if when_called == "voicemail":
            assert asked[0]["AnsweredBy"] == "machine_start"
            assert (await phone.wait_for("say"))["text"] == "Your reminder: stretch"
        else:
            assert asked == [], "an unanswered call fetches no TwiML"
        if when_called == "no-answer":
            assert (await phone.wait_for("incoming_call"))["call_sid"] == call.sid, "it rang"
        await phone.when_called("ring")  # and a phone can change its mind
        with pytest.raises(TwilioRestException) as bad:
            await twilio.calls.create_async(to=CALLER, from_=number, url=f"{platform.url}/voice", timeout=0)
        assert bad.value.code == 21216


async def test_bad_input_gets_twilio_errors(twilio: Client, platform: Platform) -> None:
    number = await _buy(twilio, platform)
    with pytest.raises(TwilioRestException) as no_body:
        await twilio.messages.create_async(to=CALLER, from_=number, body="")
    assert no_body.value.code == 21602
    with pytest.raises(TwilioRestException) as not_ours:
        await twilio.messages.create_async(to=CALLER, from_="+15559999999", body="hi")
    assert not_ours.value.code == 21606
    with pytest.raises(TwilioRestException) as no_twiml:
        await twilio.calls.create_async(to=CALLER, from_=number)
    assert no_twiml.value.code == 21205


async def test_a_call_hung_up_while_its_stream_opens_closes_the_socket_once_open() -> None:
    """The platform must not be left holding a socket nobody will speak on (it would wait for a
    `start` that never comes): the carrier closes it as soon as the upgrade is answered."""
    import hashlib

    from emulators.carrier.media import MediaStream

    upgrade_seen, answer, closed = asyncio.Event(), asyncio.Event(), asyncio.Event()
    after_upgrade: list[bytes] = []

    async def platform(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key"))
        upgrade_seen.set()
        await answer.wait()  # the call is hung up before the upgrade is answered
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        await writer.drain()
        while chunk := await reader.read(1024):
            after_upgrade.append(chunk)
        closed.set()
        writer.close()

    server = await asyncio.start_server(platform, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def play(frame: bytes) -> None:
        pass

    stream = MediaStream(url=f"ws://127.0.0.1:{port}/media", account_sid="AC" + "0" * 32, call_sid="CA" + "0" * 32,
                         parameters={}, play=play, auth_token="secret")
    running = asyncio.create_task(stream.run())
    await asyncio.wait_for(upgrade_seen.wait(), 10)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    answer.set()
    await asyncio.wait_for(closed.wait(), 5)  # without the fix: open until the platform gives up
    assert after_upgrade and after_upgrade[0][0] == 0x88, "a close frame, then the socket closed; nothing else sent"
    server.close()


class _Recorder:
    """Stands in for a Media Stream's socket: what the carrier sends, and when."""

    is_disconnected = False

    def __init__(self) -> None:
        self.sent: list[tuple[float, dict[str, Any]]] = []

    def send(self, _: Any, data: bytes) -> None:
        self.sent.append((time.monotonic(), json.loads(data)))

    def caller_frames_since(self, moment: float) -> list[bytes]:
        return [base64.b64decode(e["media"]["payload"]) for at, e in self.sent if at >= moment and e["event"] == "media"]


async def test_a_late_carrier_keeps_the_line_in_real_time_but_never_cuts_the_callers_words() -> None:
    """A stalled event loop (many calls): once the caller has been quiet a while, the silence it
    missed goes out at once, so the platform hears the turn end when it did; right after their words
    it is not made up (more words may still be on the way) and never lands inside them."""
    stream = MediaStream(url="ws://unused", account_sid="AC", call_sid="CA", parameters={}, play=_no_play,
                         auth_token="token")
    stream.ws = recorder = _Recorder()
    sender = asyncio.create_task(stream._send_caller_audio())  # noqa: SLF001
    try:
        await asyncio.sleep(0.1)
        time.sleep(1.0)  # the loop stalls with the caller long quiet
        resumed = time.monotonic()
        await asyncio.sleep(0.01)
        made_up = len(recorder.caller_frames_since(resumed))
        assert made_up >= 45, f"{made_up} frames of the stalled second went out at once"

        words = [bytes([n]) * FRAME_BYTES for n in range(25)]  # half a second of speech, queued at once
        for frame in words:
            stream.caller_frame(frame)
        await asyncio.sleep(0.6)  # the words go out in real time, then 0.1 s of silence
        time.sleep(1.0)  # a stall right after them
        resumed = time.monotonic()
        await asyncio.sleep(0.01)
        after_words = len(recorder.caller_frames_since(resumed))
        # Of the 1.1 s quiet, the first QUIET_S is not made up (a stall as long as that inside their
        # words leaves no silence in them).
        assert after_words <= (1.1 - QUIET_S) / FRAME_S + 3, f"{after_words}: only the silence past QUIET_S"
        more = [bytes([100 + n]) * FRAME_BYTES for n in range(10)]  # more words, read late
        for frame in more:
            stream.caller_frame(frame)
        await asyncio.sleep(0.3)
        sent = [base64.b64decode(e["media"]["payload"]) for _, e in recorder.sent if e["event"] == "media"]
        assert [frame for frame in sent if frame != SILENCE] == words + more, "every word, in order"
    finally:
        sender.cancel()


async def _no_play(_: bytes) -> None:
    return None
