"""The voice-agent stand-in's voices: Deepgram's aura models as the packaged Piper voice, or espeak-ng.

Only one natural voice is packaged (Piper's en_US joe), so the hotline's four choices are it at four
pitches and paces, far enough apart to tell by ear, and all above the callers' voice of the tests
(emulators/piper.py CALLER). Without Piper (`piper=None`) the espeak-ng variants speak, as before.
"""

from __future__ import annotations

from emulators.piper import PiperSpeech, PiperUnavailable, PiperVoice, sentences
from emulators.speech import SpeechUnavailable, synthesize

# Two semitones (x1.12) apart: Piper varies its pitch by a few percent from one saying to the next
# (its noise), so closer variants (7% had been tried) were heard, and measured, as one voice.
PIPER_VARIANTS = {"orion": PiperVoice(pitch=1.0, speed=1.0), "arcas": PiperVoice(pitch=1.12, speed=0.9),
                  "thalia": PiperVoice(pitch=1.26, speed=1.05), "luna": PiperVoice(pitch=1.41, speed=0.96),
                  "asteria": PiperVoice(pitch=1.33, speed=1.1)}
# Deepgram's aura voices map onto espeak's English variants: different, recognisable voices.
ESPEAK_VARIANTS = {"thalia": "en-us+f3", "orion": "en-us+m3", "luna": "en-us+f2", "arcas": "en-us+m7",
                   "asteria": "en-us+f4"}


def espeak_voice(model: str) -> str:
    return next((v for k, v in ESPEAK_VARIANTS.items() if k in model), "en-us")


def piper_voice(model: str) -> PiperVoice:
    return next((v for k, v in PIPER_VARIANTS.items() if k in model), PIPER_VARIANTS["orion"])


class AgentVoices:
    def __init__(self, piper: PiperSpeech | None = None) -> None:
        self.piper = piper

    def parts(self, text: str) -> list[str]:
        """What is made and sent at a time: Piper's a sentence each, so the first is heard while the
        rest are made; espeak-ng's all at once (it makes a line in a few milliseconds)."""
        return sentences(text) if self.piper else [text]

    async def say(self, text: str, model: str) -> bytes:
        """8 kHz mu-law; SpeechUnavailable if the voice cannot speak."""
        if self.piper is None:
            return await synthesize(text, voice=espeak_voice(model))
        try:
            return await self.piper.synthesize(text, piper_voice(model))
        except (PiperUnavailable, OSError, TimeoutError) as error:
            raise SpeechUnavailable(f"piper: {error}") from error

    async def close(self) -> None:
        if self.piper is not None:
            await self.piper.close()
