"""Waiting on an effect in tests: a condition polled with a deadline that fails loudly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30.0, every: float = 0.05) -> None:
    """Returns once `check()` is true; AssertionError naming `what` if it is not within `timeout` s."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        await asyncio.sleep(every)
