"""The key ring for data at rest: envelope encryption of what the platform must keep but never show
(OAuth tokens, the headers of users' MCP servers; later Temporal payloads).

Each record gets its own random data key (AES-256-GCM). The data key is stored with the record,
wrapped (AES-GCM) by a key-encryption key from settings (DEEPCLAW_ENCRYPTION_KEYS), named by its key
id. Rotating keys is therefore cheap and needs no re-consent: add a new key first in the list, run
`deepclaw rotate-keys` (re-wraps every record's data key under it; the data itself is untouched),
then drop the old key.

Both encryptions are bound to the record's `context` (e.g. "oauth:<user id>:google") as associated
data: a ciphertext copied onto another user's row does not open.

Layout of a sealed blob: b"DK1" | len(kid) | kid | wrap nonce (12) | wrapped data key (32 + 16 tag)
| data nonce (12) | ciphertext + tag.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"DK1"
NONCE = 12
DATA_KEY = 32
WRAPPED = DATA_KEY + 16
KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class KeyringError(ValueError):
    """A key setting that cannot be used, or a blob that does not open (wrong key, context or bytes)."""


def parse_key(entry: str) -> tuple[str, bytes]:
    """`<key id>:<32 bytes, base64>` (as `deepclaw new-key` prints) into its id and key."""
    kid, sep, encoded = entry.strip().partition(":")
    if not sep or not KEY_ID.match(kid):
        raise KeyringError("an encryption key is '<key id>:<base64 of 32 random bytes>', the id of "
                           "letters, digits, '-' or '_'")
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_", validate=True)
    except ValueError:
        raise KeyringError(f"encryption key {kid!r} is not base64") from None
    if len(key) != DATA_KEY:
        raise KeyringError(f"encryption key {kid!r} is {len(key)} bytes; it must be {DATA_KEY}")
    return kid, key


def new_key_entry(kid: str) -> str:
    if not KEY_ID.match(kid):
        raise KeyringError("a key id is 1 to 32 letters, digits, '-' or '_'")
    return f"{kid}:{base64.urlsafe_b64encode(os.urandom(DATA_KEY)).decode().rstrip('=')}"


def derived_key_entry(secret: str) -> tuple[str, bytes]:
    """The development key: derived from the platform secret, so a fresh machine needs no setting.
    Production sets its own keys (Settings.deployment_problems says so)."""
    key = HKDF(algorithm=hashes.SHA256(), length=DATA_KEY, salt=None, info=b"deepclaw/data-at-rest/v1").derive(
        secret.encode())
    return "dev", key


@dataclass(frozen=True)
class DataKeyring:
    """Key-encryption keys by id; the first is current (it wraps new records and re-wrapped ones)."""

    keys: dict[str, bytes]
    current: str

    @classmethod
    def of(cls, entries: Iterable[tuple[str, bytes]]) -> DataKeyring:
        keys: dict[str, bytes] = {}
        for kid, key in entries:
            if kid in keys:
                raise KeyringError(f"encryption key id {kid!r} is listed twice")
            keys[kid] = key
        if not keys:
            raise KeyringError("no encryption key")
        return cls(keys, next(iter(keys)))

    def seal(self, plaintext: bytes, *, context: str) -> bytes:
        data_key = AESGCM.generate_key(bit_length=DATA_KEY * 8)
        nonce = os.urandom(NONCE)
        body = AESGCM(data_key).encrypt(nonce, plaintext, context.encode())
        return self._wrap(self.current, data_key, context) + nonce + body

    def open(self, blob: bytes, *, context: str) -> bytes:
        kid, data_key, rest = self._unwrap(blob, context)
        try:
            return AESGCM(data_key).decrypt(rest[:NONCE], rest[NONCE:], context.encode())
        except InvalidTag:
            raise KeyringError("the record does not open (altered, or sealed for another record)") from None

    def key_id(self, blob: bytes) -> str:
        return self._header(blob)[0]

    def rewrap(self, blob: bytes, *, context: str) -> bytes:
        """The same record with its data key wrapped by the current key (the data is not touched)."""
        kid, data_key, rest = self._unwrap(blob, context)
        return blob if kid == self.current else self._wrap(self.current, data_key, context) + rest

    # ---- the wrapped data key ----------------------------------------------------------------

    def _wrap(self, kid: str, data_key: bytes, context: str) -> bytes:
        nonce = os.urandom(NONCE)
        wrapped = AESGCM(self.keys[kid]).encrypt(nonce, data_key, f"wrap|{kid}|{context}".encode())
        return MAGIC + bytes([len(kid)]) + kid.encode() + nonce + wrapped

    @staticmethod
    def _header(blob: bytes) -> tuple[str, int]:
        if len(blob) < len(MAGIC) + 1 or not blob.startswith(MAGIC):
            raise KeyringError("not a sealed record")
        size = blob[len(MAGIC)]
        start = len(MAGIC) + 1
        if len(blob) < start + size + NONCE + WRAPPED + NONCE + 16:
            raise KeyringError("a sealed record cut short")
        return blob[start:start + size].decode(errors="replace"), start + size

    def _unwrap(self, blob: bytes, context: str) -> tuple[str, bytes, bytes]:
        kid, at = self._header(blob)
        key = self.keys.get(kid)
        if key is None:
            raise KeyringError(f"the record was sealed with key {kid!r}, which is not in DEEPCLAW_ENCRYPTION_KEYS")
        nonce, wrapped = blob[at:at + NONCE], blob[at + NONCE:at + NONCE + WRAPPED]
        try:
            data_key = AESGCM(key).decrypt(nonce, wrapped, f"wrap|{kid}|{context}".encode())
        except InvalidTag:
            raise KeyringError("the record's data key does not open (another record's, or altered)") from None
        return kid, data_key, blob[at + NONCE + WRAPPED:]
