"""One authorized REST call to a provider for a user, shared by the Google and Microsoft adapters:
the user's token (opened here, by reference), refreshed by authlib before it expires; a 401 anyway
(revoked early, clock skew, the stand-in's /control/expire) refreshes once and retries; a refresh the
provider refuses marks the connection as needing consent (NotConnected, `first_notice` the first
time, so the user is told once). Provider errors become ProviderFailed with the provider's message."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from authlib.integrations.httpx_client import OAuthError
from httpx2 import HTTPError, Response

from activities.integrations.credentials import Credentials, NotConnected
from core.integrations import Provider, ProviderConfig, provider_config
from core.workspace import ProviderFailed, Trouble

log = logging.getLogger(__name__)

ErrorText = Callable[[Any], str]  # the provider's error message from its error body


class ProviderApi:
    def __init__(self, credentials: Credentials, user_id: uuid.UUID, provider: Provider, error_text: ErrorText) -> None:
        self.credentials, self.user_id, self.provider, self.error_text = credentials, user_id, provider, error_text

    @property
    def config(self) -> ProviderConfig:
        return provider_config(self.credentials.settings, self.provider)

    async def call(self, method: str, url: str, *, params: dict[str, Any] | None = None,
                   body: dict[str, Any] | None = None) -> Any:
        """The answer's JSON (None for an empty answer); raises NotConnected or ProviderFailed."""
        try:
            async with self.credentials.client(self.user_id, self.provider) as client:
                response = await client.request(method, url, params=params, json=body)
                if response.status_code == 401:
                    log.info("user %s: %s refused the access token; refreshing it once", self.user_id,
                             self.provider.value)
                    await client.refresh_token(self.config.token_url)
                    response = await client.request(method, url, params=params, json=body)
        except OAuthError as error:  # the refresh was refused (invalid_grant: revoked, or consent withdrawn)
            raise await self._needs_consent(getattr(error, "error", None) or type(error).__name__) from None
        except HTTPError as error:
            raise ProviderFailed(Trouble.UNAVAILABLE, f"{self.config.title} did not answer ({type(error).__name__})") \
                from None
        if response.status_code == 401:  # a fresh token refused too
            raise await self._needs_consent("a refreshed token was refused")
        return self._result(response)

    async def _needs_consent(self, why: str) -> NotConnected:
        log.warning("user %s: %s access ended (%s): the user must connect again", self.user_id, self.provider.value,
                    why)
        first = await self.credentials.mark_needs_consent(self.user_id, self.provider)
        return NotConnected(self.provider, needs_consent=True, first_notice=first)

    def _result(self, response: Response) -> Any:
        if response.status_code < 300:
            return response.json() if response.content else None
        try:
            detail = self.error_text(response.json())
        except ValueError:
            detail = response.reason_phrase
        status = response.status_code
        trouble = {404: Trouble.NOT_FOUND, 410: Trouble.NOT_FOUND, 429: Trouble.RATE_LIMITED}.get(
            status, Trouble.UNAVAILABLE if status >= 500 else Trouble.REFUSED)
        log.info("user %s: %s answered %s: %s", self.user_id, self.provider.value, status, detail)
        raise ProviderFailed(trouble, f"{self.config.title} answered {status}: {detail}")
