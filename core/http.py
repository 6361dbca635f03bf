"""HTTP clients of the platform's processes (to OpenClaw, to the API, ...)."""

from __future__ import annotations

import httpx

# Idle connections are dropped well before the servers' own keep-alive timeouts (uvicorn's and
# Node's are 5 s) close them: a request sent on a connection the server is closing fails with nothing
# to retry (a think turn after a pause of about 5 s, say).
KEEPALIVE_S = 2.0


def client(timeout: httpx.Timeout | float) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(keepalive_expiry=KEEPALIVE_S))
