"""No dead air: a streamed answer that is slow to start opens with short fillers.

Used by both think endpoints (the user's LLM proxy and the hotline conductor): if the first real
chunk of an answer has not come within FILLER_AFTER_S, the caller hears a short phrase, then
another (a different one) every FILLER_EVERY_S, all in the same streamed response ahead of the
answer, so the voice agent always has something to say and its think request never times out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

FILLER_AFTER_S = 1.5
FILLER_EVERY_S = 4.0
FILLERS = ("One moment.", "Still working on it.", "Bear with me a second.", "Almost there.",
           "Thanks for waiting, nearly done.")
_END = object()


async def with_fillers(answer: AsyncIterator[bytes], say: Callable[[str], bytes], *,
                       first_after_s: float = FILLER_AFTER_S, every_s: float = FILLER_EVERY_S,
                       phrases: tuple[str, ...] = FILLERS) -> AsyncIterator[bytes]:
    """`answer`'s chunks, preceded by fillers (made by `say`) while its first chunk is late.

    The answer runs in a task of its own so a filler can be sent while it waits; if the client goes
    away, that task is cancelled and awaited here: nothing is left running or unretrieved.
    """
    queue: asyncio.Queue[object] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for chunk in answer:
                await queue.put(chunk)
        finally:
            await queue.put(_END)

    task = asyncio.create_task(pump())
    try:
        said, wait = 0, first_after_s
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), wait)
                break
            except TimeoutError:
                yield say(phrases[said % len(phrases)] + " ")
                said, wait = said + 1, every_s
        while item is not _END:
            yield item  # type: ignore[misc]
            item = await queue.get()
        await task  # the answer's own error, if it had one
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
