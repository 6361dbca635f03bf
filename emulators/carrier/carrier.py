"""The carrier's behaviour: numbers, messages, calls and the handsets attached to it."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from datetime import datetime
from typing import Any

import httpx
from picows import WSError

from core.audio import SAMPLE_RATE, frames
from core.callers import FULL_ATTESTATION
from core.http import client as http_client
from core.ports import MAX_MEDIA, MAX_MEDIA_BYTES
from core.texts import Keyword, keyword
from emulators.carrier import twiml
from emulators.carrier.media import MediaStream
from emulators.carrier.store import (
    CarrierError,
    MediaItem,
    MessageRecord,
    NumberBook,
    new_sid,
    now,
    rfc2822,
)
from emulators.speech import Listener, SpeechRegistry, frame_digest, is_speech, synthesize

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]

RING_TIMEOUT_S = 60.0  # Twilio's default Timeout for a placed call
UNATTENDED_RING_S = 2.0  # no phone attached to the number: nobody can answer
VOICEMAIL_PICKUP_S = 1.0  # a voicemail box answers after a ring or so
VOICEMAIL_MAX_S = 30.0  # and records at most this long
HEARD_WINDOW_FRAMES = 1500  # the caller's last 30 s of speech, to know whose words the voice agent heard
SAY_SECONDS_PER_WORD = 0.02  # <Say> blocks while it "speaks"; kept short so tests stay quick
# Twilio's default replies to the opt-out words (Advanced Opt-Out off), sent from the number texted.
OPT_OUT_REPLIES = {
    Keyword.STOP: "You have successfully been unsubscribed. You will not receive any more messages from this number. "
                  "Reply START to resubscribe.",
    Keyword.START: "You have successfully been re-subscribed to messages from this number. Reply HELP for help. "
                   "Reply STOP to unsubscribe. Msg&Data Rates May Apply.",
    Keyword.HELP: "Reply STOP to unsubscribe. Msg&Data Rates May Apply.",
}
APPLICATION_ERROR = "We are sorry, an application error has occurred. Goodbye."


NO_ATTESTATION = "No-TN-Validation"  # Twilio's StirVerstat for a caller ID nobody vouches for

@dataclass
class Source:
    """Where a call's next TwiML comes from: a URL to fetch, or a document given inline."""

    url: str | None = None
    method: str = "POST"
    document: str | None = None


class WhenCalled(StrEnum):
    """What a handset does when the carrier rings it (the softphone's "when called" choice)."""

    RING = "ring"  # rings until its user answers (or auto-answers)
    BUSY = "busy"  # on another call: the placed call ends busy at once
    NO_ANSWER = "no-answer"  # rings, nobody picks up: no-answer after the call's Timeout
    VOICEMAIL = "voicemail"  # the voicemail box picks up (answering-machine detection says so)


# What Twilio's answering-machine detection reports for a voicemail box, by MachineDetection mode.
MACHINE_ANSWERED_BY = {"Enable": "machine_start", "DetectMessageEnd": "machine_end_beep"}


@dataclass
class Handset:
    number: str
    send: Send
    auto_answer: bool = False
    call: Call | None = None
    when_called: WhenCalled = WhenCalled.RING


@dataclass
class Call:
    sid: str
    from_: str
    to: str
    direction: str  # inbound | outbound-api
    handset: str  # the simulated phone on this call
    source: Source
    status: str = "queued"
    status_callback: str | None = None
    ring_timeout_s: float = RING_TIMEOUT_S
    machine_detection: str | None = None  # Enable | DetectMessageEnd (placed calls)
    answered_by: str | None = None  # human | machine_start | machine_end_beep (with machine detection)
    created: datetime = field(default_factory=now)
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    stream: MediaStream | None = None
    task: asyncio.Task[None] | None = None
    verb_task: asyncio.Task[Source | None] | None = None
    next_source: Source | None = None
    transcript: list[dict[str, str]] = field(default_factory=list)  # what the caller was told via <Say>
    peer: str | None = None  # a handset bridged in by <Dial>
    peer_joined: asyncio.Event = field(default_factory=asyncio.Event)
    peer_left: asyncio.Event = field(default_factory=asyncio.Event)
    attestation: str | None = None  # STIR/SHAKEN verdict on the caller ID (inbound calls)
    redirected: bool = False  # its TwiML was replaced through the REST API mid-call
    listener: Listener | None = None  # the voice agent's words as the caller hears them, for captions
    caller_speech: deque[bytes] = field(default_factory=lambda: deque(maxlen=HEARD_WINDOW_FRAMES))

    @property
    def party(self) -> str:
        """Who the handset is talking to: the number it called, or that called it."""
        return self.to if self.direction == "inbound" else self.from_

    @property
    def duration(self) -> int:
        if not self.answered_at:
            return 0
        return int(((self.ended_at or now()) - self.answered_at).total_seconds())

    def resource(self, account_sid: str) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "account_sid": account_sid,
            "to": self.to,
            "from": self.from_,
            "status": self.status,
            "direction": self.direction,
            "answered_by": self.answered_by,
            "duration": str(self.duration) if self.ended_at else None,
            "start_time": rfc2822(self.answered_at) if self.answered_at else None,
            "end_time": rfc2822(self.ended_at) if self.ended_at else None,
            "date_created": rfc2822(self.created),
            "date_updated": rfc2822(now()),
            "api_version": "2010-04-01",
            "uri": f"/2010-04-01/Accounts/{account_sid}/Calls/{self.sid}.json",
        }


class Carrier:
    def __init__(self, account_sid: str, auth_token: str, *, http: httpx.AsyncClient | None = None,
                 speech: SpeechRegistry | None = None, public_url: str = "") -> None:
        """`public_url`: where the carrier's REST API is served (its MMS media URLs point there)."""
        self.account_sid = account_sid
        self.public_url = public_url.rstrip("/")
        self.speech = speech or SpeechRegistry()
        self.speech.on_heard(self._heard)
        self.auth_token = auth_token
        # Twilio's webhook timeout; no cap on connections at once (httpx's default pool of 100 is not
        # Twilio's: with hundreds of calls and texts at once, webhooks waited for a connection and failed).
        self.http = http or http_client(15.0)
        self.numbers = NumberBook()
        self.messages: dict[str, MessageRecord] = {}
        # Twilio's default opt-out management: (our number, their phone) pairs that texted STOP.
        self.opted_out: set[tuple[str, str]] = set()
        self.calls: dict[str, Call] = {}
        self.handsets: dict[str, Handset] = {}
        self.webhook_log: list[dict[str, Any]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._delivery_order: dict[str, asyncio.Lock] = {}

    def _spawn(self, work: Awaitable[None]) -> None:
        """Fire-and-forget deliveries, referenced until done (the loop only keeps weak references)."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---- webhooks -------------------------------------------------------------------------

    async def post_webhook(self, url: str, params: dict[str, str]) -> httpx.Response:
        """Form-encoded and signed with X-Twilio-Signature, exactly as Twilio sends it."""
        headers = {"X-Twilio-Signature": twiml.signature(self.auth_token, url, params), "User-Agent": "TwilioProxy/1.1"}
        response = await self.http.post(url, data=params, headers=headers)
        self.webhook_log.append({"url": url, "params": params, "status": response.status_code})
        return response

    async def _callback(self, url: str | None, params: dict[str, str]) -> None:
        if not url:
            return
        try:
            await self.post_webhook(url, params)
        except httpx.HTTPError as error:
            log.warning("status callback to %s failed: %s", url, error)

    # ---- handsets -------------------------------------------------------------------------

    def attach(self, number: str, send: Send, *, auto_answer: bool = False,
               when_called: WhenCalled = WhenCalled.RING) -> Handset:
        handset = Handset(number, send, auto_answer, when_called=when_called)
        self.handsets[number] = handset
        return handset

    def detach(self, handset: Handset) -> None:
        if handset.call:
            self.end_call(handset.call, "completed")
        if self.handsets.get(handset.number) is handset:
            del self.handsets[handset.number]

    async def _notify(self, number: str, event: dict[str, Any]) -> None:
        handset = self.handsets.get(number)
        if handset:
            try:
                await handset.send(event)
            except Exception:  # the handset went away mid-send; its detach cleans up
                log.debug("handset %s unreachable", number)

    # ---- messaging ------------------------------------------------------------------------

    async def send_message(self, *, to: str, from_: str, body: str, status_callback: str | None,
                           direction: str = "outbound-api") -> MessageRecord:
        if not to.startswith("+") or not from_:
            raise CarrierError(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if direction == "outbound-api" and self.numbers.by_number(from_) is None:
            raise CarrierError(400, 21606, f"The From phone number {from_} is not a valid, SMS-capable number for your account.")
        if not body:
            raise CarrierError(400, 21602, "Message body is required.")
        if (from_, to) in self.opted_out:
            raise CarrierError(400, 21610, "Attempt to send to unsubscribed recipient")
        message = MessageRecord(new_sid("SM"), to=to, from_=from_, body=body, direction=direction,
                                status_callback=status_callback)
        self.messages[message.sid] = message
        self._spawn(self._deliver(message))
        return message

    async def _deliver(self, message: MessageRecord) -> None:
        """sent, the phone gets it, delivered: one recipient's texts in the order they were sent
        (however long each status callback takes)."""
        base = {"MessageSid": message.sid, "SmsSid": message.sid, "AccountSid": self.account_sid,
                "From": message.from_, "To": message.to}
        async with self._delivery_order.setdefault(message.to, asyncio.Lock()):
            message.status = "sent"
            await self._callback(message.status_callback, {**base, "MessageStatus": "sent", "SmsStatus": "sent"})
            await self._notify(message.to, {"type": "sms", "sid": message.sid, "from": message.from_,
                                            "body": message.body})
        message.status = "delivered"
        await self._callback(message.status_callback, {**base, "MessageStatus": "delivered", "SmsStatus": "delivered"})

    async def handset_sms(self, *, from_: str, to: str, body: str,
                          media: Sequence[tuple[str, bytes]] = ()) -> MessageRecord:
        """A handset texts a number (an MMS with `media`, (content type, bytes) each): an owned
        number's SmsUrl gets Twilio's inbound webhook."""
        if len(media) > MAX_MEDIA or sum(len(data) for _, data in media) > MAX_MEDIA_BYTES:
            raise CarrierError(400, 21623, f"An MMS carries at most {MAX_MEDIA} attachments, 5 MB in all.")
        if not body and not media:
            raise CarrierError(400, 21602, "Message body is required.")
        owned = self.numbers.by_number(to)
        message = MessageRecord(new_sid("MM" if media else "SM"), to=to, from_=from_, body=body, direction="inbound",
                                status="received", media=[MediaItem(new_sid("ME"), kind, data) for kind, data in media])
        self.messages[message.sid] = message
        if owned is None:
            await self._notify(to, {"type": "sms", "sid": message.sid, "from": from_, "body": body})
            return message
        said = keyword(body)
        if said is not None:  # Twilio answers these words itself, and still tells the webhook
            await self._opt(said, number=to, phone=from_)
        if owned.sms_url:
            self._spawn(self._inbound_sms(owned.sms_url, message, opt_out=said.value.upper() if said else ""))
        return message

    async def _opt(self, said: Keyword, *, number: str, phone: str) -> None:
        if said == Keyword.START:
            self.opted_out.discard((number, phone))
        await self.send_message(to=phone, from_=number, body=OPT_OUT_REPLIES[said], status_callback=None,
                                direction="outbound-reply")  # the last text before a STOP holds
        if said == Keyword.STOP:
            self.opted_out.add((number, phone))

    async def _inbound_sms(self, url: str, message: MessageRecord, *, opt_out: str = "") -> None:
        params = {"MessageSid": message.sid, "SmsSid": message.sid, "SmsMessageSid": message.sid,
                  "AccountSid": self.account_sid, "MessagingServiceSid": "", "From": message.from_,
                  "To": message.to, "Body": message.body, "NumMedia": str(len(message.media)), "NumSegments": "1",
                  "SmsStatus": "received", "ApiVersion": "2010-04-01", **({"OptOutType": opt_out} if opt_out else {})}
        for index, item in enumerate(message.media):
            params[f"MediaUrl{index}"] = self.public_url + message.media_path(self.account_sid, item.sid)
            params[f"MediaContentType{index}"] = item.content_type
        try:  # like a phone network, one sender's texts to one number arrive in the order sent
            async with self._delivery_order.setdefault(f"{message.from_}>{message.to}", asyncio.Lock()):
                response = await self.post_webhook(url, params)
        except httpx.HTTPError as error:
            log.warning("SMS webhook %s failed: %s", url, error)
            return
        if response.status_code != 200 or not response.text.strip():
            return
        try:
            verbs = twiml.parse(response.text)
        except twiml.TwimlError as error:
            log.warning("SMS webhook answered bad TwiML: %s", error)
            return
        for verb in verbs:
            if verb.name == "Message" and verb.text:
                await self.send_message(to=verb.attrs.get("to", message.from_), from_=message.to, body=verb.text,
                                        status_callback=None, direction="outbound-reply")

    # ---- calls ----------------------------------------------------------------------------

    def place_call(self, *, to: str, from_: str, source: Source, status_callback: str | None,
                   ring_timeout_s: float = RING_TIMEOUT_S, machine_detection: str | None = None) -> Call:
        """REST Calls.create: ring a handset; run the TwiML once it answers."""
        if not to.startswith("+"):
            raise CarrierError(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if self.numbers.by_number(from_) is None:
            raise CarrierError(400, 21210, f"The source phone number provided, {from_}, is not yet verified for your account.")
        if machine_detection not in (None, *MACHINE_ANSWERED_BY):
            raise CarrierError(400, 21200, f"MachineDetection must be Enable or DetectMessageEnd, not {machine_detection}")
        call = Call(new_sid("CA"), from_=from_, to=to, direction="outbound-api", handset=to, source=source,
                    status_callback=status_callback, ring_timeout_s=ring_timeout_s,
                    machine_detection=machine_detection)
        self.calls[call.sid] = call
        call.task = asyncio.create_task(self._run_outbound(call))
        return call

    async def handset_dial(self, handset: Handset, to: str, *, caller_id: str | None = None,
                           attestation: str | None = None) -> Call:
        """A call from a handset. The carrier attests its own subscriber's number fully; a caller ID the
        handset sets itself (spoofing) gets `attestation`, by default none at all."""
        if handset.call:
            raise CarrierError(409, 0, "this handset is already on a call")
        owned = self.numbers.by_number(to)
        if owned and owned.voice_url:
            source = Source(url=owned.voice_url, method=owned.voice_method)
        else:
            source = Source(document="<Response><Say>The number you have dialed is not in service.</Say><Hangup/></Response>")
        spoofed = bool(caller_id and caller_id != handset.number)
        call = Call(new_sid("CA"), from_=caller_id or handset.number, to=to, direction="inbound",
                    handset=handset.number, source=source, status_callback=owned.status_callback if owned else None,
                    attestation=(attestation or NO_ATTESTATION) if spoofed else FULL_ATTESTATION)
        self.calls[call.sid] = call
        handset.call = call
        call.task = asyncio.create_task(self._run_inbound(call))
        return call

    def answer(self, handset: Handset, call_sid: str) -> None:
        call = self.calls.get(call_sid)
        if call is not None and call.peer == handset.number and call.status == "in-progress":
            handset.call = call  # the callee of a <Dial>
            call.peer_joined.set()
            return
        if call is None or call.handset != handset.number or call.status != "ringing":
            raise CarrierError(404, 20404, f"no ringing call {call_sid} for {handset.number}")
        handset.call = call
        call.answered.set()

    def update_call(self, call: Call, *, source: Source | None, status: str | None) -> None:
        """REST Calls(sid).update: redirect to new TwiML, or end the call."""
        if call.status in ("completed", "canceled", "failed", "busy", "no-answer"):
            raise CarrierError(400, 21220, "Call is not in-progress. Cannot redirect.")
        if status in ("completed", "canceled"):
            self.end_call(call, "completed" if call.status == "in-progress" else "canceled")
        elif source is not None:
            call.next_source = source
            call.redirected = True  # the platform took the call elsewhere (e.g. the hotline's hand-off)
            if call.verb_task:
                call.verb_task.cancel()

    def end_call(self, call: Call, status: str) -> None:
        if call.task and not call.task.done() and asyncio.current_task() is not call.task:
            call.next_source = None
            call.status = status
            call.task.cancel()

    async def _set_status(self, call: Call, status: str) -> None:
        call.status = status
        await self._notify(call.handset, {"type": "call_state", "call_sid": call.sid, "state": status})

    async def _run_outbound(self, call: Call) -> None:
        try:
            handset = self.handsets.get(call.to)
            if handset is not None and handset.when_called == WhenCalled.BUSY:  # (a phone on a call has call waiting)
                await self._finish(call, "busy")
                return
            await self._set_status(call, "ringing")
            if handset is not None:
                await handset.send({"type": "incoming_call", "call_sid": call.sid, "from": call.from_})
                if handset.when_called == WhenCalled.VOICEMAIL:
                    await asyncio.sleep(VOICEMAIL_PICKUP_S)
                    await self._run_voicemail(call, handset)
                    return
                if handset.auto_answer and handset.when_called == WhenCalled.RING:
                    handset.call = call
                    call.answered.set()
            try:
                await asyncio.wait_for(call.answered.wait(), call.ring_timeout_s if handset else UNATTENDED_RING_S)
            except TimeoutError:
                await self._finish(call, "no-answer")
                return
            if call.machine_detection:
                call.answered_by = "human"
            await self._run_answered(call)
        except asyncio.CancelledError:
            await self._finish(call, call.status if call.status != "in-progress" else "completed")

    async def _run_voicemail(self, call: Call, handset: Handset) -> None:
        """The voicemail box answers: its TwiML plays into the box (the handset is told what was left),
        until the document ends, the platform hangs up, or the box's time runs out."""
        handset.call = call
        if call.machine_detection:
            call.answered_by = MACHINE_ANSWERED_BY[call.machine_detection]
        try:
            await asyncio.wait_for(self._run_answered(call), VOICEMAIL_MAX_S)
        except TimeoutError:
            await self._finish(call, "completed")

    async def _run_inbound(self, call: Call) -> None:
        try:
            await self._set_status(call, "ringing")
            await self._run_answered(call)
        except asyncio.CancelledError:
            await self._finish(call, "completed" if call.answered_at else "canceled")

    async def _run_answered(self, call: Call) -> None:
        call.answered_at = now()
        await self._set_status(call, "in-progress")
        source: Source | None = call.source
        base_url = ""
        while source is not None:
            call.next_source = None
            try:
                document, base_url = await self._load(call, source, base_url)
                verbs = twiml.parse(document)
            except (httpx.HTTPError, twiml.TwimlError, CarrierError) as error:
                log.warning("call %s: %s", call.sid, error)
                await self._say(call, APPLICATION_ERROR)
                break
            call.verb_task = asyncio.create_task(self._execute(call, verbs, base_url))
            try:
                source = await call.verb_task
            except asyncio.CancelledError:
                if call.next_source is None or asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise
                source = call.next_source  # redirected by a REST update
        await self._finish(call, "completed")

    async def _load(self, call: Call, source: Source, base_url: str) -> tuple[str, str]:
        if source.document is not None:
            return source.document, base_url
        assert source.url is not None
        url = twiml.absolute(base_url, source.url)
        params = {"AccountSid": self.account_sid, "CallSid": call.sid, "From": call.from_, "To": call.to,
                  "Caller": call.from_, "Called": call.to, "CallStatus": call.status, "Direction": call.direction,
                  "ApiVersion": "2010-04-01", **({"StirVerstat": call.attestation} if call.attestation else {}),
                  **({"AnsweredBy": call.answered_by} if call.answered_by else {})}
        response = await self.post_webhook(url, params)
        if response.status_code != 200:
            raise CarrierError(502, 11200, f"HTTP {response.status_code} from {url}")
        return response.text, url

    async def _execute(self, call: Call, verbs: list[twiml.Verb], base_url: str) -> Source | None:
        for verb in verbs:
            if verb.name == "Say":
                await self._say(call, verb.text, verb.attrs.get("voice"))
            elif verb.name == "Pause":
                await asyncio.sleep(float(verb.attrs.get("length", "1")))
            elif verb.name == "Hangup":
                return None
            elif verb.name == "Reject":  # never answered, not billed: busy, or (the default) no-answer
                call.answered_at = None
                await self._finish(call, "busy" if verb.attrs.get("reason") == "busy" else "no-answer")
                return None
            elif verb.name == "Redirect":
                return Source(url=twiml.absolute(base_url, verb.text), method=verb.attrs.get("method", "POST"))
            elif verb.name == "Connect":
                for child in verb.children:
                    if child.name == "Stream":
                        await self._stream(call, child)
            elif verb.name == "Dial":
                await self._dial(call, verb)
            else:
                log.warning("call %s: unsupported TwiML verb <%s>", call.sid, verb.name)
                await self._say(call, APPLICATION_ERROR)
                return None
        return None  # Twilio hangs up when the document runs out

    async def _say(self, call: Call, text: str, voice: str | None = None) -> None:
        call.transcript.append({"role": "carrier", "text": text})
        await self._notify(call.handset, {"type": "say", "call_sid": call.sid, "text": text, "voice": voice})
        await asyncio.sleep(SAY_SECONDS_PER_WORD * len(text.split()))

    async def _stream(self, call: Call, verb: twiml.Verb) -> None:
        url = verb.attrs.get("url", "")
        if not url.startswith(("ws://", "wss://")):
            raise twiml.TwimlError(f"<Stream url> must be a websocket URL, got {url!r}")
        parameters = {p.attrs["name"]: p.attrs.get("value", "") for p in verb.children if p.name == "Parameter"}

        listener = call.listener = call.listener or Listener(self.speech)

        async def play(frame: bytes) -> None:
            if (words := listener.caption(frame)) is not None:  # the agent's words, as they reach the caller
                await self._caption(call, "agent", words)
            await self._notify(call.handset, {"type": "audio", "call_sid": call.sid,
                                              "payload": base64.b64encode(frame).decode()})

        call.stream = MediaStream(url=url, account_sid=self.account_sid, call_sid=call.sid,
                                  parameters=parameters, play=play, auth_token=self.auth_token)
        try:
            await call.stream.run()
        except (OSError, TimeoutError, WSError) as error:  # the socket could not be opened (or was refused)
            log.warning("call %s: stream to %s failed: %s", call.sid, url, error)
        finally:
            call.stream = None

    async def _dial(self, call: Call, verb: twiml.Verb) -> None:
        """<Dial> another handset: ring it and relay audio both ways until the callee hangs up
        (then TwiML goes on after <Dial>, as on Twilio). Busy or unanswered also goes on."""
        target = verb.text or next((c.text for c in verb.children if c.name == "Number"), "")
        other = self.handsets.get(target)
        if other is None or other.call is not None:
            return
        call.peer, call.peer_joined, call.peer_left = target, asyncio.Event(), asyncio.Event()
        await other.send({"type": "incoming_call", "call_sid": call.sid, "from": call.from_})
        try:
            await asyncio.wait_for(call.peer_joined.wait(), float(verb.attrs.get("timeout", "30")))
            await call.peer_left.wait()
        except TimeoutError:
            pass
        finally:
            if other.call is call:
                other.call = None
                await self._notify(target, {"type": "call_state", "call_sid": call.sid, "state": "completed"})
            call.peer = None

    async def _finish(self, call: Call, status: str) -> None:
        if call.ended_at:
            return
        call.ended_at = now()
        call.status = status
        handset = self.handsets.get(call.handset)
        if handset and handset.call is call:
            handset.call = None
        await self._notify(call.handset, {"type": "call_state", "call_sid": call.sid, "state": status})
        await self._callback(call.status_callback, {
            "AccountSid": self.account_sid, "CallSid": call.sid, "From": call.from_, "To": call.to,
            "CallStatus": status, "CallDuration": str(call.duration), "Direction": call.direction,
            "ApiVersion": "2010-04-01", **({"AnsweredBy": call.answered_by} if call.answered_by else {}),
        })

    async def handset_audio(self, handset: Handset, frame: bytes) -> None:
        call = handset.call
        if call is None:
            return
        if call.peer and call.peer_joined.is_set():
            other = call.peer if handset.number == call.handset else call.handset
            await self._notify(other, {"type": "audio", "call_sid": call.sid, "payload": base64.b64encode(frame).decode()})
        elif call.stream:
            if is_speech(frame):
                call.caller_speech.append(frame_digest(frame))
            call.stream.caller_frame(frame)

    async def _caption(self, call: Call, role: str, text: str, **extra: Any) -> None:
        """One line of the handset's timeline: who said what on this call (role caller, agent or keypad)."""
        await self._notify(call.handset, {"type": "caption", "call_sid": call.sid, "role": role, "text": text,
                                          "party": call.party, "redirected": call.redirected, **extra})

    def _heard(self, digests: set[bytes], text: str) -> None:
        """The voice agent made `text` of untyped speech: caption it on the call that carried it."""
        for call in self.calls.values():
            if call.stream and not call.ended_at and not digests.isdisjoint(call.caller_speech):
                self._spawn(self._caption(call, "caller", text, typed=False))

    async def handset_speak(self, handset: Handset, text: str) -> None:
        """A typed turn: spoken into the call with TTS, and noted so the voice agent knows the words."""
        audio = await synthesize(text)
        self.speech.register(text, audio)
        if handset.call:  # `seconds`: how long the words take to say (they are played in real time)
            await self._caption(handset.call, "caller", text, typed=True, seconds=len(audio) / SAMPLE_RATE)
        for frame in frames(audio):
            await self.handset_audio(handset, frame)

    async def handset_dtmf(self, handset: Handset, digits: str) -> None:
        if handset.call:
            await self._caption(handset.call, "keypad", digits)
        if handset.call and handset.call.stream:
            for digit in digits:
                handset.call.stream.dtmf(digit)

    async def handset_hangup(self, handset: Handset) -> None:
        call = handset.call
        if call is None:
            return
        if call.peer == handset.number:  # the <Dial> callee leaves; the caller's TwiML goes on
            call.peer_left.set()
        else:
            self.end_call(call, "completed")
