"""Tokens designed once (core/tokens.py): a key per kind, checked kind and audience, expiry, key ids for rotation."""

from __future__ import annotations

import time

import pytest

from core.settings import Settings
from core.tokens import InvalidToken, Keyring, TokenKind

OLD, NEW = "an-old-platform-secret-of-32-characters", "a-new-platform-secret-of-32-characters!"


def test_a_token_opens_only_as_its_own_kind_and_audience() -> None:
    ring = Keyring.of(NEW)
    token = ring.seal(TokenKind.THINK, {"call": "CA1"}, audience="voice:/llm", ttl_s=60)
    assert ring.open(TokenKind.THINK, token, audience="voice:/llm")["call"] == "CA1"
    for kind, audience in ((TokenKind.HOTLINE, "voice:/llm"), (TokenKind.MCP, "voice:/llm"),
                           (TokenKind.THINK, "api:/hotline")):
        with pytest.raises(InvalidToken):
            ring.open(kind, token, audience=audience)
    with pytest.raises(InvalidToken):  # another platform's secret
        Keyring.of(OLD).open(TokenKind.THINK, token, audience="voice:/llm")
    for broken in ("", "no-dot", f"{ring.kid}.", f"{ring.kid}.!!!", token[:-4] + "AAAA"):
        with pytest.raises(InvalidToken):
            ring.open(TokenKind.THINK, broken, audience="voice:/llm")


def test_a_token_expires() -> None:
    ring = Keyring.of(NEW)
    token = ring.seal(TokenKind.PURPOSE, {}, audience="api:/twilio/outbound", ttl_s=-1)
    with pytest.raises(InvalidToken, match="expired"):
        ring.open(TokenKind.PURPOSE, token, audience="api:/twilio/outbound")


def test_a_token_carries_nothing_readable() -> None:
    ring = Keyring.of(NEW)
    token = ring.seal(TokenKind.HOTLINE, {"caller": "+15551234567"}, audience="api:/hotline", ttl_s=60)
    assert "5551234567" not in token and "caller" not in token
    import base64
    raw = base64.urlsafe_b64decode(token.split(".", 1)[1] + "==")
    assert b"5551234567" not in raw and b"caller" not in raw


def test_the_secret_rotates_with_old_and_new_keys_overlapping() -> None:
    before = Keyring.of(OLD)
    token = before.seal(TokenKind.MCP, {"user": "u"}, audience="api:/mcp", ttl_s=60)
    code = before.tagged_digest(TokenKind.CODE, "+15550001111:123456")
    gateway = before.digest(TokenKind.GATEWAY, "http://gw|1", kid=before.kid)

    during = Keyring.of(NEW, [OLD])
    assert during.kid != before.kid
    assert during.open(TokenKind.MCP, token, audience="api:/mcp")["user"] == "u", "old tokens still open"
    assert during.matches(TokenKind.CODE, "+15550001111:123456", code), "a code sent before still checks"
    assert during.digest(TokenKind.GATEWAY, "http://gw|1", kid=before.kid) == gateway
    fresh = during.seal(TokenKind.MCP, {"user": "u"}, audience="api:/mcp", ttl_s=60)
    assert fresh.startswith(during.kid + "."), "new tokens are made with the new secret"
    assert not during.matches(TokenKind.CODE, "+15550001111:654321", code)

    after = Keyring.of(NEW)  # the old secret dropped
    with pytest.raises(InvalidToken, match="unknown key id"):
        after.open(TokenKind.MCP, token, audience="api:/mcp")
    assert not after.matches(TokenKind.CODE, "+15550001111:123456", code)
    assert after.open(TokenKind.MCP, fresh, audience="api:/mcp")


def test_kinds_have_their_own_keys() -> None:
    ring = Keyring.of(NEW)
    assert ring.digest(TokenKind.CODE, "x") != ring.digest(TokenKind.GATEWAY, "x")


def test_settings_give_the_keyring_of_their_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPCLAW_PLATFORM_SECRET", NEW)
    monkeypatch.setenv("DEEPCLAW_PLATFORM_SECRETS_PREVIOUS", OLD)
    settings = Settings(_env_file=None)
    token = Keyring.of(OLD).seal(TokenKind.THINK, {"t": time.time()}, audience="a", ttl_s=5)
    assert settings.keyring.open(TokenKind.THINK, token, audience="a")
    assert settings.keyring.kid == Keyring.of(NEW).kid
