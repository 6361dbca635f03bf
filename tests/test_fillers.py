"""No dead air: the fillers a slow answer opens with (core.fillers), on real asyncio time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from core.fillers import FILLERS, with_fillers


def _say(text: str) -> bytes:
    return text.encode()


async def _slow(after_s: float, *chunks: bytes) -> AsyncIterator[bytes]:
    await asyncio.sleep(after_s)
    for chunk in chunks:
        yield chunk


async def test_a_prompt_answer_has_no_filler() -> None:
    said = [c async for c in with_fillers(_slow(0.01, b"hello", b" there"), _say, first_after_s=0.3)]
    assert said == [b"hello", b" there"]


async def test_a_slow_answer_opens_with_varied_fillers_then_the_answer() -> None:
    said = [c async for c in with_fillers(_slow(0.75, b"the answer"), _say, first_after_s=0.2, every_s=0.2)]
    fillers, answer = said[:-1], said[-1]
    assert answer == b"the answer"
    assert 2 <= len(fillers) <= 4, said
    assert fillers[0] == FILLERS[0].encode() + b" " and len(set(fillers)) == len(fillers), "each filler differs"


async def test_a_caller_who_goes_away_leaves_nothing_running() -> None:
    """The client disconnects while the answer is still waiting (an agent waking): the answer's task is
    cancelled and awaited, so no task is left behind and no exception goes unretrieved."""
    cancelled = asyncio.Event()

    async def waking() -> AsyncIterator[bytes]:
        try:
            await asyncio.sleep(30)
            yield b"never"
        except asyncio.CancelledError:
            cancelled.set()
            raise

    before = asyncio.all_tasks()
    stream = with_fillers(waking(), _say, first_after_s=0.05)
    assert (await anext(stream)).startswith(b"One moment")
    await stream.aclose()
    assert cancelled.is_set()
    assert asyncio.all_tasks() - before == set()


async def test_an_answer_that_fails_raises_to_its_reader() -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"partial"
        raise RuntimeError("upstream broke")

    got = []
    try:
        async for chunk in with_fillers(broken(), _say):
            got.append(chunk)
    except RuntimeError as error:
        assert "upstream broke" in str(error)
    else:
        raise AssertionError("the failure was swallowed")
    assert got == [b"partial"]
