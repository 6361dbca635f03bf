"""Serve an ASGI app inside the current event loop (stand-ins in `python -m devstack run`, and tests)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn


class EmbeddedServer(uvicorn.Server):
    """The owner of the event loop handles signals; uvicorn must not take them over."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


# Long-lived streams (an MCP client's event stream through the relay, a call's websocket) are cut
# this long after a stop is asked for, so stopping never waits on a peer that keeps its end open.
GRACEFUL_SHUTDOWN_S = 5


# No endpoint of the platform takes large websocket messages (the Media Streams server is picows).
WS_MAX_BYTES = 1024 * 1024


def server_options(forwarded_allow_ips: list[str]) -> dict[str, Any]:
    """uvicorn's options for every server of the platform. X-Forwarded-For/-Proto are believed only
    from the listed proxies (none by default: uvicorn's own default would trust 127.0.0.1)."""
    return dict(log_config=None, lifespan="on", ws="websockets-sansio", ws_max_size=WS_MAX_BYTES,
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, proxy_headers=bool(forwarded_allow_ips),
                forwarded_allow_ips=forwarded_allow_ips or None)


def shared_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket with SO_REUSEPORT: a second process on the same port shares its new
    connections (the local twin of two replicas behind a load balancer, during a rolling update)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


@asynccontextmanager
async def serving(app: Any, host: str, port: int, *, forwarded_allow_ips: list[str] | None = None,
                  reuse_port: bool = False) -> AsyncIterator[uvicorn.Server]:
    config = uvicorn.Config(app, host=host, port=port, **server_options(forwarded_allow_ips or []))
    server = EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[shared_port_socket(host, port)] if reuse_port else None))
    while not server.started:
        if task.done():
            task.result()  # start-up failed (port taken, ...): raise it
            raise RuntimeError(f"server on {host}:{port} stopped during start-up")
        await asyncio.sleep(0.02)
    try:
        yield server
    finally:
        server.should_exit = True
        await task
