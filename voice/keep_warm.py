"""Keeps a caller's OpenClaw warm through the silences of their call.

OpenClaw 2026.9 retires the worker threads of an agent's run about 40–60 s after its last run (its
per-agent database execution closes after `IDLE_EXECUTION_MS` = 60 s, a constant; measured: the
gateway's worker threads go from 11 to 5 between 35 and 65 s of quiet). The next run re-spawns
them and re-imports their modules: seconds of CPU, which a caller who paused for a minute would
wait for on their next question. Reading a session (`/tools/invoke`) does not keep them; only an
agent run does. So while a call is up and quiet for `after_s`, a tiny run in the warm-up session
(never the call's own) keeps them, at most `max_runs` times per call, and stops with the call.
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
