"""The OAuth stand-ins hold the platform to the protocol (PKCE required, codes once, the verifier
checked, refresh, revocation), and with real client ids the same code builds requests for the real
providers' endpoints."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from authlib.integrations.httpx_client import OAuthError

from activities.integrations.credentials import oauth_client
from core.integrations import Provider, provider_config, redirect_uri
from core.process import free_port
from core.serve import serving
from core.settings import Settings
from emulators.providers import Providers, create_app

VERIFIER = "v" * 64


@pytest.fixture
async def standins() -> AsyncIterator[tuple[Settings, Providers]]:
    port = free_port()
    settings = Settings(_env_file=None, providers_port=port)
    providers = Providers(settings.api_base_url)
    async with serving(create_app(providers), "127.0.0.1", port):
        yield settings, providers


async def _code(settings: Settings, provider: Provider, **overrides: str) -> str:
    """Consent given on the stand-in's page (as a browser would post it); the code it redirects with."""
    config = provider_config(settings, provider)
    async with oauth_client(settings, config) as client:
        url, _ = client.create_authorization_url(config.authorize_url, code_verifier=VERIFIER, **config.authorize_params)
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()} | overrides
    async with httpx.AsyncClient() as browser:
        page = await browser.get(url.split("?")[0], params=query)
        assert page.status_code == 200 and "wants to" in page.text, page.text
        allowed = await browser.post(url.split("?")[0], params=query, data={"account": "ann@example.com",
                                                                            "decision": "allow"})
    location = allowed.headers["location"]
    assert location.startswith(redirect_uri(settings, provider)) and "state=" in location
    return re.search(r"[?&]code=([^&]+)", location).group(1)  # type: ignore[union-attr]


@pytest.mark.parametrize("provider", list(Provider))
async def test_code_flow_with_pkce_refresh_and_revocation(standins: tuple[Settings, Providers],
                                                         provider: Provider) -> None:
    settings, providers = standins
    config = provider_config(settings, provider)
    tokens = providers.google_tokens if provider == Provider.GOOGLE else providers.outlook_tokens
    code = await _code(settings, provider)
    async with oauth_client(settings, config) as client:
        with pytest.raises(OAuthError, match="invalid_grant"):  # PKCE: another verifier does not redeem it
            await client.fetch_token(config.token_url, code=code, code_verifier="w" * 64)
    code = await _code(settings, provider)
    async with oauth_client(settings, config) as client:
        token = await client.fetch_token(config.token_url, code=code, code_verifier=VERIFIER)
        with pytest.raises(OAuthError, match="invalid_grant"):  # a code is good once
            await client.fetch_token(config.token_url, code=code, code_verifier=VERIFIER)
    assert token["refresh_token"] and set(token["scope"].split()) == {s.value for s in config.scopes}
    assert tokens.account_of(token["access_token"]) == ("ann@example.com", token["scope"])

    async with oauth_client(settings, config, token=dict(token)) as client:
        fresh = await client.refresh_token(config.token_url)
    assert fresh["access_token"] != token["access_token"] and tokens.refreshes["ann@example.com"] == 1
    # Microsoft hands out a new refresh token each time (the old one is spent); Google keeps one.
    assert (fresh["refresh_token"] != token["refresh_token"]) == (provider == Provider.OUTLOOK)

    if config.revoke_url:
        async with oauth_client(settings, config) as client:
            revoked = await client.revoke_token(config.revoke_url, token=fresh["refresh_token"],
                                                token_type_hint="refresh_token")
        assert revoked.status_code == 200 and tokens.revoked == ["ann@example.com"]
        assert tokens.account_of(fresh["access_token"]) is None, "revoking the grant ends its access tokens"
        async with oauth_client(settings, config, token=dict(fresh)) as client:
            with pytest.raises(OAuthError, match="invalid_grant"):
                await client.refresh_token(config.token_url)


async def test_the_authorization_endpoint_refuses_what_it_must(standins: tuple[Settings, Providers]) -> None:
    settings, _ = standins
    config = provider_config(settings, Provider.GOOGLE)
    async with oauth_client(settings, config) as client:
        url, _ = client.create_authorization_url(config.authorize_url, code_verifier=VERIFIER)
    base, query = url.split("?")[0], {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    async with httpx.AsyncClient() as browser:
        for broken, expected in (({"code_challenge": None}, "code_challenge"),  # PKCE is required
                                 ({"redirect_uri": "https://evil.example/cb"}, "redirect"),
                                 ({"client_id": "someone-else"}, "client")):
            asked = {k: v for k, v in (query | broken).items() if v is not None}
            page = await browser.get(base, params=asked)
            assert page.status_code == 400 and expected in page.text.lower(), page.text
        denied = await browser.post(base, params=query, data={"account": "ann@example.com", "decision": "deny"})
    assert "error=access_denied" in denied.headers["location"]


def test_with_real_client_ids_the_real_endpoints_are_used() -> None:
    settings = Settings(_env_file=None, public_base_url="https://deepclaw.example", google_client_id="g-id",
                        google_client_secret="g-secret", microsoft_client_id="m-id",
                        microsoft_client_secret="m-secret", microsoft_tenant="organizations")
    google, outlook = provider_config(settings, Provider.GOOGLE), provider_config(settings, Provider.OUTLOOK)
    assert not google.local and not outlook.local
    assert google.authorize_url == "https://accounts.google.com/o/oauth2/v2/auth"
    assert (google.token_url, google.revoke_url) == ("https://oauth2.googleapis.com/token",
                                                     "https://oauth2.googleapis.com/revoke")
    assert (google.calendar_api, google.mail_api) == ("https://www.googleapis.com/calendar/v3",
                                                      "https://gmail.googleapis.com/gmail/v1")
    assert outlook.authorize_url == "https://login.microsoftonline.com/organizations/oauth2/v2.0/authorize"
    assert outlook.token_url == "https://login.microsoftonline.com/organizations/oauth2/v2.0/token"
    assert outlook.calendar_api == outlook.mail_api == "https://graph.microsoft.com/v1.0"
    assert outlook.revoke_url is None

    url, state = oauth_client(settings, google).create_authorization_url(
        google.authorize_url, code_verifier=VERIFIER, **google.authorize_params)
    asked = parse_qs(urlsplit(url).query)
    assert asked["client_id"] == ["g-id"] and asked["response_type"] == ["code"] and asked["state"] == [state]
    assert asked["redirect_uri"] == ["https://deepclaw.example/integrations/google/callback"]
    assert asked["code_challenge_method"] == ["S256"] and len(asked["code_challenge"][0]) == 43
    assert asked["access_type"] == ["offline"] and "gmail.readonly" in asked["scope"][0]
    assert "g-secret" not in url
