"""A scriptable simulated handset: what the softphone does, for tests and benchmarks."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import websockets

Event = dict[str, Any]


class Handset:
    def __init__(self, ws: Any, number: str) -> None:
        self.ws = ws
        self.number = number
        self.events: list[Event] = []
        self.received_at: list[float] = []  # time.monotonic() each event arrived, by its index
        self.heard = bytearray()  # platform audio played to this phone
        self.call_sid: str | None = None
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        async for raw in self.ws:
            event = json.loads(raw)
            if event["type"] == "audio":
                self.heard += base64.b64decode(event["payload"])
            elif event["type"] in ("dialing", "incoming_call"):
                self.call_sid = event["call_sid"]
            self.events.append(event)
            self.received_at.append(time.monotonic())
            async with self._changed:
                self._changed.notify_all()

    async def wait_for(self, kind: str, where: Callable[[Event], bool] = lambda e: True, *,
                       timeout: float = 15.0, after: int = 0) -> Event:
        """The first event of `kind` (from index `after` on) that satisfies `where`."""
        def found() -> Event | None:
            return next((e for e in self.events[after:] if e["type"] == kind and where(e)), None)

        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(lambda: found() is not None), timeout)
        except TimeoutError:
            # What did arrive, without the audio, so a failure says what the phone saw instead.
            seen = [{k: v for k, v in e.items() if k != "payload"} for e in self.events[after:] if e["type"] != "audio"]
            raise TimeoutError(f"no {kind!r} event as expected within {timeout:.0f}s; the phone saw: {seen[-20:]}") \
                from None
        event = found()
        assert event is not None
        return event

    async def _send(self, event: Event) -> None:
        await self.ws.send(json.dumps(event))

    async def dial(self, to: str, *, caller_id: str | None = None, attestation: str | None = None) -> str:
        """`caller_id`: show another number (as a spoofer would); the carrier then does not attest it."""
        mark = len(self.events)
        await self._send({"type": "dial", "to": to, "caller_id": caller_id, "attestation": attestation})
        return (await self.wait_for("dialing", after=mark))["call_sid"]

    async def answer(self, call_sid: str | None = None) -> None:
        await self._send({"type": "answer", "call_sid": call_sid or self.call_sid})

    async def hangup(self) -> None:
        await self._send({"type": "hangup"})

    async def dtmf(self, digits: str) -> None:
        await self._send({"type": "dtmf", "digits": digits})

    async def send_audio(self, mulaw: bytes, *, realtime: bool = True) -> None:
        """Speak: 20 ms frames, paced like a microphone unless realtime is off."""
        for start in range(0, len(mulaw), 160):
            await self._send({"type": "audio", "payload": base64.b64encode(mulaw[start:start + 160]).decode()})
            if realtime:
                await asyncio.sleep(0.02)

    async def say(self, text: str) -> None:
        """A typed turn: the carrier speaks it into the call (and the local voice agent knows the words)."""
        await self._send({"type": "speak", "text": text})

    async def when_called(self, mode: str) -> None:
        """ring | busy | no-answer | voicemail: what this phone does when the carrier rings it."""
        mark = len(self.events)
        await self._send({"type": "when_called", "mode": mode})
        await self.wait_for("when_called", after=mark)

    async def text(self, to: str, body: str, *, media: list[tuple[str, bytes]] | None = None) -> None:
        """A text; with `media` ((content type, bytes) each) an MMS."""
        attachments = [{"content_type": kind, "data": base64.b64encode(data).decode()} for kind, data in media or []]
        await self._send({"type": "sms", "to": to, "body": body, **({"media": attachments} if attachments else {})})

    def said(self) -> list[str]:
        """Every <Say> this phone heard, in order."""
        return [e["text"] for e in self.events if e["type"] == "say"]

    def texts(self) -> list[Event]:
        return [e for e in self.events if e["type"] == "sms"]


@asynccontextmanager
async def handset(carrier_url: str, number: str, *, auto_answer: bool = False,
                  when_called: str = "ring") -> AsyncIterator[Handset]:
    """Connect a phone with `number` to the carrier at `carrier_url` (http://host:port)."""
    ws_url = (carrier_url.replace("http", "ws", 1) + f"/phone/ws?number={number.replace('+', '%2B')}"
              f"&when_called={when_called}")
    if auto_answer:
        ws_url += "&auto_answer=1"
    # Uncompressed, as Twilio's own sockets: the call's audio is most of what passes, and deflating
    # every 20 ms frame costs both ends more than it saves on a local link.
    async with websockets.connect(ws_url, max_size=2**22, compression=None) as ws:
        phone = Handset(ws, number)
        phone._reader = asyncio.create_task(phone._read())
        await phone.wait_for("ready")
        try:
            yield phone
        finally:
            phone._reader.cancel()
            await asyncio.gather(phone._reader, return_exceptions=True)
