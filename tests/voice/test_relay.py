"""The compiled audio path (voice/relay.pyx) agrees with the general one.

What the fast reader accepts must be a subset of what CallBridge.twilio_message accepts (a JSON
parser and strict base64), with the same audio; everything else is left to the general path.
"""

from __future__ import annotations

import base64
import binascii
import random

import orjson
import pytest

from voice.relay import media_audio, media_message

AUDIO = bytes(range(256))[:160]
PAYLOAD = base64.b64encode(AUDIO).decode()
TWILIO_MEDIA = ('{"event":"media","sequenceNumber":"4","media":{"track":"inbound","chunk":"2",'
                '"timestamp":"5","payload":"%s"},"streamSid":"MZ18ad3ab5a668481ce02b83e7395059f0"}')


def general_path(raw: bytes) -> bytes | None:
    """CallBridge.twilio_message's reading of a media message: its audio, or None."""
    try:
        message = orjson.loads(raw)
        if message["event"] != "media":
            return None
        return binascii.a2b_base64(message["media"]["payload"], strict_mode=True)
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None


@pytest.mark.parametrize("raw", [
    TWILIO_MEDIA % PAYLOAD,
    '{"event":"media","media":{"payload":"%s"}}' % PAYLOAD,
    ' { "event" : "media" ,\n "media" : { "payload" : "%s" } } ' % PAYLOAD,
    '{"media":{"payload":"%s"},"event":"media"}' % PAYLOAD,
    '{"event":"media","media":{"payload":""}}',
    '{"event":"media","media":{"payload":"AQ=="}}',
    '{"event":"media","media":{"payload":"AQI="}}',
])
def test_twilio_media_messages_take_the_fast_path(raw: str) -> None:
    fast = media_audio(raw.encode())
    assert fast is not None
    assert fast == general_path(raw.encode())


@pytest.mark.parametrize("raw", [
    '{"event":"start","media":{"payload":"%s"}}' % PAYLOAD,  # not media
    '{"event":"media","media":{"payload":"%s"}} x' % PAYLOAD,  # trailing bytes
    '{"event":"media","media":{"payload":"AQ="}}',  # a partial quad
    '{"event":"media","media":{"payload":"A=Q="}}',  # padding inside
    '{"event":"media","media":{"payload":"AQ\\u003d="}}',  # an escape: the JSON parser's job
    '{"event":"media","media":{"payload":"%s"},"sequenceNumber":4}' % PAYLOAD,  # a number
    '{"event":"media","media":"%s"}' % PAYLOAD,  # media is not an object
    '{"event":"media","media":{"payload":"%s"},"media":{"track":"inbound"}}' % PAYLOAD,  # the last media counts
    '{"event":"media"}',
    '{"event":"media","media":{"payload":"%s"}' % PAYLOAD,  # unterminated
    '["media"]',
    '',
])
def test_what_the_fast_path_leaves_to_the_general_one(raw: str) -> None:
    assert media_audio(raw.encode()) is None


def test_the_fast_path_never_disagrees_with_the_general_one() -> None:
    """Thousands of damaged media messages: the fast reader accepts only what the general path
    accepts, with the same audio (and never crashes)."""
    rng = random.Random(6)
    alphabet = b'{}[]":,\\ \t\nAQ=+/09aZ\x00\x7f\xc3\xa9' + b"eventmediapayload"
    original = (TWILIO_MEDIA % base64.b64encode(AUDIO[:12]).decode()).encode()
    accepted = 0
    for _ in range(20000):
        damaged = bytearray(original)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(damaged))
            choice = rng.random()
            if choice < 0.4:
                damaged[at] = rng.choice(alphabet)
            elif choice < 0.7:
                del damaged[at]
            else:
                damaged.insert(at, rng.choice(alphabet))
        fast = media_audio(bytes(damaged))
        if fast is not None:
            accepted += 1
            assert fast == general_path(bytes(damaged)), bytes(damaged)
    assert accepted > 1000, "the damage left some messages well-formed"


def test_audio_to_twilio_is_a_media_message_of_the_stream() -> None:
    prefix = b'{"event":"media","streamSid":"MZ1","media":{"payload":"'
    for size in (0, 1, 2, 3, 160, 4000):
        audio = bytes(random.Random(size).randbytes(size))
        message = orjson.loads(media_message(prefix, audio))
        assert message == {"event": "media", "streamSid": "MZ1", "media": {"payload": base64.b64encode(audio).decode()}}


def test_the_relay_times_frames_into_the_buckets_the_metric_names() -> None:
    from core.metrics import FRAME_BUCKETS_S
    from voice import relay

    assert relay.LATENCY_BOUNDS_S == FRAME_BUCKETS_S
