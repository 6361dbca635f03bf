"""URLs users give the platform to connect to (their own MCP servers), checked against server-side
request forgery: the host is resolved once, every address it resolves to must be a public one
(outside local mode: no loopback, private, link-local, metadata, shared or reserved address), and
the connection is made to that address, pinned, so a second lookup cannot swap in another (DNS
rebinding). TLS still verifies the certificate against the host's name."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore2
import httpx2

MAX_URL = 1024


class UnsafeUrl(ValueError):
    """The URL may not be connected to; the message says why, for the user."""


@dataclass(frozen=True)
class PinnedUrl:
    url: str
    host: str
    port: int
    address: str  # what `host` resolved to, once, and was found allowed


def _address_allowed(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def pin(url: str, *, allow_private: bool) -> PinnedUrl:
    """The URL with the address to connect to; UnsafeUrl if it may not be used. `allow_private`:
    local mode, where the user's own servers run on this machine."""
    if len(url) > MAX_URL:
        raise UnsafeUrl(f"the URL is longer than {MAX_URL} characters")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise UnsafeUrl("the URL must start with https:// and name a host")
    if parts.scheme == "http" and not allow_private:
        raise UnsafeUrl("the URL must use https (its headers may carry secrets)")
    if parts.username or parts.password:
        raise UnsafeUrl("put credentials in a header, not in the URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UnsafeUrl("the URL's port is not a number from 1 to 65535") from None
    try:
        found = await asyncio.get_running_loop().getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise UnsafeUrl(f"{parts.hostname} does not resolve") from None
    addresses = sorted({str(info[4][0]) for info in found})
    if not addresses:
        raise UnsafeUrl(f"{parts.hostname} does not resolve")
    if not allow_private and not all(_address_allowed(a) for a in addresses):
        raise UnsafeUrl(f"{parts.hostname} is a private, loopback, link-local or reserved address; only public "
                        "servers can be added")
    return PinnedUrl(url=url.strip(), host=parts.hostname, port=port, address=addresses[0])


class _PinnedBackend(httpcore2.AsyncNetworkBackend):
    """Connects to the pinned address whenever the pinned host is asked for."""

    def __init__(self, pinned: PinnedUrl) -> None:
        self.pinned = pinned
        self.inner = httpcore2.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore2.AsyncNetworkStream:
        if host != self.pinned.host:  # a redirect elsewhere: refused (the MCP client follows same-origin only)
            raise httpcore2.ConnectError(f"{host} is not the pinned host {self.pinned.host}")
        return await self.inner.connect_tcp(self.pinned.address, port, timeout=timeout, local_address=local_address,
                                            socket_options=socket_options)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def pinned_client(pinned: PinnedUrl, *, headers: dict[str, str] | None = None,
                  timeout: httpx2.Timeout | float = 10.0,
                  event_hooks: dict[str, list[Any]] | None = None) -> httpx2.AsyncClient:
    """An HTTP client that reaches `pinned.host` only, at its pinned address."""
    transport = httpx2.AsyncHTTPTransport()
    # httpx has no resolver hook; its connection pool takes a network backend (httpcore's documented
    # extension point), set here on the pool the transport made.
    transport._pool._network_backend = _PinnedBackend(pinned)  # type: ignore[attr-defined]
    return httpx2.AsyncClient(transport=transport, headers=headers, timeout=timeout, follow_redirects=False,
                              event_hooks=event_hooks)
