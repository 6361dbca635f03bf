"""Every token the platform issues, designed once.

Each kind of token has its own key, derived from the platform secret with HKDF (a key of one kind
opens nothing of another), and every key has a key id, so the secret can rotate: tokens are made
with the current secret and accepted under the previous ones (DEEPCLAW_PLATFORM_SECRETS_PREVIOUS)
until those are dropped.

- Sealed tokens (AES-GCM: encrypted and authenticated) carry claims that only the platform reads:
  a think URL, a placed call's purpose URL, the MCP bearer in an agent's config. A provider that
  sees one sees random bytes, never a phone number. The kind and the audience are the associated
  data, so a token of another kind or for another endpoint does not open, and every claim set has
  an expiry.
- Keyed digests (HMAC) for what is compared, never read back: verification codes, a gateway's
  bearer. They are tagged with the key id that made them.

Tokens whose claims are too big for where they travel (Twilio's stream <Parameter>) are random ids
looked up server-side instead (voice/streams.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

NONCE_BYTES = 12


class InvalidToken(ValueError):
    pass


class TokenKind(StrEnum):
    THINK = "think"  # a user call's LLM proxy URL (Deepgram -> voice bridge), bound to its stream
    HOTLINE = "hotline"  # a hotline call's conductor URL (Deepgram -> API), bound to its stream
    MESSAGE = "message"  # the message taker's URL, for callers who are not the user (Deepgram -> voice bridge)
    PURPOSE = "purpose"  # the TwiML URL of a call the platform places or hands off (Twilio -> API)
    MCP = "mcp"  # the platform MCP server's bearer in one agent's config (agent -> API); revocable
    MEDIA = "media"  # a link to an MMS attachment the platform fetches for the agent (agent -> API)
    GATEWAY = "gateway"  # the bearer of one OpenClaw gateway (platform -> agent), derived, never carried
    CODE = "code"  # digests of verification codes (workflow history holds only these)
    PIN = "pin"  # digests of users' PINs
    SESSION = "session"  # the dashboard's sign-in (later)
    OAUTH_STATE = "oauth-state"  # an OAuth connect in progress: state + PKCE verifier, in a cookie
    WORKFLOW_ID = "workflow-id"  # a workflow id made from a phone number, which must not show in it


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _hkdf(secret: bytes, info: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info.encode()).derive(secret)


@dataclass(frozen=True)
class _Secret:
    kid: str
    keys: dict[TokenKind, bytes]

    @classmethod
    def derive(cls, secret: str) -> _Secret:
        raw = secret.encode()
        kid = _b64(_hkdf(raw, "deepclaw/key-id"))[:8]
        return cls(kid, {kind: _hkdf(raw, f"deepclaw/{kind.value}/v1") for kind in TokenKind})


@dataclass(frozen=True)
class Keyring:
    """The current secret's keys (used to make tokens) and the previous ones' (still accepted)."""

    current: _Secret
    previous: tuple[_Secret, ...] = ()
    _by_kid: dict[str, _Secret] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, current: str, previous: Iterable[str] = ()) -> Keyring:
        ring = cls(_Secret.derive(current), tuple(_Secret.derive(p) for p in previous if p))
        ring._by_kid.update({s.kid: s for s in (*reversed(ring.previous), ring.current)})
        return ring

    @property
    def kid(self) -> str:
        return self.current.kid

    def _secret(self, kid: str) -> _Secret:
        secret = self._by_kid.get(kid)
        if secret is None:
            raise InvalidToken("unknown key id (a retired secret?)")
        return secret

    # ---- sealed tokens --------------------------------------------------------------------

    def seal(self, kind: TokenKind, claims: dict[str, Any], *, audience: str, ttl_s: float) -> str:
        body = json.dumps({**claims, "exp": int(time.time() + ttl_s)}, separators=(",", ":")).encode()
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self.current.keys[kind]).encrypt(nonce, body, f"{kind.value}|{audience}".encode())
        return f"{self.kid}.{_b64(nonce + sealed)}"

    def open(self, kind: TokenKind, token: str, *, audience: str) -> dict[str, Any]:
        """The claims of a token of this kind for this audience; InvalidToken otherwise."""
        try:
            kid, data = token.split(".", 1)
            raw = _unb64(data)
        except (ValueError, TypeError):
            raise InvalidToken("malformed token") from None
        if len(raw) <= NONCE_BYTES:
            raise InvalidToken("malformed token")
        try:
            body = AESGCM(self._secret(kid).keys[kind]).decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], f"{kind.value}|{audience}".encode())
        except InvalidTag:
            raise InvalidToken(f"not a valid {kind.value} token") from None
        claims: dict[str, Any] = json.loads(body)
        if claims.get("exp", 0) < time.time():
            raise InvalidToken(f"{kind.value} token expired")
        return claims

    # ---- keyed digests --------------------------------------------------------------------

    def digest(self, kind: TokenKind, message: str, *, kid: str | None = None) -> str:
        """HMAC-SHA256 of `message` under the key of `kind` (of key id `kid`, else the current one)."""
        secret = self._secret(kid) if kid else self.current
        return _b64(hmac.new(secret.keys[kind], message.encode(), hashlib.sha256).digest())

    def tagged_digest(self, kind: TokenKind, message: str) -> str:
        """`<kid>:<digest>`: compared later with `matches`, even after the secret has rotated."""
        return f"{self.kid}:{self.digest(kind, message)}"

    def matches(self, kind: TokenKind, message: str, tagged: str) -> bool:
        kid, _, expected = tagged.partition(":")
        try:
            return hmac.compare_digest(self.digest(kind, message, kid=kid), expected)
        except InvalidToken:
            return False
