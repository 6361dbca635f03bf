"""Request rates, per token and per client address (ASGI middleware on the API and the voice bridge).

A request that carries a token (in its path, `/hotline/<token>/…`, `/llm/<token>/…`, or as a bearer)
counts against that token: Deepgram and agents call from shared addresses, so their address says
nothing. Any other request counts against the connecting address (a proxy's X-Forwarded-For only if
that proxy is configured, core/serve.py). Twilio's webhooks are exempt from the address count: all
users' texts and calls come from Twilio's few addresses, and they are signed and limited per sender.

This guard answers floods, so it must cost nothing under one: counts are kept in the process's
memory (the `limits` library's fixed windows), never in the database the flood would then hit. With
several replicas each counts its own share. Business limits (texts an agent sends, sign-in codes,
wrong PINs) are shared through PostgreSQL (core/limits.py).
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Iterable

from limits import parse_many
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import FixedWindowRateLimiter
from starlette.types import ASGIApp, Receive, Scope, Send

from core.bounded import refuse
from core.redact import TOKEN_ROUTES

_TOKEN_IN_PATH = re.compile(rf"^/(?:{'|'.join(TOKEN_ROUTES)})/([^/]+)")


def token_of(scope: Scope) -> str | None:
    """The token a request carries, if any: in its path, else an Authorization bearer."""
    if found := _TOKEN_IN_PATH.match(scope["path"]):
        return found.group(1)
    authorization = dict(scope["headers"]).get(b"authorization", b"")
    scheme, _, credential = authorization.partition(b" ")
    if scheme.lower() == b"bearer" and credential.strip():
        return credential.strip().decode("latin-1")
    return None


class RequestLimit:
    def __init__(self, app: ASGIApp, *, per_token: str, per_client: str | None,
                 exempt: Iterable[str] = ("/twilio/", "/healthz", "/static/")) -> None:
        self.app = app
        self.per_token = parse_many(per_token)
        self.per_client = parse_many(per_client) if per_client else []
        self.exempt = tuple(exempt)
        self.strategy = FixedWindowRateLimiter(MemoryStorage())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        token = token_of(scope)
        if token is not None:
            # Only a digest is held in memory: a token is a credential.
            key, items, whose = hashlib.sha256(token.encode()).hexdigest()[:32], self.per_token, "this token"
        else:
            client = scope.get("client")
            key, items, whose = (client[0] if client else "unknown"), self.per_client, "this address"
        for item in items:
            if not await self.strategy.hit(item, "requests", key):
                reset, _ = await self.strategy.get_window_stats(item, "requests", key)
                retry = str(max(1, math.ceil(reset - time.time())))
                await refuse(send, 429, f"too many requests from {whose}: at most {item}", close=False,
                             headers=[(b"retry-after", retry.encode())])
                return
        await self.app(scope, receive, send)

