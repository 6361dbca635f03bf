"""One Media Stream: the carrier connects to the platform's websocket and speaks Twilio's protocol.

Inbound (caller -> platform): a `media` event every 20 ms, the caller's audio or silence, as Twilio
does. Outbound (platform -> caller): `media` is played in real time, `mark` is echoed once the audio
before it has played, and `clear` drops what is queued (barge-in), echoing the dropped marks.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import websockets

from emulators.carrier import twiml
from emulators.carrier.store import new_sid

log = logging.getLogger(__name__)

FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law
FRAME_S = 0.02
SILENCE = b"\xff" * FRAME_BYTES


class MediaStream:
    def __init__(
        self,
        *,
        url: str,
        account_sid: str,
        call_sid: str,
        parameters: dict[str, str],
        play: Callable[[bytes], Awaitable[None]],
        auth_token: str,
    ) -> None:
        self.url = url
        self.auth_token = auth_token  # signs the upgrade, as Twilio does
        self.account_sid = account_sid
        self.call_sid = call_sid
        self.parameters = parameters
        self.play = play  # delivers platform audio to the caller's handset
        self.stream_sid = new_sid("MZ")
        self.caller_audio: deque[bytes | str] = deque()  # frames and DTMF digits, kept in order
        self.playback: deque[bytes | str] = deque()  # audio frames and mark names, in order
        self.queued = asyncio.Event()  # playback has something: an idle call does not poll every 20 ms
        self.ws: Any = None
        self.sequence = 0
        self.marks_echoed: list[str] = []
        self.clears = 0

    def _next_sequence(self) -> str:
        self.sequence += 1
        return str(self.sequence)

    async def _send(self, event: dict[str, Any]) -> None:
        event = {"event": event.pop("event"), "sequenceNumber": self._next_sequence(), **event}
        await self.ws.send(json.dumps(event))

    def caller_frame(self, frame: bytes) -> None:
        self.caller_audio.append(frame)

    def dtmf(self, digit: str) -> None:
        self.caller_audio.append(digit)

    async def run(self) -> None:
        """Until the platform closes the socket; cancel to end it from the carrier's side (sends `stop`)."""
        # Twilio signs the upgrade request: X-Twilio-Signature over the stream URL, no parameters.
        signed = {"X-Twilio-Signature": twiml.signature(self.auth_token, self.url, {})}
        async with websockets.connect(self.url, open_timeout=10, max_size=2**20, additional_headers=signed,
                                      compression=None) as ws:  # Twilio's Media Streams are not deflated
            self.ws = ws
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            await self._send({
                "event": "start",
                "streamSid": self.stream_sid,
                "start": {
                    "accountSid": self.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": self.parameters,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            })
            tasks = [asyncio.create_task(self._send_caller_audio()), asyncio.create_task(self._play_out())]
            try:
                await self._receive()
            except asyncio.CancelledError:
                try:
                    await asyncio.wait_for(self._send({"event": "stop", "streamSid": self.stream_sid,
                                                       "stop": {"accountSid": self.account_sid, "callSid": self.call_sid}}), 1)
                except Exception:
                    pass
                raise
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _receive(self) -> None:
        try:
            async for raw in self.ws:
                try:
                    message = json.loads(raw)
                    event = message["event"]
                except (ValueError, KeyError, TypeError):
                    log.warning("call %s: ignoring malformed stream message", self.call_sid)
                    continue
                if event == "media":
                    payload = base64.b64decode(message["media"]["payload"])
                    for start in range(0, len(payload), FRAME_BYTES):
                        self.playback.append(payload[start:start + FRAME_BYTES])
                    self.queued.set()
                elif event == "mark":
                    self.playback.append(str(message["mark"]["name"]))
                    self.queued.set()
                elif event == "clear":
                    self.clears += 1
                    dropped = [item for item in self.playback if isinstance(item, str)]
                    self.playback.clear()
                    for name in dropped:
                        await self._echo_mark(name)
        except websockets.ConnectionClosed:
            pass

    async def _echo_mark(self, name: str) -> None:
        self.marks_echoed.append(name)
        await self._send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    async def _send_caller_audio(self) -> None:
        """Every 20 ms, on a fixed schedule, like a phone network."""
        chunk = 0
        start = time.monotonic()
        while True:
            while self.caller_audio and isinstance(self.caller_audio[0], str):
                digit = self.caller_audio.popleft()
                await self._send({"event": "dtmf", "streamSid": self.stream_sid,
                                  "dtmf": {"track": "inbound_track", "digit": digit}})
            chunk += 1
            frame = self.caller_audio.popleft() if self.caller_audio else SILENCE
            assert isinstance(frame, bytes)
            await self._send({
                "event": "media",
                "streamSid": self.stream_sid,
                "media": {"track": "inbound", "chunk": str(chunk), "timestamp": str(int((chunk - 1) * 20)),
                          "payload": base64.b64encode(frame).decode()},
            })
            await asyncio.sleep(max(0.0, start + chunk * FRAME_S - time.monotonic()))

    async def _play_out(self) -> None:
        start = time.monotonic()
        played = 0
        while True:
            item = self.playback.popleft() if self.playback else None
            if isinstance(item, str):
                await self._echo_mark(item)
                continue
            if item is None:
                self.queued.clear()
                await self.queued.wait()
                start, played = time.monotonic(), 0  # idle: restart the clock
                continue
            await self.play(item)
            played += 1
            await asyncio.sleep(max(0.0, start + played * FRAME_S - time.monotonic()))
