"""A quiet call keeps its agent's OpenClaw warm with tiny runs in the warm-up session, and stops with the call."""

import asyncio
import time
import uuid

import httpx

from activities.runtime.gateway import GatewayProcess
from activities.runtime.openclaw_config import WARM_UP_PROMPT
from emulators.llm import ModelScript, message_text
from voice.keep_warm import KeepWarm


def _warm_ups(script: ModelScript, gateway: GatewayProcess) -> int:
    """Warm-up runs of this gateway (its workspace is in the system prompt): the model stand-in is the
    session's, and other tests' spare gateways warm up too."""
    return sum(1 for request in script.requests
               if any(WARM_UP_PROMPT in message_text(m) for m in request["messages"] if m.get("role") == "user")
               and any(str(gateway.home) in message_text(m) for m in request["messages"] if m.get("role") == "system"))


async def _until(test, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not test():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_a_quiet_call_keeps_its_agent_warm_until_it_ends(
    openclaw_gateway: GatewayProcess, model_server: tuple[str, ModelScript]
) -> None:
    _, script = model_server
    up = {uuid.uuid4(): True}
    stream = next(iter(up))

    async def call_is_up(candidate: uuid.UUID) -> bool:
        return up.get(candidate, False)

    before = _warm_ups(script, openclaw_gateway)
    auth = {"Authorization": f"Bearer {openclaw_gateway.token}"}
    async with httpx.AsyncClient(timeout=60) as http:
        warmth = KeepWarm(http=http, call_is_up=call_is_up, after_s=0.2, max_runs=2)
        warmth.arm(stream, openclaw_gateway.base_url, auth, "default")
        await _until(lambda: stream not in warmth.waiting, "the quiet call's warm-ups")
        assert _warm_ups(script, openclaw_gateway) - before == 2, "each quiet stretch ran one warm-up, up to the cap"

        # The caller talks (pause), then the call ends while quiet: no further warm-up.
        warmth.runs.clear()
        warmth.arm(stream, openclaw_gateway.base_url, auth, "default")
        warmth.pause(stream)
        assert stream not in warmth.waiting
        up[stream] = False
        warmth.arm(stream, openclaw_gateway.base_url, auth, "default")
        await _until(lambda: stream not in warmth.waiting, "the ended call's check")
    assert _warm_ups(script, openclaw_gateway) - before == 2, "a paused or ended call is not warmed"
    assert stream not in warmth.runs, "an ended call is forgotten"
