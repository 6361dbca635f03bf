"""A user's connections to Google and Microsoft. Their tokens are sealed at rest (core.keyring, one data
key per row, bound to the user and provider) and opened only here, by reference: a user id and a
provider are all that travels (never through Temporal, whose history would keep them).

`client()` gives authlib's async OAuth client holding the user's token: it refreshes the token before
it expires (authlib's leeway) and the refreshed one is sealed and saved at once; a refresh the provider
refuses marks the connection as needing the user's consent again.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError
from httpx2 import AsyncBaseTransport, HTTPError
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db import transaction
from core.integrations import (
    ConnectionState,
    Provider,
    ProviderConfig,
    credential_context,
    provider_config,
    redirect_uri,
)
from core.keyring import DataKeyring
from core.models import OAuthCredential, utcnow
from core.settings import Settings

log = logging.getLogger(__name__)

REFRESH_LEEWAY_S = 120  # refresh this long before the access token expires
HTTP_TIMEOUT_S = 15.0


class NotConnected(LookupError):
    """The user has not connected this provider (or must connect it again: `needs_consent`)."""

    def __init__(self, provider: Provider, needs_consent: bool = False, first_notice: bool = False) -> None:
        # first_notice: the connection has just ended, and the user is to be told (once)
        self.provider, self.needs_consent, self.first_notice = provider, needs_consent, first_notice
        super().__init__(f"{provider.value} is {'waiting for consent again' if needs_consent else 'not connected'}")


@dataclass(frozen=True)
class Connection:
    """What the dashboard shows of a connection (no token)."""

    provider: Provider
    state: ConnectionState
    scopes: list[str]
    connected_at: datetime
    expires_at: datetime | None


def oauth_client(settings: Settings, config: ProviderConfig, **kwargs: Any) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(
        client_id=config.client_id, client_secret=config.client_secret, scope=config.scope,
        redirect_uri=redirect_uri(settings, config.provider), token_endpoint_auth_method="client_secret_post",
        revocation_endpoint_auth_method="client_secret_post", code_challenge_method="S256",
        leeway=REFRESH_LEEWAY_S, timeout=HTTP_TIMEOUT_S, **kwargs)


def _expiry(token: dict[str, Any]) -> datetime | None:
    expires_at = token.get("expires_at")
    return datetime.fromtimestamp(float(expires_at), UTC) if expires_at else None


class Credentials:
    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession],
                 transport: AsyncBaseTransport | None = None) -> None:
        self.settings, self.sessions = settings, sessions
        self.transport = transport  # httpx's own seam: tests route the real providers' URLs to the stand-ins

    @property
    def ring(self) -> DataKeyring:
        return self.settings.data_keyring

    def _seal(self, user_id: uuid.UUID, provider: Provider, token: dict[str, Any]) -> bytes:
        return self.ring.seal(json.dumps(dict(token)).encode(), context=credential_context(user_id, provider))

    async def save(self, user_id: uuid.UUID, provider: Provider, token: dict[str, Any]) -> None:
        """A new or refreshed token: sealed, and the connection is connected (again)."""
        scopes = str(token.get("scope") or provider_config(self.settings, provider).scope)
        values = dict(ciphertext=self._seal(user_id, provider, token), scopes=scopes, expires_at=_expiry(token),
                      state=ConnectionState.CONNECTED.value, updated_at=utcnow(), consent_notified_at=None)
        async with transaction(self.sessions) as session:
            done = await session.execute(update(OAuthCredential).where(
                OAuthCredential.user_id == user_id, OAuthCredential.provider == provider.value).values(**values))
            if not done.rowcount:  # type: ignore[attr-defined]
                session.add(OAuthCredential(user_id=user_id, provider=provider.value, **values))

    async def token(self, user_id: uuid.UUID, provider: Provider) -> dict[str, Any]:
        """The user's token (decrypted); NotConnected if there is none, or it needs consent again."""
        async with self.sessions() as session:
            row = (await session.execute(select(OAuthCredential).where(
                OAuthCredential.user_id == user_id, OAuthCredential.provider == provider.value))).scalar_one_or_none()
        if row is None:
            raise NotConnected(provider)
        if row.state == ConnectionState.NEEDS_CONSENT:
            raise NotConnected(provider, needs_consent=True)
        return json.loads(self.ring.open(row.ciphertext, context=credential_context(user_id, provider)))

    async def connections(self, user_id: uuid.UUID) -> dict[Provider, Connection]:
        async with self.sessions() as session:
            rows = (await session.execute(select(OAuthCredential).where(OAuthCredential.user_id == user_id))).scalars()
            return {Provider(r.provider): Connection(Provider(r.provider), ConnectionState(r.state), r.scopes.split(),
                                                     r.created_at, r.expires_at) for r in rows}

    async def mark_needs_consent(self, user_id: uuid.UUID, provider: Provider) -> bool:
        """The provider refused to refresh: the user must connect again. True the first time only
        (so the user is told once)."""
        async with transaction(self.sessions) as session:
            await session.execute(update(OAuthCredential).where(
                OAuthCredential.user_id == user_id, OAuthCredential.provider == provider.value)
                .values(state=ConnectionState.NEEDS_CONSENT.value, updated_at=utcnow()))
            first = await session.execute(update(OAuthCredential).where(
                OAuthCredential.user_id == user_id, OAuthCredential.provider == provider.value,
                OAuthCredential.consent_notified_at.is_(None)).values(consent_notified_at=utcnow()))  # type: ignore[union-attr]
            return bool(first.rowcount)  # type: ignore[attr-defined]

    @asynccontextmanager
    async def client(self, user_id: uuid.UUID, provider: Provider) -> AsyncIterator[AsyncOAuth2Client]:
        """authlib's client with the user's token; refreshed tokens are saved as they come."""
        config = provider_config(self.settings, provider)
        token = await self.token(user_id, provider)

        async def saved(new: dict[str, Any], refresh_token: str | None = None, access_token: str | None = None) -> None:
            await self.save(user_id, provider, new)

        async with oauth_client(self.settings, config, token=token, update_token=saved,
                                token_endpoint=config.token_url,
                                **({"transport": self.transport} if self.transport else {})) as client:
            yield client

    async def disconnect(self, user_id: uuid.UUID, provider: Provider) -> bool:
        """Revoked at the provider where it can be (Google; Microsoft has no endpoint for it), then
        our copy deleted. False if there was nothing to disconnect."""
        config = provider_config(self.settings, provider)
        try:
            token = await self.token(user_id, provider)
        except NotConnected as missing:
            if not missing.needs_consent:
                return False
            token = None
        if token and config.revoke_url:
            try:
                async with oauth_client(self.settings, config) as client:
                    # Google: revoking the refresh token ends the whole grant (access tokens too).
                    response = await client.revoke_token(
                        config.revoke_url, token=token.get("refresh_token") or token["access_token"],
                        token_type_hint="refresh_token" if token.get("refresh_token") else "access_token")
                if response.status_code >= 400:
                    log.warning("%s refused to revoke user %s's token: HTTP %s", provider.value, user_id,
                                response.status_code)
            except (OAuthError, HTTPError) as error:  # the token is deleted here anyway: say so
                log.warning("could not revoke user %s's %s token at the provider: %s", user_id, provider.value, error)
        async with transaction(self.sessions) as session:
            await session.execute(delete(OAuthCredential).where(
                OAuthCredential.user_id == user_id, OAuthCredential.provider == provider.value))
        return True

    async def disconnect_all(self, user_id: uuid.UUID) -> list[Provider]:
        gone = []
        for provider in Provider:
            if await self.disconnect(user_id, provider):
                gone.append(provider)
        return gone
