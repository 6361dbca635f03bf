"""Temporal payloads encrypted before they leave the process: workflow and activity inputs and
results, signals, Updates, queries, memos and failure messages (with `encode_common_attributes`).
What callers say, their codes, emails, transcripts and message bodies therefore never sit in plain
text in Temporal's database or UI. Operators read them in Temporal UI through the API's codec
server (api/routes/codec.py), which decodes only for a signed-in operator.

What stays readable, by design: workflow ids (none carries a phone number or email: the
onboarding id is an HMAC of the caller's number), workflow and activity type names, and the search
attributes operators search by (UserId, UserPhone, AgentNumber, LifecycleState) — Temporal indexes
those itself, so they cannot be encrypted.

Keys come from the data key ring (DEEPCLAW_ENCRYPTION_KEYS, core/keyring.py). Each key-encryption
key gives a payload key of its own (HKDF, so the same secret never encrypts two kinds of data), and
every payload names its key id in its metadata. Rotation: put the new key first; new payloads use
it, and histories written under the old key still decode while the old key stays listed. Drop an old
key only once every workflow that ran under it has closed past the namespace's retention, or has
continued as new (the long-lived agent lifecycle and SMS workflows continue as new regularly).

A payload without the encrypted encoding is passed through on decode: histories written before this
codec was switched on still replay.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from core.keyring import DataKeyring, KeyringError

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE = 12
_INFO = b"deepclaw/temporal-payload/v1"


class PayloadKeyMissing(KeyringError):
    """A payload sealed with a key that is no longer (or not yet) in DEEPCLAW_ENCRYPTION_KEYS."""


def _payload_key(kek: bytes) -> AESGCM:
    return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(kek))


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over each serialized payload (its own metadata included), a fresh nonce each."""

    def __init__(self, keyring: DataKeyring) -> None:
        self._current = keyring.current
        self._keys = {kid: _payload_key(kek) for kid, kek in keyring.keys.items()}

    @staticmethod
    def _aad(kid: str) -> bytes:
        return b"temporal-payload|" + kid.encode()

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.seal(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.open(payload) for payload in payloads]

    def seal(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE)
        body = self._keys[self._current].encrypt(nonce, payload.SerializeToString(), self._aad(self._current))
        return Payload(metadata={"encoding": ENCODING, KEY_ID: self._current.encode()}, data=nonce + body)

    def open(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        kid = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        key = self._keys.get(kid)
        if key is None:
            raise PayloadKeyMissing(f"a Temporal payload was encrypted with key {kid!r}, which is not in "
                                    "DEEPCLAW_ENCRYPTION_KEYS: list it again (after the new key) to read it")
        try:
            plain = key.decrypt(payload.data[:NONCE], payload.data[NONCE:], self._aad(kid))
        except InvalidTag:
            raise KeyringError("a Temporal payload does not open (altered, or the key changed under "
                               f"the same id {kid!r})") from None
        return Payload.FromString(plain)
