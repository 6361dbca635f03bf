"""G.711 mu-law at 8 kHz, the telephone's audio, and the little DSP the stand-ins need.

Exact table codecs (audioop is gone from Python 3.13); the voice bridge itself never transcodes.
"""

from __future__ import annotations

import math
from array import array

BIAS = 0x84
CLIP_14 = 8159
SEGMENT_ENDS = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
SAMPLE_RATE = 8000
FRAME_BYTES = 160  # 20 ms
SILENCE_BYTE = 0xFF


def _encode_sample(sample: int) -> int:
    # The classic G.711 reference on the top 14 bits (as audioop did, bit for bit).
    value = sample >> 2
    mask = 0x7F if value < 0 else 0xFF
    value = min(abs(value), CLIP_14) + (BIAS >> 2)
    segment = next((i for i, end in enumerate(SEGMENT_ENDS) if value <= end), 8)
    if segment >= 8:
        return 0x7F ^ mask
    return ((segment << 4) | ((value >> (segment + 1)) & 0x0F)) ^ mask


def _decode_byte(byte: int) -> int:
    byte = ~byte & 0xFF
    magnitude = ((((byte & 0x0F) << 3) + BIAS) << ((byte & 0x70) >> 4)) - BIAS
    return -magnitude if byte & 0x80 else magnitude


_ENCODE = bytes(_encode_sample(s - 65536 if s >= 32768 else s) for s in range(65536))
ULAW_TABLE = _ENCODE  # mu-law of every 16-bit sample, indexed by it as unsigned (for vectorised encoders)
_DECODE = array("h", (_decode_byte(b) for b in range(256)))
_SQUARE = tuple(s * s for s in _DECODE)  # each mu-law byte's energy: loudness without decoding a frame


def ulaw_encode(samples: array) -> bytes:
    """16-bit signed linear samples -> mu-law bytes."""
    return bytes(_ENCODE[s & 0xFFFF] for s in samples)


def ulaw_decode(data: bytes) -> array:
    """mu-law bytes -> 16-bit signed linear samples."""
    return array("h", (_DECODE[b] for b in data))


def mulaw_rms(data: bytes) -> float:
    """The RMS of mu-law audio as linear samples (what rms(ulaw_decode(data)) gives), without decoding:
    the voice-agent stand-in asks it of every frame of every call."""
    if not data:
        return 0.0
    return math.sqrt(sum(map(_SQUARE.__getitem__, data)) / len(data))


def frames(data: bytes, size: int = FRAME_BYTES) -> list[bytes]:
    """Split into whole frames, padding the last with silence."""
    padded = data + bytes([SILENCE_BYTE]) * (-len(data) % size)
    return [padded[i:i + size] for i in range(0, len(padded), size)]
