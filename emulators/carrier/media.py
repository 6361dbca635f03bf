"""One Media Stream: the carrier connects to the platform's websocket and speaks Twilio's protocol.

Inbound (caller -> platform): a `media` event every 20 ms, the caller's audio or silence, as Twilio
does. Outbound (platform -> caller): `media` is played in real time, `mark` is echoed once the audio
before it has played, and `clear` drops what is queued (barge-in), echoing the dropped marks.

The socket is picows (websocket frames in C, as the voice bridge's own): with a few hundred calls the
carrier sends tens of thousands of frames a second, and a pure-Python client (per frame: a
coroutine, a mask from os.urandom, JSON) took more CPU than the platform it drives.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from emulators.carrier import twiml
from emulators.carrier.store import new_sid

log = logging.getLogger(__name__)

FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law
FRAME_S = 0.02
SILENCE = b"\xff" * FRAME_BYTES
# A late loop makes up the silence it missed only once the caller has said nothing for this long:
# right after their words, more of them may still be on the way (read late too).
QUIET_S = 0.3


class _StreamListener(WSListener):  # type: ignore[misc]  # picows is compiled, without type information
    def __init__(self, stream: MediaStream) -> None:
        super().__init__()
        self.stream = stream

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            self.stream.received(frame.get_payload_as_bytes())
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()


def _close_if_opened(opening: asyncio.Future[tuple[WSTransport, WSListener]]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        transport = opening.result()[0]
        transport.send_close(WSCloseCode.OK)
        transport.disconnect()


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
        self.caller_active_at = 0.0  # when the caller's last frame or digit went out (queued ones are due anyway)
        self.playback: deque[bytes | str] = deque()  # audio frames and mark names, in order
        self.queued = asyncio.Event()  # playback has something: an idle call does not poll every 20 ms
        self.ws: Any = None
        self.sequence = 0
        self.marks_echoed: list[str] = []
        self.clears = 0

    def _next_sequence(self) -> str:
        self.sequence += 1
        return str(self.sequence)

    def _send(self, event: dict[str, Any]) -> None:
        if self.ws is None or self.ws.is_disconnected:
            return
        event = {"event": event.pop("event"), "sequenceNumber": self._next_sequence(), **event}
        self.ws.send(WSMsgType.TEXT, orjson.dumps(event))

    def caller_frame(self, frame: bytes) -> None:
        self.caller_audio.append(frame)

    def dtmf(self, digit: str) -> None:
        self.caller_audio.append(digit)

    async def run(self) -> None:
        """Until the platform closes the socket; cancel to end it from the carrier's side (sends `stop`).
        OSError, TimeoutError or picows.WSError if the socket cannot be opened."""
        # Twilio signs the upgrade request: X-Twilio-Signature over the stream URL, no parameters.
        signed = {"X-Twilio-Signature": twiml.signature(self.auth_token, self.url, {})}
        opening = asyncio.ensure_future(ws_connect(lambda: _StreamListener(self), self.url, extra_headers=signed,
                                                   websocket_handshake_timeout=10, max_frame_size=2**20))
        try:
            self.ws, _ = await asyncio.shield(opening)
        except asyncio.CancelledError:  # hung up while the socket opened: close it once open, as Twilio does
            opening.add_done_callback(_close_if_opened)
            raise
        self.ws.send(WSMsgType.TEXT, orjson.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        self._send({
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
            await self.ws.wait_disconnected()
        except asyncio.CancelledError:
            self._send({"event": "stop", "streamSid": self.stream_sid,
                        "stop": {"accountSid": self.account_sid, "callSid": self.call_sid}})
            if not self.ws.is_disconnected:
                self.ws.send_close(WSCloseCode.OK)
                self.ws.disconnect()
            raise
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def received(self, raw: bytes) -> None:
        """One message from the platform."""
        try:
            message = orjson.loads(raw)
            event = message["event"]
        except (ValueError, KeyError, TypeError):
            log.warning("call %s: ignoring malformed stream message", self.call_sid)
            return
        try:
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
                    self._echo_mark(name)
        except (ValueError, KeyError, TypeError):
            log.warning("call %s: ignoring malformed %s message", self.call_sid, event)

    def _echo_mark(self, name: str) -> None:
        self.marks_echoed.append(name)
        self._send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    async def _send_caller_audio(self) -> None:
        """Every 20 ms, on a fixed schedule, like a phone network. A late event loop sends the
        caller's frames that are due at once (as a network delivers after a hiccup): one frame per
        turn of the loop would fall behind for good once a turn, with many calls, lasts longer than
        20 ms. Silence missed while late is made up only as far as the caller was quiet for QUIET_S
        before it: right after their words, more may still be on the way (a late loop reads them late
        too), and a burst of silence would cut their words in two (as a jitter buffer knows). Past
        that the line goes on in real time: the platform hears their turn end when it did, not one
        frame per late turn of the loop (which made a turn's end seconds late under load)."""
        chunk = 0
        start = time.monotonic()
        while True:
            due = max(chunk + 1, int((time.monotonic() - start) / FRAME_S) + 1)
            while chunk < due:
                while self.caller_audio and isinstance(self.caller_audio[0], str):
                    digit = self.caller_audio.popleft()
                    self._send({"event": "dtmf", "streamSid": self.stream_sid,
                                "dtmf": {"track": "inbound_track", "digit": digit}})
                    self.caller_active_at = time.monotonic()
                if not self.caller_audio and chunk + 1 < due:  # late with nothing to say
                    missed = due - chunk - 1
                    quiet = int((time.monotonic() - self.caller_active_at - QUIET_S) / FRAME_S)
                    skipped = max(0, missed - max(0, quiet))
                    start += skipped * FRAME_S  # the clock moves on over what is not made up
                    due -= skipped
                chunk += 1
                frame = self.caller_audio.popleft() if self.caller_audio else SILENCE
                assert isinstance(frame, bytes)
                if frame is not SILENCE:
                    self.caller_active_at = time.monotonic()
                self._send({
                    "event": "media",
                    "streamSid": self.stream_sid,
                    "media": {"track": "inbound", "chunk": str(chunk), "timestamp": str(int((chunk - 1) * 20)),
                              "payload": base64.b64encode(frame).decode()},
                })
            await asyncio.sleep(max(0.0, start + chunk * FRAME_S - time.monotonic()))

    async def _play_out(self) -> None:
        """In real time, on a clock: a late loop plays what is due at once (as `_send_caller_audio`)."""
        start = time.monotonic()
        played = 0
        while True:
            item = self.playback.popleft() if self.playback else None
            if isinstance(item, str):
                self._echo_mark(item)
                continue
            if item is None:
                self.queued.clear()
                await self.queued.wait()
                start, played = time.monotonic(), 0  # idle: restart the clock
                continue
            await self.play(item)
            played += 1
            if (wait := start + played * FRAME_S - time.monotonic()) > 0:
                await asyncio.sleep(wait)
