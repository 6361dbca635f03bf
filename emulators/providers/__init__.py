"""Stand-ins for the providers users connect: Google's and Microsoft's OAuth servers (oauth.py) and
the REST APIs the agent's tools use (google.py: Calendar v3 and Gmail v1; graph.py: Microsoft Graph),
on one port (DEEPCLAW_PROVIDERS_PORT), at paths shaped like the real ones under /google, /microsoft
and /graph. Each account starts with a couple of messages (data.seeded).

Control endpoints for tests and the curious: `POST /control/expire?account=` ends an account's access
tokens now, `GET /control/state` says what was revoked and refreshed, `GET /control/tokens?account=`
lists the tokens issued to an account (tests look for them where they must not be);
`GET /control/{google|outlook}/{account}` shows an account's events, drafts and sent mail, and
`POST /control/{google|outlook}/{account}/rate-limit?calls=N` answers its next N calls with 429."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.integrations import GOOGLE_SCOPES, LOCAL_CLIENTS, OUTLOOK_SCOPES
from emulators.providers import google, graph, oauth
from emulators.providers.data import Accounts, Event, Mail

ACCESS_TTL_S = 3600.0


@dataclass
class Providers:
    """The state of both stand-ins: tokens (by provider), and later calendars and mailboxes."""

    redirect_prefix: str  # the platform's API base URL: where callbacks may go
    access_ttl_s: float = ACCESS_TTL_S
    google_tokens: oauth.Tokens = field(default_factory=oauth.Tokens)
    outlook_tokens: oauth.Tokens = field(default_factory=oauth.Tokens)
    google_accounts: Accounts = field(default_factory=Accounts)
    outlook_accounts: Accounts = field(default_factory=Accounts)

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

    def accounts(request: Request) -> Accounts:
        found = {"google": providers.google_accounts, "outlook": providers.outlook_accounts}.get(
            request.path_params["provider"])
        if found is None:
            raise HTTPException(404, "the providers are google and outlook")
        return found

    async def account_state(request: Request) -> JSONResponse:
        account = accounts(request)[request.path_params["account"]]
        return JSONResponse({"events": [_event(e) for e in account.events.values() if not e.cancelled],
                             "cancelled": [_event(e) for e in account.events.values() if e.cancelled],
                             "drafts": [_mail(m) for m in account.drafts.values()],
                             "sent": [_mail(m) for m in account.sent]})

    async def rate_limit(request: Request) -> JSONResponse:
        account = accounts(request)[request.path_params["account"]]
        account.rate_limited = int(request.query_params.get("calls", "1"))
        return JSONResponse({"rate_limited": account.rate_limited})

    return Starlette(routes=[
        *google.routes(providers.google_accounts, providers.google_tokens),
        *graph.routes(providers.outlook_accounts, providers.outlook_tokens),
        Route("/control/{provider:str}/{account:str}", account_state),
        Route("/control/{provider:str}/{account:str}/rate-limit", rate_limit, methods=["POST"]),
        Route("/google/o/oauth2/v2/auth", google_authorize, methods=["GET", "POST"]),
        Route("/google/token", google_token, methods=["POST"]),
        Route("/google/revoke", google_revoke, methods=["POST"]),
        Route("/microsoft/{tenant}/oauth2/v2.0/authorize", outlook_authorize, methods=["GET", "POST"]),
        Route("/microsoft/{tenant}/oauth2/v2.0/token", outlook_token, methods=["POST"]),
        Route("/control/expire", expire, methods=["POST"]),
        Route("/control/state", state),
        Route("/control/tokens", issued),
    ])


def _event(event: Event) -> dict[str, str]:
    return {"id": event.id, "title": event.title, "start": event.start.isoformat(), "end": event.end.isoformat(),
            "location": event.location}


def _mail(mail: Mail) -> dict[str, str | None]:
    return {"id": mail.id, "to": mail.to, "subject": mail.subject, "body": mail.body, "reply_to": mail.draft_of}
