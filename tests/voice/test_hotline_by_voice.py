"""A stranger sets up DeepClaw by voice alone: every answer is speech nobody typed (the packaged phone
utterances of bench/asr_set, Piper's voice as a caller with line noise), heard by the voice agent's
Whisper, not matched by the typed-turn registry. Handset -> carrier -> bridge -> voice agent ->
hotline conductor -> onboarding -> the new agent, as the softphone's microphone would carry it."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from core.audio import SILENCE_BYTE
from core.fillers import FILLERS
from emulators.carrier.handset import Handset, handset
from emulators.voice_agent import VoiceAgentServer
from tests.voice.conftest import SharedPlatform
from tests.voice.platform import agent_said, audio_done, email_code, next_session
from workflows import onboarding_lines as lines

SET = Path(__file__).resolve().parents[2] / "bench" / "asr_set"
SAID = {item["said"]: item["file"] for item in json.loads((SET / "utterances.json").read_text())["utterances"]}
SECOND = bytes([SILENCE_BYTE]) * 8000


def _clip(said: str) -> bytes:
    return (SET / SAID[said]).read_bytes()


def _digits(code: str, gap_s: float) -> bytes:
    """A code said digit by digit, as people read one out: short pauses, one turn."""
    pause = bytes([SILENCE_BYTE]) * int(8000 * gap_s)
    return b"".join((SET / "digits" / f"{digit}.ulaw").read_bytes() + pause for digit in code)


def _assistant_lines(agent: VoiceAgentServer) -> list[str]:
    return [e["content"] for e in agent.sessions[-1].events if e["type"] == "ConversationText" and e["role"] == "assistant"]


async def _speak(agent: VoiceAgentServer, phone: Handset, audio: bytes) -> int:
    """Once the agent has finished its lines, speak (then a second of the line's quiet); returns how
    many lines the agent had said by then."""
    said = len(_assistant_lines(agent))
    await audio_done(agent, said)
    await phone.send_audio(audio + SECOND, realtime=False)  # the carrier plays it out at 20 ms a frame
    return said


async def _say_code(agent: VoiceAgentServer, phone: Handset, read_code: Callable[[], Awaitable[str]],
                    expect: str) -> None:
    """A misheard code is said again, a little slower, as a person would; after three tries they ask
    for a new one. (Whisper base, the local recogniser, mishears a few codes at any pace: one that
    begins "two zero zero" is written "To zero, zero", and it heard one ending in 77 as 7, 7, 7.)"""
    for _ in range(2):
        code = await read_code()
        for gap_s in (0.2, 0.3, 0.15):
            said = await _speak(agent, phone, _digits(code, gap_s))
            reply = await _reply_after(agent, said)
            if expect in reply:
                return
            assert reply.startswith((lines.CODE_NOT_HEARD[:20], "That code isn't right")), reply
        said = await _speak(agent, phone, _clip("new code please"))
        assert "a fresh" in await _reply_after(agent, said)
    raise AssertionError(f"the code was never heard: {_assistant_lines(agent)}")


async def _reply_after(agent: VoiceAgentServer, said: int, timeout: float = 60) -> str:
    for _ in range(int(timeout * 10)):
        if len(spoken := _assistant_lines(agent)) > said:
            return spoken[said]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no answer after line {said}: {_assistant_lines(agent)}")


@pytest.fixture
def platform(hotline_platform: SharedPlatform) -> SharedPlatform:
    hotline_platform.agent.sessions.clear()  # this test's calls are the only ones on record
    return hotline_platform


def _after_fillers(line: str) -> str:
    while filler := next((f for f in FILLERS if line.startswith(f)), None):
        line = line[len(filler):].lstrip()
    return line


async def test_a_stranger_sets_up_their_agent_by_voice_alone(platform: SharedPlatform) -> None:
    settings, agent = platform.settings, platform.agent
    caller = f"+1555{uuid.uuid4().int % 10**7:07d}"
    async with handset(settings.carrier_url, caller) as phone:
        await phone.dial(settings.hotline_number)
        await agent_said(agent, "Welcome to DeepClaw!")
        assert "Luna" in agent.sessions[-1].keyterms(), "the hotline tells the recogniser what it offers"

        async def texted_code() -> str:
            """The newest code texted to the phone."""
            sms = await phone.wait_for("sms", lambda e: "Your DeepClaw code" in e["body"] and e not in read,
                                       timeout=30)
            read.append(sms)
            return re.findall(r"\d{6}", sms["body"])[0]

        read: list[dict[str, object]] = []
        await _say_code(agent, phone, texted_code, "your phone is verified")

        said = await _speak(agent, phone, _clip("my email is maria at example dot com"))
        assert "Is that right?" in await _reply_after(agent, said)
        said = await _speak(agent, phone, _clip("yes that's right"))
        assert "emailed you a six-digit code" in await _reply_after(agent, said)
        await _say_code(agent, phone, lambda: email_code(settings.api_base_url, "maria@example.com"),
                        "Your email is verified")
        said = await _speak(agent, phone, _clip("the second one"))
        assert (await _reply_after(agent, said)).startswith("Orion it is")
        said = await _speak(agent, phone, _clip("casual please"))
        assert (await _reply_after(agent, said)).startswith("Casual, got it")
        said = await _speak(agent, phone, _clip("call it Max"))
        assert (await _reply_after(agent, said)).startswith("Max, lovely")
        said = await _speak(agent, phone, _clip("skip"))
        # Provisioning still at work is covered by the hotline's fillers, as any slow answer is.
        assert _after_fillers(await _reply_after(agent, said)).startswith("All set! Max's number is")

        # The call goes on with the new agent, which hears a spoken question as well.
        await next_session(agent, 1, timeout=90)
        await agent_said(agent, "Hi, I'm Max, your new assistant")
        await _speak(agent, phone, _clip("what did I ask you to remember yesterday"))
        await agent_said(agent, "remember yesterday")
        heard = [e["content"] for e in agent.sessions[-1].events if e["type"] == "ConversationText" and e["role"] == "user"]
        assert heard and "remember yesterday" in heard[-1].lower(), heard
        await phone.hangup()
