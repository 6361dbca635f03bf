"""Every HTTP request body is bounded before anything parses it (ASGI middleware on the API and the
voice bridge). The body is read up to the limit of its path and then handed on whole; past the
limit the request is answered 413 with the limit in the reason, whatever Content-Length claimed.
Streamed request bodies are not used anywhere, so buffering a bounded body costs nothing.

A NUL character anywhere in the path, the query or the body (raw, %-encoded or as JSON's \\u0000) is
refused with 400 here too: no input of the platform has one, and PostgreSQL cannot store one in
text, so it would otherwise fail deep inside a handler."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.metrics import WEBHOOK_REJECTIONS

_NUL = "\x00"


class BodyLimit:
    """`limits` maps path prefixes to byte limits (the longest matching prefix wins), else `default`."""

    def __init__(self, app: ASGIApp, *, default: int, limits: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.default = default
        self.limits = sorted((limits or {}).items(), key=lambda item: -len(item[0]))

    def limit_for(self, path: str) -> int:
        return next((limit for prefix, limit in self.limits if path.startswith(prefix)), self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _NUL in scope["path"] or b"%00" in scope.get("raw_path", b"") or b"%00" in scope.get("query_string", b""):
            await refuse(send, 400, "a NUL character is not accepted")
            return
        limit = self.limit_for(scope["path"])
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await refuse(send, 400, "Content-Length is not a number")
                return
            if int(declared) > limit:
                await refuse(send, 413, f"the body is over this endpoint's limit of {limit} bytes")
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await refuse(send, 413, f"the body is over this endpoint's limit of {limit} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        form = headers.get(b"content-type", b"").startswith(b"application/x-www-form-urlencoded")
        if b"\x00" in body or b"\\u0000" in body or (form and b"%00" in body):
            await refuse(send, 400, "a NUL character is not accepted")
            return
        whole: Message | None = {"type": "http.request", "body": body, "more_body": False}

        async def replay() -> Message:
            nonlocal whole
            if whole is not None:
                message, whole = whole, None
                return message
            return await receive()  # later: only the disconnect

        await self.app(scope, replay, send)


REFUSALS = {400: "malformed", 413: "too_large", 429: "rate_limited"}


async def refuse(send: Send, status: int, reason: str, *, close: bool = True,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """An ASGI answer {"detail": reason} before the app ran (the body, if any, left unread: `close`)."""
    WEBHOOK_REJECTIONS.labels(reason=REFUSALS.get(status, str(status))).inc()
    body = json.dumps({"detail": reason}).encode()
    sent: list[Any] = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                       *(headers or []), *([(b"connection", b"close")] if close else [])]
    await send({"type": "http.response.start", "status": status, "headers": sent})
    await send({"type": "http.response.body", "body": body})
