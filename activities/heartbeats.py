"""Long waits inside an activity (a spare starting, an archive uploading, an agent waking) keep the
activity visibly alive: Temporal hears a heartbeat every few seconds until the work is done."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from temporalio import activity

T = TypeVar("T")
HEARTBEAT_EVERY_S = 2.0


async def heartbeating(work: Awaitable[T]) -> T:
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_EVERY_S)
        if done:
            return task.result()
        activity.heartbeat()
