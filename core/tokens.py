"""Short signed tokens (HMAC-SHA256) for per-call capabilities: the Media Stream and the LLM proxy.

They carry who and which call, and expire; the gateway token of a user's OpenClaw never leaves
the platform. One-time use of stream tokens is enforced where the call is recorded (unique CallSid).
Gateway tokens are derived from the platform secret, so no message or workflow history carries one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any


class InvalidToken(ValueError):
    pass


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(claims: dict[str, Any], secret: str, *, ttl_s: float) -> str:
    body = _b64(json.dumps({**claims, "exp": int(time.time() + ttl_s)}, separators=(",", ":")).encode())
    mac = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def verify(token: str, secret: str, *, kind: str) -> dict[str, Any]:
    try:
        body, mac = token.split(".", 1)
        expected = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(mac)):
            raise InvalidToken("bad signature")
        claims = json.loads(_unb64(body))
    except (ValueError, TypeError) as error:
        raise InvalidToken(f"malformed token: {error}") from None
    if claims.get("kind") != kind:
        raise InvalidToken(f"not a {kind} token")
    if claims.get("exp", 0) < time.time():
        raise InvalidToken("token expired")
    return claims


def gateway_token(secret: str, base_url: str, instance: str) -> str:
    """The bearer token of one OpenClaw gateway (`instance`: what tells this gateway from an earlier one
    at the same URL, so a token an agent once saw opens no later gateway)."""
    mac = hmac.new(secret.encode(), f"openclaw-gateway|{base_url}|{instance}".encode(), hashlib.sha256).digest()
    return _b64(mac)
