"""From the hotline's hand-off to the new agent's first answer, and what each think turn costs.

Runs the whole platform in this process on a freshly started scratch stack (embedded PostgreSQL,
Temporal dev server): local carrier, Deepgram-protocol voice agent and instant model stand-ins (the
model answers its first word at once and the rest at `WORD_INTERVAL_S`, a fast real model's pace:
written whole, a reply would be processed to the end by OpenClaw before its first word went out),
API, voice bridge and a worker with the local runtime (real OpenClaw, one warm spare, which the
platform waits for as `make run` does). Then:

1. A new caller sets up by phone (handset: keyed code, spoken answers). Measured as the caller
   hears it (audio reaching the handset, timestamped by polling every few milliseconds):
   - handoff gap: the end of the "All set" line's audio -> the first audio of the new agent's greeting;
   - first answer: the voice agent has the caller's first question (asked the moment the greeting
     has played) -> the first audio of its answer.
   `handoff_to_first_answer_s` is their sum: the dead air a new user meets.
2. On that awake agent, 20 turns straight to the call's think endpoint with a growing history:
   request -> first streamed token (platform + OpenClaw), and the platform's own part of it (the
   proxy logs, per turn, the time until it forwarded and until OpenClaw's first token). Twice: at
   once (the claimed spare's replacement boots meanwhile on the same two cores: reported under
   "while_spare_boots"), and once the agent pool is ready again (the headline figures).
3. One turn after 60 s of silence (`--idle-s`).

Last line: {"handoff_to_first_answer_s", "think_overhead_p50_ms", "think_overhead_p99_ms",
"platform_overhead_p50_ms", "after_idle_60s_ms", "while_spare_boots": {"p50", "p99", "platform_p50"}}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.process import free_port  # noqa: E402
from core.serve import serving  # noqa: E402
from devstack.scratch import scratch_stack  # noqa: E402
from emulators import llm  # noqa: E402
from emulators.carrier.handset import Handset, handset  # noqa: E402
from emulators.voice_agent import VoiceAgentServer  # noqa: E402
from tests.voice.platform import email_code, platform_settings_for, spare_ready, start_platform  # noqa: E402

POLL_S = 0.005
TURNS = 20
WORD_INTERVAL_S = 0.01  # 100 words a second: faster than the hosted models we would use


class Ear:
    """When audio reached the handset: the time of every growth of what it heard."""

    def __init__(self, phone: Handset) -> None:
        self.phone = phone
        self.growth: list[tuple[float, int]] = []
        self.task = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        size = 0
        while True:
            if len(self.phone.heard) != size:
                size = len(self.phone.heard)
                self.growth.append((time.monotonic(), size))
            await asyncio.sleep(POLL_S)

    async def first_after(self, moment: float, timeout: float = 120) -> float:
        """When the first audio after `moment` arrived (waiting for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (found := next((t for t, _ in self.growth if t > moment), None)) is not None:
                return found
            await asyncio.sleep(POLL_S)
        raise TimeoutError("no audio reached the handset")

    def last_before(self, moment: float) -> float | None:
        return next((t for t, _ in reversed(self.growth) if t < moment), None)

    async def quiet_for(self, seconds: float, timeout: float = 60) -> float:
        """Waits until nothing new was heard for `seconds`; returns when the last audio arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = self.growth[-1][0] if self.growth else 0.0
            if time.monotonic() - last >= seconds:
                return last
            await asyncio.sleep(POLL_S)
        raise TimeoutError("the handset never went quiet")


class Watch:
    """When the voice agent's events happened (its sessions' event lists, timestamped by polling)."""

    def __init__(self, agent: VoiceAgentServer) -> None:
        self.agent = agent
        self.seen: list[tuple[float, int, dict[str, Any]]] = []  # (time, session index, event)
        self.task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        counts: dict[int, int] = {}
        while True:
            for index, session in enumerate(list(self.agent.sessions)):
                for event in session.events[counts.get(index, 0):]:
                    self.seen.append((time.monotonic(), index, event))
                counts[index] = len(session.events)
            await asyncio.sleep(POLL_S)

    async def wait(self, test: Any, timeout: float = 120, after: int = 0) -> tuple[float, int, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := next((s for s in self.seen[after:] if test(s[1], s[2])), None):
                return found
            await asyncio.sleep(POLL_S)
        said = [e.get("content") for _, _, e in self.seen if e.get("type") == "ConversationText"]
        raise TimeoutError(f"the voice agent never got there; it said {said[-6:]}")


def said(text: str, role: str = "assistant") -> Any:
    return lambda _i, e: e.get("type") == "ConversationText" and e.get("role") == role and text in e["content"]


class ProxyTimings(logging.Handler):
    """The proxy's per-turn log line: the platform's own part, and OpenClaw's time to its first token."""

    PATTERN = re.compile(r"think turn: platform ([\d.]+) ms, agent's first token after ([\d.]+) ms")

    def __init__(self) -> None:
        super().__init__()
        self.turns: list[tuple[float, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if match := self.PATTERN.search(record.getMessage()):
            self.turns.append((float(match[1]), float(match[2])))


async def onboard(settings: Any, agent: VoiceAgentServer, watch: Watch, phone: Handset, ear: Ear) -> dict[str, Any]:
    """A new caller's set-up, through to their new agent's first answer; the call stays up."""
    address = f"bench.{uuid.uuid4().hex[:6]}@example.com"

    async def turn(words: str, answer: str) -> None:
        await ear.quiet_for(0.3)
        known = len(watch.seen)
        await phone.say(words)
        await watch.wait(said(answer), after=known)

    await phone.dial(settings.hotline_number)
    await watch.wait(said("Welcome to DeepClaw!"))
    code = await _sms_code(phone)
    await ear.quiet_for(0.3)
    await phone.dtmf(code + "#")
    await watch.wait(said("your phone is verified"))
    await turn(address.replace(".", " dot ").replace("@", " at "), "Is that right?")
    await turn("yes", "emailed you a six-digit code")
    await turn(" ".join(await email_code(settings.api_base_url, address)), "Your email is verified")
    await turn("Luna", "Luna it is")
    await turn("casual", "Casual, got it")
    await turn("call it Nova", "Nova, lovely")
    await turn("skip", "All set!")
    greeting_at, session, _ = await watch.wait(lambda i, e: i > 0 and said("Hi, I'm Nova")(i, e), timeout=180)
    greeting_heard = await ear.first_after(greeting_at)
    all_set_ended = ear.last_before(greeting_heard - 0.05)  # the hotline's last audio before the greeting's
    assert all_set_ended is not None
    await watch.wait(lambda i, e: i == session and e.get("type") == "AgentAudioDone")
    await ear.quiet_for(0.15)  # the greeting has played
    await phone.say("what is the weather like")
    heard_at, _, _ = await watch.wait(lambda i, e: i == session and said("what is the weather like", "user")(i, e))
    answer_heard = await ear.first_after(heard_at)
    await ear.quiet_for(0.3)
    return {"handoff_gap_s": greeting_heard - all_set_ended, "first_answer_s": answer_heard - heard_at,
            "think_url": agent.sessions[session].settings["agent"]["think"]["endpoint"]["url"]}


async def _sms_code(phone: Handset) -> str:
    sms = await phone.wait_for("sms", lambda e: "Your DeepClaw code" in e["body"], timeout=60)
    return re.findall(r"\d{6}", sms["body"])[0]


class ThinkTurns:
    """Straight to the call's think endpoint with a growing history: request -> first streamed token."""

    def __init__(self, http: httpx.AsyncClient, think_url: str, timings: ProxyTimings) -> None:
        self.http = http
        self.think_url = think_url
        self.timings = timings
        self.history: list[dict[str, str]] = [{"role": "system", "content": "You are on a phone call."}]

    async def one(self) -> float:
        self.history.append({"role": "user", "content": f"question number {len(self.history) // 2}"})
        started = time.monotonic()
        first = None
        reply = ""
        async with self.http.stream("POST", self.think_url, json={"messages": self.history, "stream": True}) as answer:
            answer.raise_for_status()
            async for line in answer.aiter_lines():
                if line.startswith("data: {"):
                    words = "".join(c.get("delta", {}).get("content") or "" for c in json.loads(line[6:])["choices"])
                    if words:  # the first words (a role-only chunk comes before them)
                        first = first or time.monotonic()
                        reply += words
        assert first is not None, "no token came back"
        self.history.append({"role": "assistant", "content": reply})
        return (first - started) * 1000

    async def series(self, turns: int, label: str) -> dict[str, float]:
        """`turns` in a row: their p50 and p99, and the platform's own part (p50)."""
        overheads: list[float] = []
        for n in range(turns):
            overheads.append(await self.one())
            platform, agent = self.timings.turns[-1] if self.timings.turns else (math.nan, math.nan)
            print(f"{label} turn {n + 1:2d}: {overheads[-1]:7.1f} ms (platform {platform:.1f} ms, OpenClaw's first "
                  f"token {agent:.1f} ms)", flush=True)
        platform_parts = [p for p, _ in self.timings.turns[-turns:]]
        return {"p50": round(statistics.median(overheads), 1),
                "p99": round(sorted(overheads)[math.ceil(len(overheads) * 0.99) - 1], 1),  # nearest rank
                "platform_p50": round(statistics.median(platform_parts), 2) if platform_parts else -1.0}


async def think_turns(settings: Any, think_url: str, timings: ProxyTimings, turns: int,
                      idle_s: float) -> dict[str, Any]:
    """`turns` right after the hand-off (the claimed spare's replacement is booting meanwhile, at low
    priority), then, once the agent pool is back to ready, `turns` more on the settled platform (the
    headline figures: what a call meets on a platform not starting a gateway), then one after
    `idle_s` of silence. The call stays up throughout (its think URL is bound to it)."""
    async with httpx.AsyncClient(timeout=120) as http:
        think = ThinkTurns(http, think_url, timings)
        booting = await think.series(turns, "spare booting:")
        waited = time.monotonic()
        await spare_ready(settings)
        print(f"the agent pool was ready again {time.monotonic() - waited:.0f} s later", flush=True)
        settled = await think.series(turns, "settled:")
        await asyncio.sleep(idle_s)
        after_idle = await think.one()
    print(f"after {idle_s:.0f} s of silence: {after_idle:.1f} ms", flush=True)
    return {"think_overhead_p50_ms": settled["p50"], "think_overhead_p99_ms": settled["p99"],
            "platform_overhead_p50_ms": settled["platform_p50"], "after_idle_60s_ms": round(after_idle, 1),
            "while_spare_boots": booting}


async def main(turns: int, idle_s: float) -> dict[str, Any]:
    timings = ProxyTimings()
    logging.getLogger("voice.proxy").addHandler(timings)
    logging.getLogger("voice.proxy").setLevel(logging.INFO)
    with tempfile.TemporaryDirectory(prefix="deepclaw-bench-") as tmp:
        async with scratch_stack(Path(tmp), "bench") as stack, AsyncExitStack() as platform:
            model_port = free_port()
            await platform.enter_async_context(serving(llm.create_app(word_interval_s=WORD_INTERVAL_S), "127.0.0.1",
                                                       model_port))
            settings = platform_settings_for(database_url=stack.database_url, temporal_address=stack.temporal.address,
                                             data_dir=Path(tmp) / "data", number_pool_target=2,  # as make run
                                             model_base_url=f"http://127.0.0.1:{model_port}/v1")
            _, agent = await start_platform(platform, settings, wait_for_spare=True)
            watch = Watch(agent)
            caller = f"+1555{uuid.uuid4().int % 10**7:07d}"
            async with handset(settings.carrier_url, caller) as phone:
                ear = Ear(phone)
                started = time.monotonic()
                first = await onboard(settings, agent, watch, phone, ear)
                print(f"set-up took {time.monotonic() - started:.0f} s; hand-off gap {first['handoff_gap_s']:.2f} s, "
                      f"first answer {first['first_answer_s']:.2f} s", flush=True)
                for task in (watch.task, ear.task):  # polling every 5 ms: not to be timed against OpenClaw
                    task.cancel()
                think = await think_turns(settings, first["think_url"], timings, turns, idle_s)  # the call is still up
                await phone.hangup()
    return {"handoff_to_first_answer_s": round(first["handoff_gap_s"] + first["first_answer_s"], 2), **think}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=TURNS)
    parser.add_argument("--idle-s", type=float, default=60.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    summary = asyncio.run(main(args.turns, args.idle_s))
    print(json.dumps(summary), flush=True)
    os._exit(0)
