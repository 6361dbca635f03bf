"""The wake design both agent runtimes share: a warm spare takes the user's agent.

A cold OpenClaw start takes ~10 s to healthy and more to a first answer (docs/platform-facts.md),
so no wake starts a gateway on the caller's time. Each runtime keeps spares: gateways booted with
no user and warmed up with one turn (local: child processes of the worker; Kubernetes: pods). A
wake then
  1. claims a spare for the user (exclusively: it never serves anyone else afterwards),
  2. loads the user's state and agent into it (the runtime's part: a folder handed over locally,
     an archive fetched from the store on Kubernetes) and rewrites its config,
  3. waits until the gateway's config watcher lists the user's agent,
  4. pays the agent's one-time first-turn cost with a warm-up turn, so the caller's first question
     does not,
and a spare that fails on the way is discarded and the next one tried. Replenishing the spares
after a claim is the runtime's (it knows where they run).
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


S = TypeVar("S")


@dataclass
class SpareWake(Generic[S]):
    """One runtime's parts of the wake; `wake` puts them together the same way for every runtime."""

    claim: Callable[[], Awaitable[S]]  # a spare, now this user's alone
    load: Callable[[S], Awaitable[None]]  # the user's state and agent into it (raise SpareFailed if it broke)
    gateway: Callable[[S], Gateway]
    discard: Callable[[S], Awaitable[None]]  # a spare that failed: gone for good

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
                listed = time.monotonic()
                await warm_up(self.gateway(spare), ident)  # the caller's first question will not pay it
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
            log.info("woke user %s in %.2f s (claim %.2f s, state %.2f s, agent listed %.2f s, first turn %.2f s)",
                     user_id, time.monotonic() - started, claimed - started, loaded - claimed, listed - loaded,
                     time.monotonic() - listed)
            return spare
        raise AssertionError("unreachable")
