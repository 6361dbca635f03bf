"""An OAuth 2.0 authorization server standing in for Google's and Microsoft's: authlib's generic
server framework (authorization code with PKCE required, refresh, RFC 7009 revocation where the real
provider has it) under a thin Starlette layer, with a consent page a person (or a browser test)
clicks. Tokens are random strings kept in memory; `Tokens` is what the REST stand-ins check."""

from __future__ import annotations

import html
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from authlib.common.security import generate_token
from authlib.oauth2 import AuthorizationServer, OAuth2Error, OAuth2Request
from authlib.oauth2.rfc6749 import ClientMixin, OAuth2Payload, TokenMixin, grants
from authlib.oauth2.rfc6749.models import AuthorizationCodeMixin
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

CODE_TTL_S = 600


@dataclass
class Client(ClientMixin):
    client_id: str
    client_secret: str
    redirect_prefix: str  # where the platform's callbacks live (its API base URL)
    scopes: frozenset[str]
    name: str = "DeepClaw"

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        return " ".join(s for s in (scope or "").split() if s in self.scopes)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri.startswith(self.redirect_prefix.rstrip("/") + "/")

    def check_client_secret(self, client_secret: str) -> bool:
        return client_secret == self.client_secret

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in {"client_secret_basic", "client_secret_post"}

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in {"authorization_code", "refresh_token"}


@dataclass
class Code(AuthorizationCodeMixin):
    code: str
    client_id: str
    account: str
    redirect_uri: str
    scope: str
    code_challenge: str | None
    code_challenge_method: str | None
    issued_at: float = field(default_factory=time.time)

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


@dataclass
class Token(TokenMixin):
    access_token: str
    refresh_token: str | None
    client_id: str
    account: str
    scope: str
    expires_at: float
    revoked: bool = False

    def check_client(self, client: ClientMixin) -> bool:
        return client.get_client_id() == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return max(0, int(self.expires_at - time.time()))

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at

    def is_revoked(self) -> bool:
        return self.revoked

    def get_user(self) -> str:
        return self.account


@dataclass
class Tokens:
    """Every token issued, by access and by refresh token, and what was asked of the server."""

    by_access: dict[str, Token] = field(default_factory=dict)
    by_refresh: dict[str, Token] = field(default_factory=dict)
    codes: dict[str, Code] = field(default_factory=dict)
    revoked: list[str] = field(default_factory=list)  # accounts whose grant was revoked, in order
    refreshes: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))  # by account

    def account_of(self, access_token: str) -> tuple[str, str] | None:
        """(account, scope) of a live access token; None if unknown, expired or revoked."""
        token = self.by_access.get(access_token)
        if token is None or token.revoked or token.is_expired():
            return None
        return token.account, token.scope

    def expire(self, account: str) -> int:
        """Every access token of `account` expires now (the next call gets a 401 until it refreshes)."""
        live = [t for t in self.by_access.values() if t.account == account and not t.is_expired()]
        for token in live:
            token.expires_at = time.time() - 1
        return len(live)

    def revoke_grant(self, token: Token) -> None:
        """Google's revocation: the access token or refresh token revokes the whole grant."""
        for other in list(self.by_access.values()):
            if other.account == token.account and other.client_id == token.client_id:
                other.revoked = True
        self.revoked.append(token.account)


class _Payload(OAuth2Payload):
    def __init__(self, data: dict[str, str]) -> None:
        self._data = data

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return defaultdict(list, {k: [v] for k, v in self._data.items()})


class _Request(OAuth2Request):
    """A Starlette request, read (body included) before authlib's synchronous code sees it."""

    def __init__(self, request: Request, form: dict[str, str]) -> None:
        super().__init__(request.method, str(request.url), headers=request.headers)
        self._args = dict(request.query_params)
        self._form = form
        self.payload = _Payload({**self._args, **form})

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


async def read(request: Request) -> _Request:
    form = {k: str(v) for k, v in (await request.form()).items()} if request.method == "POST" else {}
    return _Request(request, form)


class ProviderServer(AuthorizationServer):
    """One provider's authorization server."""

    def __init__(self, name: str, tokens: Tokens, clients: list[Client], *, refresh_rotates: bool,
                 access_ttl_s: float) -> None:
        super().__init__(scopes_supported=sorted(set().union(*(c.scopes for c in clients))))
        self.name, self.tokens, self.access_ttl_s = name, tokens, access_ttl_s
        self.clients = {c.client_id: c for c in clients}
        self.register_token_generator("default", BearerTokenGenerator(
            lambda **_: generate_token(42), lambda **_: generate_token(48), lambda client, grant_type: int(access_ttl_s)))
        self.register_grant(_code_grant(tokens), [CodeChallenge(required=True)])
        self.register_grant(_refresh_grant(tokens, rotates=refresh_rotates))

    def query_client(self, client_id: str) -> Client | None:
        return self.clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        old = request.refresh_token
        refresh = token.get("refresh_token") or (old.refresh_token if old else None)
        saved = Token(token["access_token"], refresh, request.client.client_id, str(request.user),
                      token.get("scope", ""), time.time() + token.get("expires_in", self.access_ttl_s))
        self.tokens.by_access[saved.access_token] = saved
        if refresh:
            self.tokens.by_refresh[refresh] = saved

    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        assert isinstance(request, _Request), "read() the Starlette request first"
        return request

    def create_json_request(self, request: Any) -> Any:
        raise NotImplementedError("no JSON endpoints")

    def handle_response(self, status: int, body: Any, headers: Any) -> Response:
        headers = dict(headers or [])
        if isinstance(body, dict):
            return JSONResponse(body, status_code=status, headers={k: v for k, v in headers.items()
                                                                    if k.lower() != "content-type"})
        return Response(body or "", status_code=status, headers=headers)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass


def _code_grant(tokens: Tokens) -> type[grants.AuthorizationCodeGrant]:
    class CodeGrant(grants.AuthorizationCodeGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

        def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
            tokens.codes[code] = Code(
                code, request.client.client_id, str(request.user), request.payload.redirect_uri or "",
                request.client.get_allowed_scope(request.payload.scope), request.payload.data.get("code_challenge"),
                request.payload.data.get("code_challenge_method"))

        def query_authorization_code(self, code: str, client: ClientMixin) -> Code | None:
            found = tokens.codes.get(code)
            if found and found.client_id == client.get_client_id() and time.time() - found.issued_at < CODE_TTL_S:
                return found
            return None

        def delete_authorization_code(self, authorization_code: Code) -> None:
            tokens.codes.pop(authorization_code.code, None)

        def authenticate_user(self, authorization_code: Code) -> str:
            return authorization_code.account

    return CodeGrant


def _refresh_grant(tokens: Tokens, *, rotates: bool) -> type[grants.RefreshTokenGrant]:
    class RefreshGrant(grants.RefreshTokenGrant):
        TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
        INCLUDE_NEW_REFRESH_TOKEN = rotates  # Microsoft rotates refresh tokens; Google keeps one

        def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
            token = tokens.by_refresh.get(refresh_token)
            return token if token and not token.revoked else None

        def authenticate_user(self, refresh_token: Token) -> str:
            tokens.refreshes[refresh_token.account] += 1
            return refresh_token.account

        def revoke_old_credential(self, refresh_token: Token) -> None:
            if rotates:
                tokens.by_refresh.pop(refresh_token.refresh_token or "", None)

    return RefreshGrant


def revocation_endpoint(tokens: Tokens) -> type[RevocationEndpoint]:
    class Revocation(RevocationEndpoint):
        CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

        def query_token(self, token_string: str, token_type_hint: str | None) -> Token | None:
            return tokens.by_access.get(token_string) or tokens.by_refresh.get(token_string)

        def revoke_token(self, token: Token, request: OAuth2Request) -> None:
            tokens.revoke_grant(token)

    return Revocation


# ---- the consent page ---------------------------------------------------------------------------


def consent_page(server: ProviderServer, request: _Request, scope_meanings: dict[str, str]) -> HTMLResponse:
    """Shown by the authorization endpoint: who asks, for what, and as which account."""
    try:
        grant = server.get_consent_grant(request)
    except OAuth2Error as error:
        return error_page(server.name, error)
    client = grant.client
    asked = client.get_allowed_scope(request.payload.scope).split()
    items = "".join(f"<li><code>{html.escape(s)}</code>: {html.escape(scope_meanings.get(s, s))}</li>" for s in asked)
    action = html.escape(f"{request.uri.split('?', 1)[0]}?{urlencode(request.args)}")
    return HTMLResponse(f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Sign in – {html.escape(server.name)} (local stand-in)</title>
<style>body{{font:16px system-ui;max-width:34rem;margin:3rem auto;padding:0 1rem}}
button{{font:inherit;padding:.5rem 1.2rem;margin-right:.5rem}}label{{display:block;margin:1rem 0}}</style></head>
<body><h1>{html.escape(server.name)} <small>(local stand-in)</small></h1>
<p><strong>{html.escape(client.name)}</strong> wants to:</p><ul>{items}</ul>
<form method="post" action="{action}">
<label>Account <input name="account" type="email" value="you@example.com" required></label>
<button name="decision" value="allow">Allow</button><button name="decision" value="deny">Deny</button>
</form></body></html>""")


def error_page(name: str, error: OAuth2Error) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><title>Error – {html.escape(name)}</title><h1>Error 400: "
                        f"{html.escape(error.error)}</h1><p>{html.escape(error.description or '')}</p>",
                        status_code=400)


async def authorize(server: ProviderServer, request: Request, scope_meanings: dict[str, str]) -> Response:
    oauth_request = await read(request)
    if request.method == "GET":
        return consent_page(server, oauth_request, scope_meanings)
    try:
        grant = server.get_consent_grant(oauth_request)
    except OAuth2Error as error:
        return error_page(server.name, error)
    allowed = oauth_request.form.get("decision") == "allow"
    account = oauth_request.form.get("account", "").strip().lower() or None
    return server.create_authorization_response(oauth_request, grant_user=account if allowed else None, grant=grant)


async def token(server: ProviderServer, request: Request) -> Response:
    return server.create_token_response(await read(request))


async def revoke(server: ProviderServer, request: Request) -> Response:
    return server.create_endpoint_response(RevocationEndpoint.ENDPOINT_NAME, await read(request))
