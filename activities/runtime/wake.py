"""The wake design both agent runtimes share: a warm spare takes the user's agent.

A cold OpenClaw start takes ~10 s to healthy and more to a first answer (docs/platform-facts.md),
so no wake starts a gateway on the caller's time. Each runtime keeps spares: gateways booted with
no user and warmed up with one turn (local: child processes of the worker; Kubernetes: pods). A
wake then
  1. claims a spare for the user (exclusively: it never serves anyone else afterwards),
  2. loads the user's state and agent into it (the runtime's part: a folder handed over locally,
     an archive fetched from the store on Kubernetes) and rewrites its config,
  3. waits until the gateway's config watcher lists the user's agent, and returns it,
and a spare that fails on the way is discarded and the next one tried. Replenishing the spares
after a claim is the runtime's (it knows where they run).

The agent's first turn still carries its one-time setup (its database opened and checked, its tools
built: ~0.6 s over a warm turn). A text's turn comes at once and pays it, alone: a warm-up turn
before it, or beside it, only made the answer later (a returning user, 2 cores: 1.3-1.4 s from the
agent listed to the answer with none, 1.8-1.9 s with a warm-up first or alongside). A caller hears the
greeting while the agent wakes, so a warm-up turn a moment after the wake (WARM_UP_AFTER_S) pays the
setup before they ask anything; after a text's turn it is a cheap turn in a session of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx

from activities.runtime.openclaw_config import WARM_UP_SESSION, agent_id, warm_up_turn
from core.ports import AgentSpec

log = logging.getLogger(__name__)

LIST_TIMEOUT_S = 20.0
WAKE_ATTEMPTS = 3  # spares tried before a wake gives up
WARM_UP_AFTER_S = 1.0


class SpareFailed(Exception):
    """A spare broke while taking a user's agent (died, unreachable, refused): discard it, try another."""


@dataclass(frozen=True)
class Gateway:
    """Where to reach a gateway, as the platform does (base URL + bearer token)."""

    base_url: str
    token: str

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def spare_config(config: dict[str, Any]) -> dict[str, Any]:
    """What every runtime changes in a spare's rendered config: session-store maintenance would start
    a worker thread on a new agent's first turn (~2 s of the wake on two cores), so it only warns,
    and each runtime runs OpenClaw's `sessions cleanup` while the agent goes to sleep instead."""
    config["session"] = {"maintenance": {"mode": "warn"}}
    return config


def personality_prompt(spec: AgentSpec) -> str:
    """The agent's SOUL.md, written from the user's choices (every runtime writes the same)."""
    tone = "relaxed and friendly" if spec.personality == "casual" else "polite and precise"
    prompt = (f"# {spec.agent_name}\n\nYou are {spec.agent_name}, a personal assistant people mostly reach by phone.\n"
              f"Tone: {tone}. Keep spoken answers short; no markdown, lists or emoji in voice calls.\n")
    if spec.instructions.strip():
        prompt += f"\n## Your user's own instructions\n\n{spec.instructions.strip()}\n"
    return prompt


async def wait_listed(gateway: Gateway, ident: str, timeout: float = LIST_TIMEOUT_S) -> None:
    """Until the gateway's config watcher has loaded agent `ident` (it lists it as a model)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5) as http:
        while time.monotonic() < deadline:
            response = await http.get(f"{gateway.base_url}/v1/models", headers=gateway.headers())
            if response.status_code == 200 and any(m["id"] == f"openclaw/{ident}" for m in response.json()["data"]):
                return
            await asyncio.sleep(0.05)
    raise TimeoutError(f"gateway {gateway.base_url} did not load agent {ident} in {timeout:.0f} s")


async def warm_up(gateway: Gateway, agent: str = "default") -> None:
    """The first chat after start, and an agent's first chat, carry one-time setup (seconds): pay it
    before anyone waits. Its own session, so no conversation of the user's holds it."""
    async with httpx.AsyncClient(timeout=120) as http:
        # Its answer does not matter (a model error now is not the spare's fault); reaching it does.
        await http.post(f"{gateway.base_url}/v1/chat/completions",
                        headers={**gateway.headers(), "x-openclaw-session-key": WARM_UP_SESSION},
                        json=warm_up_turn(agent))


class LaterWarmUps:
    """Warm-up turns for woken agents, each `after_s` after its wake (see the module's note)."""

    def __init__(self, after_s: float = WARM_UP_AFTER_S) -> None:
        self.after_s = after_s
        self._tasks: set[asyncio.Task[None]] = set()

    def schedule(self, gateway: Gateway, agent: str) -> None:
        task = asyncio.create_task(self._warm_up(gateway, agent))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _warm_up(self, gateway: Gateway, agent: str) -> None:
        await asyncio.sleep(self.after_s)
        try:
            await warm_up(gateway, agent)
        except httpx.HTTPError as error:  # put to sleep meanwhile, or broken: its next turn will tell
            log.info("warm-up of %s at %s did not run: %r", agent, gateway.base_url, error)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


S = TypeVar("S")


@dataclass
class SpareWake(Generic[S]):
    """One runtime's parts of the wake; `wake` puts them together the same way for every runtime."""

    claim: Callable[[], Awaitable[S]]  # a spare, now this user's alone
    load: Callable[[S], Awaitable[None]]  # the user's state and agent into it (raise SpareFailed if it broke)
    gateway: Callable[[S], Gateway]
    discard: Callable[[S], Awaitable[None]]  # a spare that failed: gone for good
    warm_ups: LaterWarmUps

    async def wake(self, user_id: uuid.UUID, attempts: int = WAKE_ATTEMPTS) -> S:
        ident = agent_id(user_id)
        for attempt in range(1, attempts + 1):
            started = time.monotonic()
            spare = await self.claim()
            claimed = time.monotonic()
            try:
                await self.load(spare)
                loaded = time.monotonic()
                await wait_listed(self.gateway(spare), ident)
            except (SpareFailed, httpx.HTTPError, TimeoutError) as error:
                log.warning("a spare failed to take user %s's agent (attempt %d of %d): %s", user_id, attempt,
                            attempts, error)
                await self.discard(spare)
                if attempt == attempts:
                    raise
                continue
            except BaseException:
                await asyncio.shield(self.discard(spare))
                raise
            log.info("woke user %s in %.2f s (claim %.2f s, state %.2f s, agent listed %.2f s)",
                     user_id, time.monotonic() - started, claimed - started, loaded - claimed, time.monotonic() - loaded)
            self.warm_ups.schedule(self.gateway(spare), ident)
            return spare
        raise AssertionError("unreachable")
