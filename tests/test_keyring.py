"""Data at rest (core/keyring.py): a data key per record wrapped by a key from settings with its key id,
bound to its record; rotation re-wraps every stored token without touching it, and the old key can go."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activities.integrations.credentials import Credentials
from activities.integrations.mcp_servers import UserMcpServers
from core.integrations import Provider, header_context
from core.keyring import DataKeyring, KeyringError, new_key_entry, parse_key
from core.models import McpServer, OAuthCredential, User
from core.rotation import rewrap_all
from core.settings import Settings

SECRET = b"ya29.a-token-nobody-may-read"


def _ring(*entries: str) -> DataKeyring:
    return DataKeyring.of(parse_key(e) for e in entries)


def test_a_record_opens_only_with_its_key_and_as_its_own_record() -> None:
    k1 = new_key_entry("k1")
    ring = _ring(k1)
    blob = ring.seal(SECRET, context="oauth:alice:google")
    assert SECRET not in blob and ring.key_id(blob) == "k1"
    assert ring.open(blob, context="oauth:alice:google") == SECRET
    assert ring.seal(SECRET, context="oauth:alice:google") != blob, "a fresh data key and nonce each time"
    with pytest.raises(KeyringError, match="another record"):
        ring.open(blob, context="oauth:mallory:google")  # copied onto another user's row
    with pytest.raises(KeyringError, match="not in DEEPCLAW_ENCRYPTION_KEYS"):
        _ring(new_key_entry("k2")).open(blob, context="oauth:alice:google")
    with pytest.raises(KeyringError):  # same id, another key
        _ring(new_key_entry("k1")).open(blob, context="oauth:alice:google")
    for broken in (b"", b"DK1", blob[:-1], blob[:-5] + bytes(5), b"XX" + blob[2:]):
        with pytest.raises(KeyringError):
            ring.open(broken, context="oauth:alice:google")


def test_rewrapping_changes_only_the_wrapping_key() -> None:
    old, new = new_key_entry("old"), new_key_entry("new")
    blob = _ring(old).seal(SECRET, context="c")
    during = _ring(new, old)
    assert during.open(blob, context="c") == SECRET, "records of the previous key still open"
    moved = during.rewrap(blob, context="c")
    assert during.key_id(moved) == "new" and moved.endswith(blob[-40:]), "the data is not re-encrypted"
    assert _ring(new).open(moved, context="c") == SECRET, "the old key can be dropped"
    assert during.rewrap(moved, context="c") == moved


def test_key_settings_are_checked_at_start() -> None:
    good = new_key_entry("k1")
    assert Settings(_env_file=None, encryption_keys=f"{new_key_entry('k2')},{good}").data_keyring.current == "k2"
    for bad in ("k1", "k1:not-base64!", "k1:" + "A" * 10, "bad id:" + good.split(":")[1], f"{good},{good}"):
        with pytest.raises(ValidationError, match="encryption key"):
            Settings(_env_file=None, encryption_keys=bad)
    # Unset: a development key; with a real provider the missing keys are named.
    assert Settings(_env_file=None).data_keyring.current == "dev"
    problems = Settings(_env_file=None, telephony="twilio").deployment_problems()
    assert any("DEEPCLAW_ENCRYPTION_KEYS" in p for p in problems)
    assert not any("ENCRYPTION" in p for p in Settings(_env_file=None, telephony="twilio",
                                                          encryption_keys=good).deployment_problems())


def test_new_key_prints_a_usable_key() -> None:
    printed = subprocess.run([sys.executable, "-m", "core.cli", "new-key", "spring"], capture_output=True,
                             text=True, timeout=60, check=True).stdout.strip()
    assert parse_key(printed)[0] == "spring" and len(parse_key(printed)[1]) == 32


async def test_rotation_rewraps_every_stored_token_without_reconsent(
        sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
    old, new = new_key_entry("old"), new_key_entry("new")
    before = settings.model_copy(update={"encryption_keys": []})
    before.__dict__["data_keyring"] = _ring(old)  # the settings as they were: only the old key
    users = [User(phone_e164=f"+1555{uuid.uuid4().int % 10**7:07d}") for _ in range(3)]
    async with sessions() as session, session.begin():
        session.add_all(users)
    tokens = {u.id: {"access_token": f"at-{u.id}", "refresh_token": f"rt-{u.id}", "expires_at": 2_000_000_000}
              for u in users}
    for user in users:
        await Credentials(before, sessions).save(user.id, Provider.GOOGLE, tokens[user.id])
    server = McpServer(user_id=users[0].id, name="notes", url="https://mcp.example.com/mcp")
    server.headers_ciphertext = before.data_keyring.seal(b'{"X-Api-Key": "k"}',
                                                         context=header_context(users[0].id, server.id))
    async with sessions() as session, session.begin():
        session.add(server)

    during = settings.model_copy()
    during.__dict__["data_keyring"] = _ring(new, old)
    counts = await rewrap_all(during.data_keyring, sessions)
    assert counts["re-wrapped"] >= 4  # three tokens and the server's headers
    after = settings.model_copy()
    after.__dict__["data_keyring"] = _ring(new)  # the old key dropped
    async with sessions() as session:
        rows = (await session.execute(select(OAuthCredential).where(
            OAuthCredential.user_id.in_([u.id for u in users])))).scalars().all()  # type: ignore[attr-defined]
    assert {after.data_keyring.key_id(r.ciphertext) for r in rows} == {"new"}
    for user in users:
        assert await Credentials(after, sessions).token(user.id, Provider.GOOGLE) == tokens[user.id]
    async with sessions() as session:
        stored = await session.get(McpServer, server.id)
    assert UserMcpServers(after, sessions).headers(stored) == {"X-Api-Key": "k"}  # type: ignore[arg-type]
    assert (await rewrap_all(during.data_keyring, sessions))["re-wrapped"] == 0, "a second run has nothing to do"
