"""Stand-ins for the providers users connect: Google's and Microsoft's OAuth servers (oauth.py), on
one port (DEEPCLAW_PROVIDERS_PORT), at paths shaped like the real ones under /google and /microsoft.

Control endpoints for tests and the curious: `POST /control/expire?account=` ends an account's access
tokens now, `GET /control/state` says what was revoked and refreshed, `GET /control/tokens?account=`
lists the tokens issued to an account (tests look for them where they must not be)."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.integrations import GOOGLE_SCOPES, LOCAL_CLIENTS, OUTLOOK_SCOPES
from emulators.providers import oauth

ACCESS_TTL_S = 3600.0


@dataclass
class Providers:
    """The state of both stand-ins: tokens (by provider), and later calendars and mailboxes."""

    redirect_prefix: str  # the platform's API base URL: where callbacks may go
    access_ttl_s: float = ACCESS_TTL_S
    google_tokens: oauth.Tokens = field(default_factory=oauth.Tokens)
    outlook_tokens: oauth.Tokens = field(default_factory=oauth.Tokens)

    def __post_init__(self) -> None:
        def client(name: str, scopes: frozenset[str]) -> oauth.Client:
            client_id, secret = LOCAL_CLIENTS[name]
            return oauth.Client(client_id, secret, self.redirect_prefix, scopes)

        self.google = oauth.ProviderServer(
            "Google", self.google_tokens, [client("google", frozenset(s.value for s in GOOGLE_SCOPES))],
            refresh_rotates=False, access_ttl_s=self.access_ttl_s)
        self.google.register_endpoint(oauth.revocation_endpoint(self.google_tokens))
        # Microsoft has no revocation endpoint for apps: none here either.
        self.outlook = oauth.ProviderServer(
            "Microsoft", self.outlook_tokens, [client("outlook", frozenset(s.value for s in OUTLOOK_SCOPES))],
            refresh_rotates=True, access_ttl_s=self.access_ttl_s)


def create_app(providers: Providers) -> Starlette:
    google_meanings = {s.value: s.meaning for s in GOOGLE_SCOPES}
    outlook_meanings = {s.value: s.meaning for s in OUTLOOK_SCOPES}

    async def google_authorize(request: Request) -> Response:
        return await oauth.authorize(providers.google, request, google_meanings)

    async def google_token(request: Request) -> Response:
        return await oauth.token(providers.google, request)

    async def google_revoke(request: Request) -> Response:
        return await oauth.revoke(providers.google, request)

    async def outlook_authorize(request: Request) -> Response:
        return await oauth.authorize(providers.outlook, request, outlook_meanings)

    async def outlook_token(request: Request) -> Response:
        return await oauth.token(providers.outlook, request)

    async def expire(request: Request) -> JSONResponse:
        account = request.query_params.get("account", "").lower()
        ended = providers.google_tokens.expire(account) + providers.outlook_tokens.expire(account)
        return JSONResponse({"expired": ended})

    async def state(request: Request) -> JSONResponse:
        return JSONResponse({name: {"revoked": tokens.revoked, "refreshes": dict(tokens.refreshes),
                                    "live_tokens": sum(1 for t in tokens.by_access.values()
                                                       if not t.revoked and not t.is_expired())}
                             for name, tokens in (("google", providers.google_tokens),
                                                  ("outlook", providers.outlook_tokens))})

    async def issued(request: Request) -> JSONResponse:
        account = request.query_params.get("account", "").lower()
        found = [t for tokens in (providers.google_tokens, providers.outlook_tokens)
                 for t in tokens.by_access.values() if t.account == account]
        return JSONResponse(sorted({v for t in found for v in (t.access_token, t.refresh_token) if v}))

    return Starlette(routes=[
        Route("/google/o/oauth2/v2/auth", google_authorize, methods=["GET", "POST"]),
        Route("/google/token", google_token, methods=["POST"]),
        Route("/google/revoke", google_revoke, methods=["POST"]),
        Route("/microsoft/{tenant}/oauth2/v2.0/authorize", outlook_authorize, methods=["GET", "POST"]),
        Route("/microsoft/{tenant}/oauth2/v2.0/token", outlook_token, methods=["POST"]),
        Route("/control/expire", expire, methods=["POST"]),
        Route("/control/state", state),
        Route("/control/tokens", issued),
    ])
