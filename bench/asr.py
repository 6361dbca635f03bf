"""How well the voice-agent stand-in hears people: Whisper base on a packaged set of phone utterances.

bench/asr_set/ holds what callers say to the hotline and to their agent (codes, email addresses,
choices, free questions; and digits alone, for tests to say any code) as 8 kHz mu-law, made once with `--make`: Piper's packaged voice as a
caller (lower and quicker than any of the agent's voices, emulators/piper.py CALLER) with line
noise. Each is transcribed as the stand-in does it in a call (emulators/whisper.py), and compared
with what was said after both are written alike (digits, "at"/"dot" in addresses, case and
punctuation aside), word by word.

    .venv/bin/python bench/asr.py            # prints each utterance, then one JSON line
    .venv/bin/python bench/asr.py --make     # makes what bench/asr_set/ lacks (needs piper-tts)

Last line: {"utterances": N, "wer": ..., "realtime_factor": ..., "two_calls_realtime_factor": ...,
"by_kind": {...}, "turn_s_p50": ..., "speak_first_audio_ms_p50": ...} (realtime_factor: transcription
time over audio time, one utterance at a time on this machine; two_calls_: the same with two calls
hearing the set at once; speak_first_audio_ms: the agent's voice, Piper making the first sentence of
each of the hotline's lines in each of the four voices, the process warm).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.audio import SAMPLE_RATE  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.spoken import DIGIT_WORDS  # noqa: E402
from workflows.onboarding_lines import HOTLINE_KEYTERMS  # noqa: E402

SET = Path(__file__).resolve().parent / "asr_set"
SAID = {
    "code": ["four two seven one one nine", "my code is eight one three three zero five", "the code is 5 5 0 2 9 1",
             "oh four two seven one one", "it's nine nine one two three four", "six seven eight two two one"],
    "email": ["jane dot doe at gmail dot com", "bob underscore smith at outlook dot com", "sam at example dot com",
              "chris plus deepclaw at gmail dot com", "my email is kim lee at company dot com",
              "alice ninety nine at yahoo dot com", "my email is maria at example dot com"],
    "choice": ["the second one", "casual please", "the formal one", "the first voice", "yes that's right",
               "no", "Luna", "number three", "keep the name Nova", "call it Max", "skip", "new code please"],
    "question": ["what's the weather like tomorrow", "remind me to call my mother at six",
                 "text me the address of the nearest pharmacy", "how long does it take to boil an egg",
                 "set a reminder for my dentist appointment on Friday at three pm",
                 "can you find a good Italian restaurant near me", "what did I ask you to remember yesterday",
                 "send me a summary of my day by text"],
}
# Digits said one at a time, for codes nobody can record ahead (tests/voice/test_hotline_by_voice.py).
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# The hotline's own digit words (core/spoken.py), and "ninety nine" vs "99": both 9 9.
NUMBERS = {**DIGIT_WORDS, "ninety": "9"}


def normalised(text: str) -> list[str]:
    """Words as both sides should be compared: digits one by one, an address spelled out."""
    text = text.lower().replace("p.m.", "pm").replace("a.m.", "am").replace("@", " at ").replace("_", " underscore ").replace("+", " plus ")
    text = re.sub(r"(?<=\w)\.(?=\w)", " dot ", text)
    text = re.sub(r"(?<=\d)(?=[a-z])|(?<=[a-z])(?=\d)", " ", text)  # 3pm -> 3 pm
    text = text.replace("'", "")
    words = re.sub(r"[^a-z0-9 ]", " ", text).split()
    out: list[str] = []
    for word in words:
        word = NUMBERS.get(word, word)
        out.extend(list(word) if word.isdigit() else [word])
    return out


def word_errors(reference: list[str], hypothesis: list[str]) -> int:
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        current = [i]
        for j, hyp in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


async def make() -> None:
    from emulators.piper import CALLER, PiperSpeech, with_line_noise

    SET.mkdir(exist_ok=True)
    rng = random.Random(2026)
    index = []
    with tempfile.TemporaryDirectory() as scratch:
        piper = PiperSpeech(Path(scratch))

        async def made(path: Path, said: str) -> None:
            # Only what is missing: Piper's voice varies a little each time, and the set stays the set.
            if not path.exists():
                path.write_bytes(with_line_noise(await piper.synthesize(said, CALLER), rng))
        try:
            for kind, lines in SAID.items():
                for n, said in enumerate(lines, 1):
                    name = f"{kind}-{n:02d}.ulaw"
                    await made(SET / name, said)
                    index.append({"file": name, "kind": kind, "said": said})
            (SET / "digits").mkdir(exist_ok=True)
            for digit, word in enumerate(DIGITS):
                await made(SET / "digits" / f"{digit}.ulaw", word)
        finally:
            await piper.close()
    (SET / "utterances.json").write_text(json.dumps({
        "about": "What callers say, as 8 kHz mu-law: Piper's packaged voice as a caller (emulators/piper.py CALLER) "
                 "with line noise; made by bench/asr.py --make.", "utterances": index}, indent=1) + "\n")
    print(f"made {len(index)} utterances in {SET}")


def run() -> dict:
    from emulators.whisper import WhisperRecognizer

    recognizer = WhisperRecognizer(Settings().tools_dir)
    started = time.monotonic()
    recognizer.load()
    print(f"model loaded in {time.monotonic() - started:.2f} s")
    utterances = json.loads((SET / "utterances.json").read_text())["utterances"]
    errors = words = 0
    audio_s = heard_s = 0.0
    by_kind: dict[str, list[int]] = {}
    turns = []
    for item in utterances:
        mulaw = (SET / item["file"]).read_bytes()
        started = time.monotonic()
        heard = recognizer.transcribe(mulaw, HOTLINE_KEYTERMS)
        took = time.monotonic() - started
        reference, hypothesis = normalised(item["said"]), normalised(heard)
        wrong = word_errors(reference, hypothesis)
        errors, words = errors + wrong, words + len(reference)
        audio_s, heard_s = audio_s + len(mulaw) / SAMPLE_RATE, heard_s + took
        turns.append(took)
        kind = by_kind.setdefault(item["kind"], [0, 0])
        kind[0], kind[1] = kind[0] + wrong, kind[1] + len(reference)
        print(f"{'ok ' if not wrong else f'{wrong}x '} {took:.2f} s  {item['said']!r} -> {heard!r}")
    # Two calls at once: each hears the whole set, turn after turn, on a thread of its own (the
    # stand-in's two Whisper workers). Under 1: both keep up with real time.
    clips = [(SET / item["file"]).read_bytes() for item in utterances]
    started = time.monotonic()
    with ThreadPoolExecutor(2) as calls:
        list(calls.map(lambda _: [recognizer.transcribe(clip, HOTLINE_KEYTERMS) for clip in clips], range(2)))
    two_calls = (time.monotonic() - started) / audio_s
    print(f"two calls at once: {two_calls:.3f} of real time")
    return {"utterances": len(utterances), "wer": round(errors / words, 4),
            "realtime_factor": round(heard_s / audio_s, 3), "two_calls_realtime_factor": round(two_calls, 3),
            "by_kind": {k: round(e / w, 4) for k, (e, w) in by_kind.items()},
            "turn_s_p50": round(statistics.median(turns), 3), "turn_s_max": round(max(turns), 3)}


async def first_audio() -> dict:
    """How soon the agent's voice starts: the first sentence of each of the hotline's lines made by
    Piper (warm, not made before), in each of the four voices, as the stand-in streams them."""
    from emulators.piper import PiperSpeech
    from emulators.voices import AgentVoices
    from workflows import onboarding_lines as lines

    said = [line for line in vars(lines).values() if isinstance(line, str) and line.endswith((".", "?")) and " " in line]
    waits = []
    with tempfile.TemporaryDirectory() as scratch:
        voices = AgentVoices(PiperSpeech(Path(scratch)))
        try:
            for voice in VOICE_MODELS:
                await voices.say("Warming up.", voice)  # the process and its model, once per voice
                for line in said:
                    started = time.monotonic()
                    await voices.say(voices.parts(line)[0], voice)
                    waits.append(time.monotonic() - started)
        finally:
            await voices.close()
    waits.sort()
    print(f"first audio of {len(waits)} lines: p50 {statistics.median(waits) * 1000:.0f} ms, "
          f"p90 {waits[int(len(waits) * 0.9)] * 1000:.0f} ms")
    return {"speak_first_audio_ms_p50": round(statistics.median(waits) * 1000),
            "speak_first_audio_ms_p90": round(waits[int(len(waits) * 0.9)] * 1000)}


VOICE_MODELS = ["aura-2-orion-en", "aura-2-arcas-en", "aura-2-thalia-en", "aura-2-luna-en"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--make", action="store_true", help="make the utterances bench/asr_set/ lacks, with Piper")
    args = parser.parse_args()
    if args.make:
        asyncio.run(make())
        return
    print(json.dumps({**run(), **asyncio.run(first_audio())}))


if __name__ == "__main__":
    main()
