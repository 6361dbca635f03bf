"""One call: Twilio Media Stream <-> Deepgram Voice Agent, frame by frame, no batching.

Audio never waits for a task, nor for Python: each frame is relayed in C inside the socket
callback that received it (voice/relay.pyx: picows listeners and MediaRelay, which CallBridge
extends), so the bridge adds microseconds, not a scheduler hop. Everything
else (start, DTMF, marks, the agent's events, either side closing) goes through one queue to the
call's control task. Barge-in clears Twilio's playback; DTMF reaches the agent as the caller's
words; KeepAlive keeps Deepgram's socket open; end_call says goodbye, then hangs up through
Telephony. A maximum call length, a silent-caller timeout and a stall watchdog bound every call,
and when either side closes, both sockets and every task of the call go away.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from opentelemetry.trace import SpanKind
from picows import WSCloseCode, WSError, WSMsgType, WSTransport, ws_connect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.service import RPCError

from core.callers import CallerTrust
from core.db import DATABASE_DOWN
from core.logs import log_context
from core.metrics import ACTIVE_CALLS, AGENT_RECONNECTS, CALLS, FRAME_LATENCY, WEBHOOK_REJECTIONS
from core.models import MediaStream, User
from core.ports import Telephony
from core.settings import Settings
from core.streams import LiveStreams, StreamRefused, end_stream, redeem_ticket, seal_think_token, stream_verified
from core.tokens import TokenKind
from core.tracing import TRACEPARENT, context_from, traced, tracer
from voice import messages
from voice.agent_settings import END_CALL, HAND_OFF, build_settings, pin_greeting, purpose_prompt
from voice.records import CallAlreadyConnected, CallRecorder
from voice.relay import AgentListener, MediaRelay
from workflows.onboarding import OnboardingWorkflow
from workflows.onboarding import workflow_id as onboarding_id
from workflows.onboarding_lines import HOTLINE_KEYTERMS, HOTLINE_VOICE

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
KEEPALIVE_EVERY_S = 5.0
STALL_S = 10.0  # Twilio sends a frame every 20 ms; ten quiet seconds means the line is gone
MAX_BUFFERED_BYTES = 1 << 20  # a side this far behind in reading is stalled (about a minute of audio)
DTMF_GAP_S = 1.2  # digits typed within this gap travel together
FAREWELL_WAIT_S = 8.0
SILENT_GOODBYE = "I haven't heard anything for a while, so I'll hang up now. Talk soon. Goodbye."
TIME_UP_GOODBYE = "We've reached the maximum call length, so I need to hang up now. Goodbye."
RECONNECT_APOLOGY = "Sorry, I lost you for a second. I'm back: go on."
AGENT_RECONNECT_TRIES = 2  # per drop, RECONNECT_BACKOFF_S apart
RECONNECT_BACKOFF_S = 0.5
MAX_AGENT_DROPS = 3  # a call whose voice agent keeps dropping ends, with the TwiML's apology


HOTLINE_PROMPT = "You are the DeepClaw setup line. Say exactly the text you are given."
MESSAGE_PROMPT = "You take messages for someone. Say exactly the text you are given."

GREETING_REQUEST = (
    "The user will call you again later. Write the one short sentence you will greet them with when they do: "
    "warm, personal, based on what you know of them and this call. Reply with the greeting only."
)

TEXT = WSMsgType.TEXT
Event = tuple[str, dict[str, Any]]  # (source, message): "twilio" | "agent" | "closed"


class CallRefused(Exception):
    """The Media Stream did not open properly (no start, or a malformed one)."""


@dataclass
class BridgeDeps:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    telephony: Telephony
    live: LiveStreams
    temporal: Client | None = None  # tells the hotline's onboarding when its hand-off line has played
    # Asks the user's agent a question outside the call (the next call's greeting); optional.
    ask_agent: Callable[[uuid.UUID, str, str], Awaitable[str | None]] | None = None
    background: set[asyncio.Task[None]] = field(default_factory=set)
    calls: set[asyncio.Task[None]] = field(default_factory=set)

    def spawn(self, work: Awaitable[None], into: set[asyncio.Task[None]]) -> None:
        task = asyncio.ensure_future(work)
        into.add(task)
        task.add_done_callback(into.discard)


class CallBridge(MediaRelay):
    """One call. MediaRelay holds the sockets, `relaying` and the audio counters and clocks."""

    def __init__(self, twilio: WSTransport, deps: BridgeDeps) -> None:
        super().__init__(twilio)
        self.deps = deps
        self.settings = deps.settings
        self.stream_sid = ""
        self.call_sid = ""
        self.params: dict[str, Any] = {}  # what the API recorded of this call (core.streams)
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.recorder: CallRecorder | None = None
        self.started = time.monotonic()
        # The caller's silence counts from their last words, or from the end of the agent's last
        # words when those came later: a slow answer is the agent's silence, not theirs.
        self.caller_silent_since = time.monotonic()
        self.dtmf: list[str] = []
        self.dtmf_task: asyncio.Task[None] | None = None
        self.agent_speaking = False
        self.after_speech: list[Callable[[], Awaitable[None]]] = []  # once the agent's current words are out
        self.marks: dict[str, asyncio.Event] = {}  # Twilio echoes a mark once the audio before it has played
        self.finished = asyncio.Event()
        self.clears = 0
        self.stream: MediaStream | None = None
        self.agent_drops = 0
        self.trace_carrier: dict[str, str] = {}
        self.end = "caller"  # how the call ended, for the calls metric: the caller hung up unless said otherwise
        self._side_tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, work: Awaitable[None]) -> None:
        """A task of this call: referenced until done, cancelled when the call is torn down."""
        self.deps.spawn(work, self._side_tasks)

    # ---- called from the sockets' callbacks (voice/relay.pyx), never await ----------------

    def twilio_message(self, raw: bytes) -> None:
        """Every message from Twilio but the media messages the relay recognised itself."""
        try:
            message = orjson.loads(raw)
            event = message["event"]
            if event == "media":
                frame = binascii.a2b_base64(message["media"]["payload"], strict_mode=True)
        except (ValueError, KeyError, TypeError, binascii.Error):
            self.malformed += 1
            return
        if event != "media":
            self.events.put_nowait(("twilio", message))
        else:
            self.relay_to_agent(frame)

    def agent_message(self, raw: bytes) -> None:
        try:
            event = orjson.loads(raw)
            kind = event.get("type")
        except (ValueError, AttributeError):
            log.warning("call %s: malformed message from the voice agent", self.call_sid)
            return
        if kind == "UserStartedSpeaking" and self.relaying:
            self._to_twilio({"event": "clear", "streamSid": self.stream_sid})  # barge-in, at once
        self.events.put_nowait(("agent", event))

    def agent_fragment(self) -> None:
        log.warning("call %s: fragmented message from the voice agent dropped", self.call_sid)

    def side_closed(self, side: str) -> None:
        self.relaying = False
        self.events.put_nowait(("closed", {"side": side}))

    # ---- set-up ---------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            stream = await asyncio.wait_for(self._await_start(), START_TIMEOUT_S)
        except (TimeoutError, StreamRefused, CallRefused, ValueError, KeyError, TypeError) as error:
            log.warning("media stream refused: %s", str(error) or type(error).__name__)  # a timeout has no text
            WEBHOOK_REJECTIONS.labels(reason="stream_refused").inc()
            self._close_twilio(WSCloseCode.POLICY_VIOLATION)
            return
        except DATABASE_DOWN as error:  # the ticket cannot be checked: the TwiML's apology, not silence
            log.error("call %s could not be set up, the database is unreachable: %s", self.call_sid, error)
            self._close_twilio(WSCloseCode.INTERNAL_ERROR)
            return
        # The hotline's calls have no user yet: their think endpoint is the API's conductor.
        user_id, params = stream.user_id, stream.params
        self.params = params
        self.deps.live.started(stream.id)
        ACTIVE_CALLS.inc()
        FRAME_LATENCY.live.add(self)
        # The call's span continues the webhook's trace (its traceparent came as a stream parameter).
        with log_context(user_id=str(user_id or ""), call_id=self.call_sid), tracer().start_as_current_span(
                "call", context=context_from(self.trace_carrier), kind=SpanKind.SERVER,
                attributes={"deepclaw.call.sid": self.call_sid,  # Twilio's id of the call: no one's number
                            "deepclaw.call.direction": params.get("direction", "inbound"),
                            "deepclaw.call.hotline": user_id is None}):
            self.recorder = CallRecorder(self.deps.sessions, call_sid=self.call_sid, user_id=user_id,
                                         from_number=params.get("from", ""), to_number=params.get("to", ""),
                                         direction=params.get("direction", "inbound"),
                                         attestation=params.get("attestation"))
            try:
                await self.recorder.start()
                await self._bridge(stream)
            except CallAlreadyConnected:
                log.warning("a second stream for call %s refused", self.call_sid)
                self._close_twilio(WSCloseCode.POLICY_VIOLATION)
            except DATABASE_DOWN as error:  # setting the call up needs it; a call under way does not
                log.error("call %s: the database is unreachable: %s", self.call_sid, error)
                self.end = "database_unreachable"
                self._close_twilio(WSCloseCode.INTERNAL_ERROR)
            finally:
                ACTIVE_CALLS.dec()
                FRAME_LATENCY.call_ended(self)
                CALLS.labels(end=self.end).inc()
                self.deps.live.stopped(stream.id)
                await self._after_the_call(stream, user_id)

    async def _after_the_call(self, stream: MediaStream, user_id: uuid.UUID | None) -> None:
        """The stream ended and the call recorded (waiting for a database that is down), then the
        agent writes its next greeting."""
        assert self.recorder is not None
        try:
            await end_stream(self.deps.sessions, stream.id)
        except DATABASE_DOWN as error:  # its think tokens still expire; this process knows it ended
            log.warning("call %s: its stream could not be marked ended: %s", self.call_sid, error)
        await self.recorder.finish(time.monotonic() - self.started)
        log.info("call %s ended after %.1fs: %d frames in, %d out, %d clears, %d malformed", self.call_sid,
                 time.monotonic() - self.started, self.frames_in, self.frames_out, self.clears, self.malformed)
        try:
            if user_id is not None and await self._owner_spoke(stream):
                self._prepare_next_greeting(user_id)
        except DATABASE_DOWN as error:
            log.warning("call %s: no next greeting: %s", self.call_sid, error)

    async def _await_start(self) -> MediaStream:
        while True:
            source, message = await self.events.get()
            if source == "closed":
                raise CallRefused("the stream closed before it started")
            if message.get("event") == "start":
                start = message["start"]
                self.stream_sid = message.get("streamSid") or start["streamSid"]
                if not str(self.stream_sid).isalnum():
                    raise ValueError("streamSid must be alphanumeric")
                self.set_stream(self.stream_sid)
                self.call_sid = start["callSid"]
                custom = start.get("customParameters") or {}
                self.trace_carrier = {k: str(custom[k]) for k in (TRACEPARENT, "tracestate") if k in custom}
                ticket = str(custom.get("ticket", ""))
                return await redeem_ticket(self.deps.sessions, ticket, call_sid=self.call_sid,
                                           stream_sid=self.stream_sid)
            if message.get("event") not in ("connected",):
                raise ValueError(f"expected start, got {message.get('event')!r}")

    def _think_token(self, kind: TokenKind, stream: MediaStream, **claims: str) -> str:
        """Bound to this stream: refused once it has ended (core.streams), and by no other endpoint."""
        return seal_think_token(self.settings.keyring, kind, stream.id, call_sid=self.call_sid,
                                ttl_s=self.settings.max_call_s + 600, **claims)

    async def _agent_settings(self, stream: MediaStream) -> dict[str, Any]:
        params = stream.params
        if stream.user_id is None:
            token = self._think_token(TokenKind.HOTLINE, stream, caller=params["from"])
            return build_settings(think_url=traced(f"{self.settings.api_base_url}/hotline/{token}/v1/chat/completions"),
                                  voice=HOTLINE_VOICE, greeting=params["greeting"], prompt=HOTLINE_PROMPT,
                                  functions=[END_CALL, HAND_OFF], keyterms=HOTLINE_KEYTERMS)
        async with self.deps.sessions() as session:
            user = await session.get(User, stream.user_id)
        name, voice = (user.agent_name, user.voice) if user else ("your assistant", "aura-2-thalia-en")
        trust = self.trust
        if trust == CallerTrust.MESSAGE:  # not the owner: a message for them, and nothing of theirs
            token = self._think_token(TokenKind.MESSAGE, stream, user=str(stream.user_id), caller=params.get("from", ""))
            return build_settings(think_url=traced(f"{self.settings.voice_base_url}/message/{token}/v1/chat/completions"),
                                  voice=voice, greeting=messages.greeting(name), prompt=MESSAGE_PROMPT)
        token = self._think_token(TokenKind.THINK, stream, user=str(stream.user_id),
                                  **({"pin": "1"} if trust == CallerTrust.PIN else {}))
        think_url = traced(f"{self.settings.voice_base_url}/llm/{token}/v1/chat/completions")
        if trust == CallerTrust.PIN:  # the personal greeting is the user's memory: not before the PIN
            return build_settings(think_url=think_url, voice=voice, greeting=pin_greeting(name))
        greeting = params.get("greeting") or (user and user.next_greeting) or f"Hi, it's {name}. What can I do for you?"
        rules = {"prompt": purpose_prompt(params["purpose"])} if params.get("purpose") else {}  # calls we place say why
        return build_settings(think_url=think_url, voice=voice, greeting=greeting, **rules)

    @property
    def trust(self) -> CallerTrust:
        """Calls we place or hand off reach the verified phone itself: the owner."""
        return CallerTrust(self.params.get("trust", CallerTrust.OWNER.value))

    async def _bridge(self, stream: MediaStream) -> None:
        self.stream = stream
        if not await self._connect_agent(await self._agent_settings(stream)):
            self.end = "voice_agent_unreachable"
            return  # closing the stream: Twilio goes on to the TwiML's apology (api/routes/twilio.py)
        tasks = [asyncio.create_task(coro) for coro in (self._control(), self._keepalive(), self._limits())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.relaying = False
            for task in [*tasks, *self._side_tasks]:
                task.cancel()
            if self.dtmf_task:
                self.dtmf_task.cancel()
            await asyncio.gather(*tasks, *self._side_tasks, return_exceptions=True)
            await self._close_agent()
        self._close_twilio(WSCloseCode.OK)

    async def _connect_agent(self, settings: dict[str, Any]) -> bool:
        """A voice-agent socket for this call, configured with `settings`; audio flows once it is open."""
        headers = {}
        if self.settings.deepgram_api_key:
            headers["Authorization"] = f"Token {self.settings.deepgram_api_key.get_secret_value()}"
        try:
            self.agent, _ = await ws_connect(lambda: AgentListener(self), self.settings.voice_agent_url,
                                             extra_headers=headers, websocket_handshake_timeout=10,
                                             max_frame_size=1 << 22)
        except (OSError, WSError, TimeoutError) as error:
            log.error("call %s: the voice agent is unreachable: %s", self.call_sid, error)
            return False
        self._to_agent(settings)
        self.relaying = not self.twilio.is_disconnected
        return True

    async def _reconnect_agent(self) -> bool:
        """The voice agent's socket dropped with the caller still on the line: a new one carries on
        the conversation so far (Deepgram's `agent.context` history), opening with a short apology
        instead of the greeting. False if it cannot be had (the call then ends with the TwiML's apology)."""
        self.agent_drops += 1
        if self.agent_drops > MAX_AGENT_DROPS or self.stream is None or self.finished.is_set():
            self.end = "voice_agent_lost"
            return False
        self.agent_speaking = False  # what it was saying is cut off; work waiting for its end runs now
        pending, self.after_speech = self.after_speech, []
        for work in pending:
            self._spawn(work())
        assert self.recorder is not None
        settings = await self._agent_settings(self.stream)
        settings["agent"]["greeting"] = RECONNECT_APOLOGY
        settings["agent"]["context"] = {"messages": [{"type": "History", "role": role, "content": content}
                                                     for role, content in self.recorder.history]}
        for attempt in range(AGENT_RECONNECT_TRIES):
            if attempt:
                await asyncio.sleep(RECONNECT_BACKOFF_S)
            if self.twilio.is_disconnected:
                return False
            if await self._connect_agent(settings):
                log.warning("call %s: the voice agent's socket dropped; reconnected with %d turns of history",
                            self.call_sid, len(self.recorder.history))
                AGENT_RECONNECTS.labels(outcome="reconnected").inc()
                return True
        AGENT_RECONNECTS.labels(outcome="failed").inc()
        self.end = "voice_agent_lost"
        return False

    async def _owner_spoke(self, stream: MediaStream) -> bool:
        """The agent's next greeting is written only after a call with its owner."""
        if self.trust == CallerTrust.PIN:
            return await stream_verified(self.deps.sessions, stream.id)
        return self.trust == CallerTrust.OWNER

    def _prepare_next_greeting(self, user_id: uuid.UUID) -> None:
        """In the background, after the call: the agent writes how it will greet the next one."""
        if self.deps.ask_agent is None or self.recorder is None or not self.recorder.turns:
            return
        task = asyncio.create_task(self._next_greeting(user_id))
        self.deps.background.add(task)
        task.add_done_callback(self.deps.background.discard)

    async def _next_greeting(self, user_id: uuid.UUID) -> None:
        assert self.deps.ask_agent is not None
        try:
            greeting = await self.deps.ask_agent(user_id, f"call-{self.call_sid}", GREETING_REQUEST)
        except Exception as error:
            log.warning("no greeting for the next call: %s", error)
            return
        if greeting and greeting.strip():
            async with self.deps.sessions() as session, session.begin():
                user = await session.get(User, user_id)
                if user is not None:
                    user.next_greeting = " ".join(greeting.split())[:300]

    # ---- events -------------------------------------------------------------------------

    async def _control(self) -> None:
        """Everything but audio, in arrival order, until either side is gone or Twilio says stop."""
        while True:
            source, message = await self.events.get()
            if source == "agent":
                await self._on_agent_event(message)
            elif source == "twilio":
                event = message.get("event")
                if event == "dtmf":
                    self._on_digit(str((message.get("dtmf") or {}).get("digit", "")))
                elif event == "mark" and (played := self.marks.get(str((message.get("mark") or {}).get("name")))):
                    played.set()
                elif event == "stop":
                    return
            else:  # a side closed
                log.info("call %s: the %s side closed", self.call_sid, message["side"])
                if message["side"] == "agent" and not self.twilio.is_disconnected and await self._reconnect_agent():
                    continue
                return

    def _on_digit(self, digit: str) -> None:
        if not digit:
            return
        self.dtmf.append(digit)
        self.caller_silent_since = time.monotonic()
        if self.dtmf_task:
            self.dtmf_task.cancel()
        self.dtmf_task = asyncio.create_task(self._send_digits())

    async def _send_digits(self) -> None:
        if self.dtmf[-1] != "#":
            await asyncio.sleep(DTMF_GAP_S)
        digits, self.dtmf = "".join(d for d in self.dtmf if d != "#"), []
        if digits:
            self._to_agent({"type": "InjectUserMessage", "content": digits})

    async def _on_agent_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "UserStartedSpeaking":  # Twilio's playback was cleared in the callback already
            self.caller_silent_since = time.monotonic()
            self.clears += 1
        elif kind == "ConversationText":
            if event.get("role") == "user":
                self.caller_silent_since = time.monotonic()
            assert self.recorder is not None
            await self.recorder.turn(str(event.get("role")), str(event.get("content", "")))
        elif kind == "AgentStartedSpeaking":
            self.agent_speaking = True
            assert self.recorder is not None
            self.recorder.latency(event)
        elif kind == "FunctionCallRequest":
            for call in event.get("functions", []):
                if call.get("name") == END_CALL["name"]:
                    self._when_spoken(self._hang_up_after_farewell)
                elif call.get("name") == HAND_OFF["name"] and self.params.get("from"):
                    self._when_spoken(self._hand_off_line_played)
                self._to_agent({"type": "FunctionCallResponse", "id": call.get("id"),
                                "name": call.get("name"), "content": "ok"})
        elif kind == "AgentAudioDone":
            self.agent_speaking = False
            self.caller_silent_since = time.monotonic()  # their turn to speak begins now
            pending, self.after_speech = self.after_speech, []
            for work in pending:
                self._spawn(work())
        elif kind == "Error":
            log.error("voice agent error %s: %s", event.get("code"), event.get("description"))
        elif kind == "Warning":
            log.warning("voice agent warning %s: %s", event.get("code"), event.get("description"))

    def _to_twilio(self, message: dict[str, Any]) -> None:
        if not self.twilio.is_disconnected:
            self.twilio.send(TEXT, orjson.dumps(message))

    def _to_agent(self, message: dict[str, Any]) -> None:
        if self.agent is not None and not self.agent.is_disconnected:
            self.agent.send(TEXT, orjson.dumps(message))
            self.last_to_agent = time.monotonic()

    # ---- ending ---------------------------------------------------------------------------

    def _when_spoken(self, work: Callable[[], Awaitable[None]]) -> None:
        """`work` once the agent's words in flight are out (its AgentAudioDone), or now if it is quiet."""
        if self.agent_speaking:
            self.after_speech.append(work)
        else:
            self._spawn(work())

    async def _played(self, name: str) -> None:
        """Until what was sent to Twilio so far has played: a mark behind it comes back then."""
        played = self.marks[name] = asyncio.Event()
        self._to_twilio({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})
        try:
            await asyncio.wait_for(played.wait(), FAREWELL_WAIT_S)
        except TimeoutError:
            pass

    async def _hang_up_after_farewell(self) -> None:
        await self._played("farewell")
        await self._hang_up("end_call")

    async def _hand_off_line_played(self) -> None:
        """The hotline's last line has played to the caller: their onboarding hands the call over now."""
        await self._played("hand-off")
        if self.deps.temporal is None:
            return  # the onboarding hands off on its own estimate of the line's length
        try:
            await self.deps.temporal.get_workflow_handle(onboarding_id(self.settings.keyring, self.params["from"])).signal(
                OnboardingWorkflow.line_played)
        except RPCError as error:
            log.warning("call %s: could not tell the onboarding the line has played: %s", self.call_sid, error)

    async def _hang_up(self, reason: str) -> None:
        log.info("hanging up call %s (%s)", self.call_sid, reason)
        self.end = reason.replace(" ", "_")
        try:
            await self.deps.telephony.hang_up(self.call_sid)
        except Exception as error:  # the caller may be gone already
            log.warning("hang-up of %s failed: %s", self.call_sid, error)
        self.finished.set()

    async def _say_goodbye_and_hang_up(self, text: str, reason: str) -> None:
        self.agent_speaking = True  # the injected goodbye is on its way: hang up after its AgentAudioDone
        self.after_speech.append(self._hang_up_after_farewell)
        self._to_agent({"type": "InjectAgentMessage", "message": text})
        try:
            await asyncio.wait_for(self.finished.wait(), FAREWELL_WAIT_S + 5)
        except TimeoutError:
            await self._hang_up(reason)

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_EVERY_S)
            if time.monotonic() - self.last_to_agent >= KEEPALIVE_EVERY_S:
                self._to_agent({"type": "KeepAlive"})

    async def _limits(self) -> None:
        """Maximum call length, a caller silent for too long, and a stalled line or peer."""
        while not self.finished.is_set():
            await asyncio.sleep(0.5)
            now = time.monotonic()
            if now - self.last_from_twilio > STALL_S:
                log.warning("call %s stalled: no media for %.0fs", self.call_sid, now - self.last_from_twilio)
                self.end = "stalled"
                return
            if stalled := self._stalled_peer():
                log.warning("call %s: %s stopped reading; closing the call", self.call_sid, stalled)
                self.end = "stalled"
                return
            if now - self.started > self.settings.max_call_s:
                await self._say_goodbye_and_hang_up(TIME_UP_GOODBYE, "max call length")
                return
            if not self.agent_speaking and now - self.caller_silent_since > self.settings.silent_caller_hangup_s:
                await self._say_goodbye_and_hang_up(SILENT_GOODBYE, "silent caller")
                return
        # end_call hung up: give Twilio a moment to send stop, then close.
        await asyncio.sleep(1.0)

    def _stalled_peer(self) -> str | None:
        for name, side in (("Twilio", self.twilio), ("the voice agent", self.agent)):
            if side is not None and side.underlying_transport.get_write_buffer_size() > MAX_BUFFERED_BYTES:
                return name
        return None

    def _close_twilio(self, code: WSCloseCode) -> None:
        if not self.twilio.is_disconnected:
            self.twilio.send_close(code)
            self.twilio.disconnect()

    async def _close_agent(self) -> None:
        if self.agent is None or self.agent.is_disconnected:
            return
        self.agent.send_close(WSCloseCode.OK)
        self.agent.disconnect()
        try:
            await asyncio.wait_for(self.agent.wait_disconnected(), 5)
        except TimeoutError:
            self.agent.disconnect(graceful=False)
