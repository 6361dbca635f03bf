"""Serve an ASGI app inside the current event loop (stand-ins in `deepclaw dev`, and tests)."""

from __future__ import annotations

import asyncio
import contextlib
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


@asynccontextmanager
async def serving(app: Any, host: str, port: int) -> AsyncIterator[uvicorn.Server]:
    config = uvicorn.Config(app, host=host, port=port, log_config=None, lifespan="on", ws="websockets-sansio",
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
    server = EmbeddedServer(config)
    task = asyncio.create_task(server.serve())
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
