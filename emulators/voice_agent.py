"""A voice agent speaking Deepgram's Voice Agent API (v1), on loopback.

Settings -> SettingsApplied; caller audio is segmented by energy into turns as a phone call has them
(a pause under `pause_ms` stays in the turn; `turn_end_ms` of silence ends it), recognised (typed
turns exactly, other speech with Whisper: emulators/whisper.py), sent to the think endpoint from
Settings in OpenAI chat-completions format (JSON or SSE answers), and the reply is spoken as mu-law
with Piper's packaged voice a sentence at a time (emulators/voices.py; espeak-ng without it). Barge-in (a backchannel while the agent speaks does not interrupt it), function
calls, injected messages, prompt updates and KeepAlive behave as documented.
(The bridge's benchmark has its own echoing agent, in C: bench/voice_load.c.)
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
import uuid
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from core.audio import FRAME_BYTES, SAMPLE_RATE, frames, ulaw_decode
from core.http import client as http_client
from core.settings import Settings
from emulators.speech import SpeechRegistry, SpeechUnavailable, is_speech
from emulators.voices import AgentVoices
from emulators.whisper import WhisperRecognizer

log = logging.getLogger(__name__)

SPEECH_START_FRAMES = 2  # 40 ms of energy opens an utterance
PRE_ROLL_FRAMES = 12  # and it begins 240 ms earlier: a soft first sound ("call") is quieter than that
FRAME_MS = 20
BACKCHANNEL_MAX_MS = 1200  # speech over the agent this long is no "uh-huh": it interrupts at once
# What a listener says to show they are listening, not to take the turn: "uh-huh", "yeah", "ok",
# "mm-hm", "right" however Whisper or a typed turn writes them (case, hyphens, punctuation aside).
BACKCHANNEL_WORDS = frozenset({"uh", "huh", "uhhuh", "mm", "hm", "mhm", "mmhm", "hmm", "yeah", "yep", "ok", "okay",
                               "right", "alright"})
CLIENT_TIMEOUT_S = 10.0  # Deepgram closes idle sessions; clients send KeepAlive
PLAYOUT_SPEEDUP = 4  # audio leaves faster than real time, as a TTS stream does
MAX_FUNCTION_ROUNDS = 3


class SettingsError(ValueError):
    pass


def validate_settings(message: dict[str, Any]) -> dict[str, Any]:
    """The parts of Settings the emulator relies on, checked like the real service would."""
    try:
        audio_in = message["audio"]["input"]
        if audio_in["encoding"] != "mulaw" or int(audio_in["sample_rate"]) != 8000:
            raise SettingsError("only mulaw at 8000 Hz is supported by the local agent")
        output = message["audio"].get("output", {})
        if output and (output.get("encoding") != "mulaw" or int(output.get("sample_rate", 0)) != 8000):
            raise SettingsError("audio.output must be mulaw at 8000 Hz")
        agent = message["agent"]
        think = agent["think"]
        if not think["provider"]["type"]:
            raise SettingsError("agent.think.provider.type is required")
        if not str(think["endpoint"]["url"]).startswith(("http://", "https://")):
            raise SettingsError("agent.think.endpoint.url must be an http(s) URL")
        if not isinstance(agent.get("speak", {}).get("provider", {}), dict):
            raise SettingsError("agent.speak.provider must be an object")
        keyterms = agent.get("listen", {}).get("provider", {}).get("keyterms")
        if keyterms is not None and (not isinstance(keyterms, list) or not all(isinstance(k, str) for k in keyterms)):
            raise SettingsError("agent.listen.provider.keyterms must be a list of strings")
        for function in think.get("functions", []) or []:
            if not function.get("name"):
                raise SettingsError("every function needs a name")
        for item in (agent.get("context") or {}).get("messages", []) or []:
            if item.get("type") != "History" or item.get("role") not in ("user", "assistant") \
                    or not isinstance(item.get("content"), str):
                raise SettingsError("agent.context.messages takes History messages of role user or assistant")
    except (KeyError, TypeError, ValueError) as error:
        if isinstance(error, SettingsError):
            raise
        raise SettingsError(f"Settings is missing or has a bad field: {error}") from None
    return message


MAX_SPEAK_CHARS = 2000


def is_backchannel(text: str) -> bool:
    words = "".join(c if c.isalnum() or c.isspace() else " " for c in text.lower()).split()
    return 0 < len(words) <= 3 and all(word in BACKCHANNEL_WORDS for word in words)


@dataclass
class Held:
    """An utterance begun while the agent spoke, and whether it has interrupted the agent yet."""

    interrupted: bool = False


def _tools_dir() -> Path:
    return Settings.model_fields["tools_dir"].default


@dataclass
class VoiceAgentServer:
    registry: SpeechRegistry = field(default_factory=SpeechRegistry)
    recognizer: WhisperRecognizer = field(default_factory=lambda: WhisperRecognizer(_tools_dir()))
    voices: AgentVoices = field(default_factory=AgentVoices)  # espeak-ng unless given Piper
    pause_ms: int = 400  # a pause this short never ends a turn (recognition starts early after it)
    turn_end_ms: int = 700  # this much silence ends the caller's turn
    api_key: str | None = None  # None: any key is accepted
    sessions: list[AgentSession] = field(default_factory=list)
    refusing: bool = False  # new sessions refused, as an unreachable service would (for tests)
    # Think requests of every session: one client, not one per call (each new client loads the CA
    # store, tens of ms on the event loop every call carries).
    _http: httpx.AsyncClient | None = field(default=None, repr=False)

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = http_client(60.0)
        return self._http

    def app(self) -> Starlette:
        @asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            yield
            await self.voices.close()
            if self._http is not None:
                await self._http.aclose()
                self._http = None

        return Starlette(routes=[WebSocketRoute("/v1/agent/converse", self.converse),
                                 Route("/v1/speak", self.speak, methods=["POST"]),
                                 Route("/control/drop", self.drop_all, methods=["POST"])], lifespan=lifespan)

    async def drop_all(self, request: Request) -> JSONResponse:
        """Cuts every live session's socket, as a failing Deepgram node would (the chaos bench's fault)."""
        live = [session for session in self.sessions if not session.closed]
        await asyncio.gather(*(session.drop() for session in live), return_exceptions=True)
        return JSONResponse({"dropped": len(live)})

    async def speak(self, request: Request) -> Response:
        """Deepgram's TTS REST API, as far as the platform uses it: POST /v1/speak?model=<voice>
        with {"text": ...} -> a WAV (16-bit PCM at 8 kHz: espeak-ng's voices are phone-quality)."""
        if self.api_key is not None and request.headers.get("authorization") != f"Token {self.api_key}":
            return JSONResponse({"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials."}, status_code=401)
        try:
            text = str((await request.json())["text"]).strip()
        except (ValueError, KeyError, TypeError):
            text = ""
        if not text or len(text) > MAX_SPEAK_CHARS:
            return JSONResponse({"err_code": "INVALID_QUERY", "err_msg": f"text must be 1-{MAX_SPEAK_CHARS} characters"},
                                status_code=400)
        try:
            audio = await self.voices.say(text, request.query_params.get("model", ""))
        except SpeechUnavailable as error:
            return JSONResponse({"err_code": "INTERNAL_SERVER_ERROR", "err_msg": str(error)}, status_code=500)
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(SAMPLE_RATE)
            wav.writeframes(ulaw_decode(audio).tobytes())
        return Response(buffer.getvalue(), media_type="audio/wav")

    async def converse(self, websocket: WebSocket) -> None:
        if self.api_key is not None and websocket.headers.get("authorization") != f"Token {self.api_key}":
            await websocket.close(code=1008, reason="INVALID_AUTH")
            return
        if self.refusing:
            await websocket.close(code=1013, reason="UNAVAILABLE")
            return
        await websocket.accept()
        session = AgentSession(self, websocket)
        self.sessions.append(session)
        await session.run()


class AgentSession:
    def __init__(self, server: VoiceAgentServer, ws: WebSocket) -> None:
        self.server = server
        self.ws = ws
        self.settings: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []  # everything sent as JSON, for tests
        self.http = server.http
        self.utterance: list[bytes] = []
        self.speech_run = 0
        self.quiet_run = 0
        self.in_speech = False
        self.responding: asyncio.Task[None] | None = None
        self.hearing: asyncio.Task[None] | None = None  # the latest utterance being recognised
        self.speaking = False
        self.playing_until = 0.0  # when the caller will have heard the agent's last words (monotonic)
        self.held: Held | None = None  # the current utterance, if it began over the agent's words
        self.early: asyncio.Task[str] | None = None  # the recognition begun at the current pause
        self.judging: asyncio.Task[None] | None = None  # whether speech over the agent interrupts it
        self.pending_functions: dict[str, asyncio.Future[str]] = {}
        self.closed = False

    async def drop(self) -> None:
        """The socket cut from this side mid-conversation, as a failing Deepgram node would (for tests)."""
        self.closed = True
        if self.responding:
            self.responding.cancel()
        await self.ws.close(code=1011, reason="INTERNAL_SERVER_ERROR")

    async def send(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        await self._transmit(json.dumps(event))

    async def _transmit(self, data: str | bytes) -> bool:
        """False once the socket is gone under it (the client left, a keepalive timeout): the session ends."""
        try:
            if isinstance(data, str):
                await self.ws.send_text(data)
            else:
                await self.ws.send_bytes(data)
        except (RuntimeError, WebSocketDisconnect):
            self.closed = True
            return False
        return True

    async def error(self, code: str, description: str) -> None:
        await self.send({"type": "Error", "description": description, "code": code})
        await self.ws.close(code=1011 if code == "INTERNAL_SERVER_ERROR" else 1008)
        self.closed = True

    async def run(self) -> None:
        await self.send({"type": "Welcome", "request_id": str(uuid.uuid4())})
        # The socket is read apart from the work on what it brings, as a real server's transport
        # answers keepalive pings whatever its speech pipeline is doing: a reply waiting to be sent
        # (the client slow to read) must not leave pings unread until the socket is dropped.
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        reader = asyncio.create_task(self._read(inbox))
        try:
            while not self.closed:
                try:
                    # What has come is taken at once: awaiting each message (wait_for wraps it in a
                    # task) would take one turn of the loop per 20 ms frame, and with hundreds of
                    # calls a turn lasts longer than that: audio would queue here without end.
                    message = inbox.get_nowait() if not inbox.empty() else \
                        await asyncio.wait_for(inbox.get(), CLIENT_TIMEOUT_S)
                except TimeoutError:
                    await self.error("CLIENT_MESSAGE_TIMEOUT", "no audio or KeepAlive received in time")
                    break
                if message["type"] == "websocket.disconnect":
                    log.info("voice agent session closed by its client or the server (code %s)", message.get("code"))
                    break
                if message.get("bytes") is not None:
                    await self.on_audio(message["bytes"])
                elif message.get("text") is not None:
                    await self.on_message(message["text"])
        except WebSocketDisconnect:
            pass
        finally:
            self.closed = True
            for task in (self.responding, self.hearing, self.judging, reader):
                if task:
                    task.cancel()

    async def _read(self, inbox: asyncio.Queue[Any]) -> None:
        try:
            while True:
                message = await self.ws.receive()
                inbox.put_nowait(message)
                if message["type"] == "websocket.disconnect":
                    return
        except (RuntimeError, WebSocketDisconnect):  # closed from this side
            inbox.put_nowait({"type": "websocket.disconnect", "code": 1006})

    # ---- client messages ------------------------------------------------------------------

    async def on_message(self, raw: str) -> None:
        try:
            message = json.loads(raw)
            kind = message["type"]
        except (ValueError, KeyError, TypeError):
            await self.error("UNPARSABLE_CLIENT_MESSAGE", "message is not JSON with a 'type'")
            return
        if kind == "Settings":
            await self.on_settings(message)
        elif self.settings is None:
            await self.error("UNPARSABLE_CLIENT_MESSAGE", f"{kind} received before Settings")
        elif kind == "KeepAlive":
            pass
        elif kind == "FunctionCallResponse":
            future = self.pending_functions.pop(str(message.get("id")), None)
            if future and not future.done():
                future.set_result(str(message.get("content", "")))
        elif kind == "InjectUserMessage":
            await self.user_turn(str(message.get("content", "")))
        elif kind == "InjectAgentMessage":
            await self.inject_agent(str(message.get("message", "")))
        elif kind == "UpdatePrompt":
            self.settings["agent"]["think"]["prompt"] = str(message.get("prompt", ""))
            await self.send({"type": "PromptUpdated"})
        elif kind == "UpdateSpeak":
            self.settings["agent"]["speak"] = message.get("speak", {})
            await self.send({"type": "SpeakUpdated"})
        else:
            await self.error("UNPARSABLE_CLIENT_MESSAGE", f"unknown message type {kind!r}")

    async def on_settings(self, message: dict[str, Any]) -> None:
        if self.settings is not None:
            await self.error("UNPARSABLE_CLIENT_MESSAGE", "Settings may be sent only once")
            return
        try:
            self.settings = validate_settings(message)
        except SettingsError as error:
            await self.error("UNPARSABLE_CLIENT_MESSAGE", str(error))
            return
        await self.send({"type": "SettingsApplied"})
        self.history = [{"role": m["role"], "content": m["content"]}  # a conversation carried over
                        for m in (message["agent"].get("context") or {}).get("messages", []) or []]
        greeting = message["agent"].get("greeting")
        if greeting:
            self.history.append({"role": "assistant", "content": greeting})
            self.responding = asyncio.create_task(self.speak(greeting, started=time.monotonic(), think_s=0.0))

    async def inject_agent(self, text: str) -> None:
        if self.in_speech:
            await self.send({"type": "Warning", "code": "INJECT_AGENT_MESSAGE_DURING_USER_SPEECH",
                             "description": "InjectAgentMessage ignored during user speech"})
            return
        if self.speaking:
            await self.send({"type": "Warning", "code": "INJECT_AGENT_MESSAGE_DURING_AGENT_SPEECH",
                             "description": "InjectAgentMessage ignored during agent speech"})
            return
        self.history.append({"role": "assistant", "content": text})
        self.responding = asyncio.create_task(self.speak(text, started=time.monotonic(), think_s=0.0))

    # ---- listening ------------------------------------------------------------------------

    async def on_audio(self, chunk: bytes) -> None:
        if self.settings is None:
            await self.error("UNPARSABLE_CLIENT_MESSAGE", "audio received before Settings")
            return
        for frame in frames(chunk, FRAME_BYTES) if len(chunk) != FRAME_BYTES else [chunk]:
            await self.on_frame(frame)

    def keyterms(self) -> list[str]:
        assert self.settings is not None
        terms = self.settings["agent"].get("listen", {}).get("provider", {}).get("keyterms") or []
        return [str(term) for term in terms]

    def agent_playing(self) -> bool:
        return self.speaking or time.monotonic() < self.playing_until

    async def interrupt(self, held: Held | None = None) -> None:
        """Barge-in: the caller takes the turn; the agent stops talking at once."""
        if held is not None:
            if held.interrupted:
                return
            held.interrupted = True
        self.playing_until = 0.0
        await self.send({"type": "UserStartedSpeaking"})
        if self.responding and not self.responding.done():
            self.responding.cancel()

    async def on_frame(self, frame: bytes) -> None:
        speech = is_speech(frame)
        if not self.in_speech:
            self.speech_run = self.speech_run + 1 if speech else 0
            self.utterance = (self.utterance + [frame])[-PRE_ROLL_FRAMES:]
            if self.speech_run >= SPEECH_START_FRAMES:
                self.in_speech, self.quiet_run, self.early, self.held = True, 0, None, None
                if self.agent_playing():
                    self.held = Held()  # "uh-huh" must not cut the agent off: wait and see what it is
                else:
                    await self.interrupt()
            return
        self.utterance.append(frame)
        if speech:
            self.quiet_run, self.early = 0, None  # a pause, not the end: what was begun is stale
            if self.held and len(self.utterance) * FRAME_MS >= BACKCHANNEL_MAX_MS:
                await self.interrupt(self.held)  # too long for a backchannel: a new sentence
            return
        self.quiet_run += 1
        if self.early is None and self.quiet_run * FRAME_MS >= self.server.pause_ms:
            # Recognition starts at the pause, so the words are ready when the turn ends; over the
            # agent, they decide whether this was an interruption ("stop") or a backchannel.
            spoken = self.utterance[:-self.quiet_run]
            self.early = asyncio.create_task(self._recognise(spoken))
            if self.held:
                self.judging = asyncio.create_task(self._judge(self.early, self.held))
        if self.quiet_run * FRAME_MS >= self.server.turn_end_ms:
            heard, self.utterance, self.in_speech, self.speech_run = self.utterance, [], False, 0
            early, self.early = self.early, None
            held, self.held = self.held, None
            # Apart from the audio that follows: barge-in and the next words go on meanwhile.
            # Utterances keep their order.
            self.hearing = asyncio.create_task(self._hear(heard, early=early, held=held,
                                                          after=self.hearing, ended=time.monotonic()))

    async def _recognise(self, heard: list[bytes]) -> str:
        text = self.server.registry.recognise(heard)
        if text is None:
            started = time.monotonic()
            text = (await asyncio.to_thread(self.server.recognizer.transcribe, b"".join(heard), self.keyterms())).strip()
            log.info("speech nobody typed (%d frames) heard in %.2f s: %r", len(heard), time.monotonic() - started, text)
            if text:
                self.server.registry.heard(heard, text)  # the caller's caption
        return text.strip()

    async def _judge(self, recognition: asyncio.Task[str], held: Held) -> None:
        """Speech over the agent, paused: anything but a backchannel interrupts it now."""
        text = await recognition
        if text and not is_backchannel(text):
            await self.interrupt(held)

    async def _hear(self, heard: list[bytes], *, early: asyncio.Task[str] | None, held: Held | None,
                    after: asyncio.Task[None] | None, ended: float) -> None:
        if after is not None:
            await asyncio.gather(after, return_exceptions=True)
        text = await (early or self._recognise(heard))
        if not text or self.closed:
            return
        if held is not None:
            if is_backchannel(text) and not held.interrupted:
                log.info("a backchannel over the agent (%r): it goes on", text)
                return
            await self.interrupt(held)
        await self.user_turn(text, speech_ended=ended)

    # ---- thinking and speaking ------------------------------------------------------------

    async def user_turn(self, text: str, *, speech_ended: float | None = None) -> None:
        """`speech_ended`: when the caller stopped talking (none for an injected message)."""
        await self.send({"type": "ConversationText", "role": "user", "content": text})
        self.history.append({"role": "user", "content": text})
        if self.responding and not self.responding.done():
            self.responding.cancel()
        self.responding = asyncio.create_task(self.respond(speech_ended))

    async def respond(self, speech_ended: float | None = None) -> None:
        # Deepgram's total_latency runs from the end of the caller's speech: recognition included.
        started = speech_ended or time.monotonic()
        thinking = time.monotonic()
        await self.send({"type": "AgentThinking", "content": ""})
        try:
            reply = await self.think()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning("think request failed: %s", error)
            await self.send({"type": "Warning", "code": "THINK_REQUEST_FAILED", "description": str(error)[:300]})
            return
        if reply:
            self.history.append({"role": "assistant", "content": reply})
            await self.speak(reply, started=started, think_s=time.monotonic() - thinking)

    async def think(self) -> str:
        assert self.settings is not None
        think = self.settings["agent"]["think"]
        functions = think.get("functions") or []
        messages: list[dict[str, Any]] = list(self.history)
        for _ in range(MAX_FUNCTION_ROUNDS):
            body: dict[str, Any] = {
                "model": think["provider"].get("model", "default"),
                "messages": [{"role": "system", "content": think.get("prompt", "")}, *messages],
                "stream": True,
            }
            if functions:
                body["tools"] = [{"type": "function", "function": {k: f[k] for k in ("name", "description", "parameters") if k in f}}
                                 for f in functions]
            content, calls = await self._complete(think["endpoint"], body)
            if not calls:
                return content
            if content.strip():  # words that came with a function call are spoken first
                self.history.append({"role": "assistant", "content": content})
                await self.speak(content, started=time.monotonic(), think_s=0.0)
            messages.append({"role": "assistant", "content": content or None, "tool_calls": calls})
            for call in calls:
                result = await self._call_function(call, functions)
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": result})
        return ""

    async def _complete(self, endpoint: dict[str, Any], body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        headers = {str(k): str(v) for k, v in (endpoint.get("headers") or {}).items()}
        async with self.http.stream("POST", endpoint["url"], json=body, headers=headers) as response:
            if response.status_code != 200:
                raise RuntimeError(f"think endpoint answered HTTP {response.status_code}")
            if "text/event-stream" not in response.headers.get("content-type", ""):
                choice = json.loads(await response.aread())["choices"][0]["message"]
                return choice.get("content") or "", choice.get("tool_calls") or []
            content, calls = "", {}
            async for line in response.aiter_lines():
                if not line.startswith("data:") or line.strip() == "data: [DONE]":
                    continue
                for choice in json.loads(line[5:]).get("choices", []):
                    delta = choice.get("delta", {})
                    content += delta.get("content") or ""
                    for part in delta.get("tool_calls") or []:
                        slot = calls.setdefault(part.get("index", 0), {"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
                        slot["id"] = part.get("id") or slot["id"]
                        fn = part.get("function") or {}
                        slot["function"]["name"] += fn.get("name") or ""
                        slot["function"]["arguments"] += fn.get("arguments") or ""
            return content, [calls[i] for i in sorted(calls)]

    async def _call_function(self, call: dict[str, Any], functions: list[dict[str, Any]]) -> str:
        name = call["function"]["name"]
        spec = next((f for f in functions if f.get("name") == name), {})
        if spec.get("endpoint"):  # server-side: Deepgram calls it itself
            response = await self.http.post(spec["endpoint"]["url"], content=call["function"]["arguments"],
                                             headers=spec["endpoint"].get("headers") or {})
            return response.text
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.pending_functions[call["id"]] = future
        await self.send({"type": "FunctionCallRequest", "functions": [
            {"id": call["id"], "name": name, "arguments": call["function"]["arguments"], "client_side": True}]})
        return await asyncio.wait_for(future, 30)

    async def speak(self, text: str, *, started: float, think_s: float) -> None:
        """Made and sent a part at a time (a sentence, with Piper): the next is made while the first
        is heard, so the first audio leaves as soon as its own sentence is ready."""
        await self.send({"type": "ConversationText", "role": "assistant", "content": text})
        tts_started = time.monotonic()
        parts = self.server.voices.parts(text)
        making = asyncio.create_task(self.server.voices.say(parts[0], self._voice()))
        try:
            for index, part in enumerate(parts):
                try:
                    audio = await making
                except SpeechUnavailable as error:
                    await self.error("INTERNAL_SERVER_ERROR", str(error))
                    return
                if index + 1 < len(parts):
                    making = asyncio.create_task(self.server.voices.say(parts[index + 1], self._voice()))
                self.server.registry.spoke(part, audio)  # the caller's caption, as the audio reaches them
                # Sent faster than real time, heard in real time: the caller hears it until then.
                self.playing_until = max(self.playing_until, time.monotonic()) + len(audio) / SAMPLE_RATE
                if index == 0:
                    self.speaking = True  # from its first audio on (an injected message may come until then)
                    await self.send({"type": "AgentStartedSpeaking",
                                     "total_latency": round(time.monotonic() - started, 4),
                                     "tts_latency": round(time.monotonic() - tts_started, 4),
                                     "ttt_latency": round(think_s, 4)})
                for frame in frames(audio):
                    if not await self._transmit(frame):  # the client gone mid-line
                        return
                    await asyncio.sleep(0.02 / PLAYOUT_SPEEDUP)
            await self.send({"type": "AgentAudioDone"})
        finally:
            self.speaking = False
            if not making.done():
                making.cancel()

    def _voice(self) -> str:
        assert self.settings is not None
        return str(self.settings["agent"].get("speak", {}).get("provider", {}).get("model", ""))
