"""Keeps a caller's OpenClaw warm through the silences of their call.

After a minute without a run, OpenClaw 2026.9 has closed the agent's database execution
(`IDLE_EXECUTION_MS` = 60 s, a module constant) and, every 60 s, its worker-placement sweep rotates
the session-history worker. The gateway preload (activities/runtime/openclaw_warmth.mjs) rebuilds
that worker off the caller's turn and keeps idle pool workers; a turn after 70 s of silence still
costs ~1.4 s instead of ~0.5 s (measured), part of it reopening the database execution, which only a
run holds open. So while a call is up and quiet for `after_s`, a tiny run in
the warm-up session (never the call's own) keeps it, at most `max_runs` times per call, and stops
with the call.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable

import httpx

from activities.runtime.openclaw_config import WARM_UP_SESSION, warm_up_turn

log = logging.getLogger(__name__)

WARM_AFTER_S = 25.0  # below the ~35 s at which OpenClaw starts retiring its workers
MAX_RUNS_PER_CALL = 24  # ten minutes of silence; a line left open longer goes cold


class KeepWarm:
    def __init__(self, *, http: httpx.AsyncClient, call_is_up: Callable[[uuid.UUID], Awaitable[bool]],
                 after_s: float = WARM_AFTER_S, max_runs: int = MAX_RUNS_PER_CALL) -> None:
        self.http = http
        self.call_is_up = call_is_up
        self.after_s = after_s
        self.max_runs = max_runs
        self.runs: dict[uuid.UUID, int] = {}  # per stream, so far
        self.waiting: dict[uuid.UUID, asyncio.Task[None]] = {}

    def pause(self, stream: uuid.UUID) -> None:
        """The caller is talking: a real turn keeps the agent warm by itself."""
        if (task := self.waiting.pop(stream, None)) is not None:
            task.cancel()

    def arm(self, stream: uuid.UUID, base_url: str, authorization: dict[str, str], agent: str) -> None:
        """A turn has ended: warm the agent (`agent` in the gateway at `base_url`) again if the call stays quiet."""
        self.pause(stream)
        task = asyncio.create_task(self._while_quiet(stream, base_url, authorization, agent))
        self.waiting[stream] = task
        task.add_done_callback(lambda done: self.waiting.pop(stream, None) if self.waiting.get(stream) is done else None)

    async def _while_quiet(self, stream: uuid.UUID, base_url: str, authorization: dict[str, str], agent: str) -> None:
        while self.runs.get(stream, 0) < self.max_runs:
            await asyncio.sleep(self.after_s)
            if not await self.call_is_up(stream):
                self.runs.pop(stream, None)
                return
            self.runs[stream] = self.runs.get(stream, 0) + 1
            try:
                answer = await self.http.post(
                    f"{base_url}/v1/chat/completions", json=warm_up_turn(agent),
                    headers={**authorization, "x-openclaw-session-key": WARM_UP_SESSION})
                answer.raise_for_status()
            except httpx.HTTPError as error:
                log.info("could not keep the agent warm: %s", error)  # the next turn finds out for itself
                return
        log.info("call quiet for %.0f s: no longer keeping its agent warm", self.after_s * self.max_runs)
