"""Load: the platform as `make run` starts it (supervised processes, embedded PostgreSQL, Temporal
dev server, the stand-ins), driven through the local carrier by many people at once:

  CALLS      owners call their own numbers at once (over the first RAMP_S), each saying TURNS typed
             turns (spoken into the call as audio by the carrier) and waiting for each answer
  TEXTS      texts from those owners to their numbers, spread over the first TEXT_SPREAD_S
  ONBOARDINGS strangers onboard on the hotline meanwhile (every step spoken or keyed)

Real OpenClaw gateways cost ~1.4 GB each, so the first REAL_AGENTS users' agents are real and the
rest are an OpenClaw-protocol stand-in (`--standin-gateway`, its own process): the same local demo
model the real gateways sit in front of, its first token after a delay drawn from the real
gateway's measured profile (bench/first_answer.py on this machine: request to first token p50
546 ms, p99 1,277 ms; log-normal). The worker is this script's `--worker`, the platform's worker
with an agent runtime that hands out one or the other (`workers.main.run_worker(runtime=)`).

Figures, as the callers see them:
  turn_ms            end of the caller's words -> the answer's first words reaching them
  sms_reply_s        a text sent -> the answer naming it reaching the owner's phone
  onboarding_step_ms end of the caller's words (or keys) -> the hotline's next line reaching them
  lost               calls never greeted, turns never answered, texts never answered, onboardings
                     that did not finish
  duplicated         turns or texts answered more than once, users with more than one number
and, for "what saturates first", each process's share of the 2 cores while the load ran.

Last line: {"calls", "sms", "onboardings", "real_agents", "p50_turn_ms", "p99_turn_ms",
"p99_sms_reply_s", "p99_onboarding_step_ms", "lost", "duplicated"}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import random
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import Receive, Scope, Send

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.driving import (  # noqa: E402
    arrived,
    cpu_by_role,
    onboard,
    percentile,
    quiet,
    scratch_settings,
    start_supervised,
    words_done,
)
from core.db import create_engine, sessionmaker  # noqa: E402
from core.models import Conversation, PhoneNumber  # noqa: E402
from core.ports import AgentEndpoint, AgentRuntime, AgentSpec, ArchiveStore, RuntimeState  # noqa: E402
from core.process import ChildProcess, free_port  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.temporal import connect  # noqa: E402
from api.routes.twilio import LINE_LOST  # noqa: E402
from emulators import llm  # noqa: E402
from emulators.carrier.handset import Handset, handset  # noqa: E402
from tests.voice.platform import provisioned_user  # noqa: E402
from voice.bridge import RECONNECT_APOLOGY  # noqa: E402
from voice.proxy import TOO_SLOW, UNREACHABLE  # noqa: E402
from workflows.agent_lifecycle import AgentLifecycleWorkflow  # noqa: E402
from workflows.agent_lifecycle import workflow_id as lifecycle_id  # noqa: E402

log = logging.getLogger("load")

CALLS, TEXTS, ONBOARDINGS, REAL_AGENTS = 200, 1000, 50, 8
TURNS = 3
RAMP_S = 10.0  # calls are placed over this long, as a crowd would
TEXT_SPREAD_S = 90.0
ANSWER_TIMEOUT_S = 120.0  # a turn or text not answered by then is lost
TIMELINES = 0  # the first this many owners' calls are logged event by event (--timeline)
FIRST_TOKEN_P50_S, FIRST_TOKEN_P99_S = 0.546, 1.277  # the real gateway's, measured (module docstring)
FIRST_TOKEN_SIGMA = math.log(FIRST_TOKEN_P99_S / FIRST_TOKEN_P50_S) / 2.326  # z of the 99th percentile
STANDIN_URL, REAL_LIMIT = "BENCH_STANDIN_URL", "BENCH_REAL_AGENTS"  # how the driver tells its worker
TEXT_TAG = re.compile(r"\bsms (\d+) y (\d+)\b")


# ---- the OpenClaw-protocol stand-in -------------------------------------------------------------

def standin_gateway() -> Starlette:
    """Every stand-in user's gateway at /u/<user>/v1/...: the local demo model (what the real
    gateways put their agent in front of), each answer started after the real gateway's delay."""
    model = llm.create_app()

    async def like_openclaw(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            await asyncio.sleep(random.lognormvariate(math.log(FIRST_TOKEN_P50_S), FIRST_TOKEN_SIGMA))
        await model(scope, receive, send)

    return Starlette(routes=[Mount("/u/{user}", app=like_openclaw)])


class MixedRuntime:
    """The configured runtime for the first `real_agents` agents created, the stand-in for the rest.
    Which is which is kept in memory: the load bench does not restart its worker."""

    def __init__(self, real: AgentRuntime, standin_url: str, real_agents: int) -> None:
        self.real = real
        self.standin_url = standin_url.rstrip("/")
        self.real_agents = real_agents
        self.reals: set[uuid.UUID] = set()
        self.standins: dict[uuid.UUID, RuntimeState] = {}

    def _real(self, user_id: uuid.UUID) -> bool:
        return user_id not in self.standins

    async def start(self) -> None:
        await self.real.start()

    async def close(self) -> None:
        await self.real.close()

    def pool(self) -> dict[str, int]:
        return self.real.pool()

    async def create(self, spec: AgentSpec) -> None:
        if spec.user_id in self.reals or (spec.user_id not in self.standins and len(self.reals) < self.real_agents):
            self.reals.add(spec.user_id)
            await self.real.create(spec)
        else:
            self.standins[spec.user_id] = RuntimeState.STOPPED

    async def apply(self, spec: AgentSpec) -> None:
        if self._real(spec.user_id):
            await self.real.apply(spec)

    async def wake(self, user_id: uuid.UUID) -> AgentEndpoint:
        if self._real(user_id):
            return await self.real.wake(user_id)
        self.standins[user_id] = RuntimeState.RUNNING
        return AgentEndpoint(base_url=f"{self.standin_url}/u/{user_id.hex}", instance="standin")

    async def _set(self, user_id: uuid.UUID, state: RuntimeState) -> None:
        self.standins[user_id] = state

    async def pause(self, user_id: uuid.UUID) -> None:
        await (self.real.pause(user_id) if self._real(user_id) else self._set(user_id, RuntimeState.PAUSED))

    async def sleep(self, user_id: uuid.UUID) -> None:
        await (self.real.sleep(user_id) if self._real(user_id) else self._set(user_id, RuntimeState.STOPPED))

    async def archive(self, user_id: uuid.UUID, store: ArchiveStore) -> str:
        if self._real(user_id):
            return await self.real.archive(user_id, store)
        raise NotImplementedError("the load bench does not archive stand-in agents")

    async def restore(self, user_id: uuid.UUID, store: ArchiveStore, key: str) -> None:
        if self._real(user_id):
            await self.real.restore(user_id, store, key)
        else:
            raise NotImplementedError("the load bench does not restore stand-in agents")

    async def delete(self, user_id: uuid.UUID) -> None:
        if self._real(user_id):
            await self.real.delete(user_id)
        else:
            self.standins.pop(user_id, None)

    async def status(self, user_id: uuid.UUID) -> RuntimeState:
        return await self.real.status(user_id) if self._real(user_id) else self.standins[user_id]

    async def export_memory(self, user_id: uuid.UUID, store: ArchiveStore) -> bool:
        return await self.real.export_memory(user_id, store) if self._real(user_id) else False


def run_bench_worker() -> None:
    from core import composition
    from core.logs import configure_logging
    from workers.main import run_worker

    settings = Settings()
    configure_logging("worker", fmt=settings.log_format, level=settings.log_level)
    # The engine connects on first use; the local runtime never uses it (the Kubernetes one does).
    agents = composition.agent_runtime(settings, sessionmaker(create_engine(settings.database_url)))
    runtime = MixedRuntime(agents, os.environ[STANDIN_URL], int(os.environ[REAL_LIMIT]))
    asyncio.run(run_worker(settings, runtime=runtime))


def run_standin_gateway(port: int) -> None:
    import uvicorn

    uvicorn.run(standin_gateway(), host="127.0.0.1", port=port, log_level="warning", access_log=False)


# ---- the load -----------------------------------------------------------------------------------

@dataclass
class Tally:
    turn_ms: list[float] = field(default_factory=list)
    answer_caption_ms: list[float] = field(default_factory=list)  # until the words naming the turn
    onboarding_step_ms: list[float] = field(default_factory=list)
    sms_sent: dict[str, float] = field(default_factory=dict)  # tag -> when sent
    sms_reply_s: list[float] = field(default_factory=list)
    lost: Counter[str] = field(default_factory=Counter)
    duplicated: Counter[str] = field(default_factory=Counter)
    onboarded: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # what each turn said on a call heard back
    owed: list[tuple[Handset, int, str]] = field(default_factory=list)  # turns whose answer was promised by text
    calls_peak: int = 0
    real_users: int = 0  # owners 0..real_users-1 have a real OpenClaw agent
    # Turn and text figures apart for real agents and stand-ins ("turn real", "text stand-in", ...).
    by_agent: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def agent(self, u: int) -> str:
        return "real" if u < self.real_users else "stand-in"


def answer_to(tag: str) -> re.Pattern[str]:
    return re.compile(rf"\b{re.escape(tag)}\b")


async def heard_back(phone: Handset, start: int, answer: re.Pattern[str], timeout: float) -> tuple[str, int]:
    """What the caller heard after their words: the answer, a reconnect apology (they say it again),
    an apology that the answer comes by text, the call ending, or nothing (after `timeout`)."""
    deadline, seen = time.monotonic() + timeout, start
    while time.monotonic() < deadline:
        for index in range(seen, len(phone.events)):
            event = phone.events[index]
            if event["type"] == "caption" and event["role"] == "agent":
                if answer.search(event["text"]):
                    return "answer", index
                if RECONNECT_APOLOGY in event["text"]:
                    return "reconnect", index
                if UNREACHABLE in event["text"] or TOO_SLOW in event["text"]:
                    return "by text", index
            elif (event["type"] == "say" and event["text"] == LINE_LOST) or (
                    event["type"] == "call_state" and event["state"] == "completed"):
                return "ended", index
        seen = len(phone.events)
        await asyncio.sleep(0.2)
    return "nothing", seen


async def ask(phone: Handset, u: int, k: int, tally: Tally) -> bool:
    """One turn, said again after a reconnect apology as a person would; False once the call is over."""
    tag = f"load {u} x {k}"
    answer = answer_to(tag)
    for _ in range(3):
        await quiet(phone, timeout=60)
        start = len(phone.events)
        await phone.say(f"note {tag}")
        try:
            done = await words_done(phone, start, timeout=60)
        except TimeoutError:  # the carrier plays typed words only into a call that is up
            tally.lost["turns on calls that had ended"] += 1
            return False
        outcome, index = await heard_back(phone, start, answer, ANSWER_TIMEOUT_S)
        tally.outcomes[outcome] += 1
        if outcome == "answer":
            # The voice agent speaks a reply whole once it has it: its first frame is the answer's start.
            # Its caption comes just ahead of it (audio before that may be an earlier line still playing).
            voice = await phone.wait_for("audio", after=index)
            tally.turn_ms.append((arrived(phone, voice, index) - done) * 1000)
            tally.by_agent[f"turn {tally.agent(u)}"].append(tally.turn_ms[-1])
            tally.answer_caption_ms.append((phone.received_at[index] - done) * 1000)
            return True
        if outcome == "by text":
            tally.owed.append((phone, start, tag))
            return True
        if outcome == "ended":
            tally.lost["turns on calls that ended"] += 1
            return False
        if outcome == "nothing":
            log.error("user %s: turn %s not answered", u, k)
            tally.lost["turns never answered"] += 1
            return True
    tally.lost["turns never answered"] += 1
    return True


async def call(phone: Handset, number: str, u: int, tally: Tally) -> None:
    """An owner calls their number, says TURNS things and waits for each answer, then hangs up."""
    await asyncio.sleep(random.uniform(0, RAMP_S))
    mark = len(phone.events)
    await phone.dial(number)
    try:
        await phone.wait_for("caption", lambda e: e["role"] == "agent", after=mark, timeout=ANSWER_TIMEOUT_S)
    except TimeoutError:
        log.error("user %s: no greeting", u)
        tally.lost["calls never greeted"] += 1
        return
    for k in range(TURNS):
        if not await ask(phone, u, k, tally):
            tally.lost["turns on calls that had ended"] += TURNS - k - 1
            return
    await quiet(phone, timeout=60)
    for k in range(TURNS):  # an answer spoken twice (a retried think, a replayed stream)
        pattern = answer_to(f"load {u} x {k}")
        if sum(1 for e in phone.events[mark:] if e["type"] == "caption" and e["role"] == "agent"
               and pattern.search(e["text"])) > 1:
            tally.duplicated["turns answered twice"] += 1
            log.error("user %s: turn %s answered twice: %s", u, k, [
                (e["role"], e["text"]) for e in phone.events[mark:] if e["type"] == "caption"])
    if u < TIMELINES:
        log_timeline(phone, mark, u)
    await phone.hangup()


def log_timeline(phone: Handset, mark: int, u: int) -> None:
    """What owner `u` heard on their call, event by event from the dial on (seconds, and how many
    audio frames came in between): where a slow turn's time went, as the caller lived it."""
    start, frames_between = phone.received_at[mark], 0
    for event, at in zip(phone.events[mark:], phone.received_at[mark:], strict=True):
        if event["type"] == "audio":
            frames_between += 1
            continue
        shown = {k: v for k, v in event.items() if k not in ("type", "payload", "call_sid", "party", "redirected")}
        log.info("user %s's call at %6.2f s (+%d audio frames): %s %s", u, at - start, frames_between, event["type"], shown)
        frames_between = 0


async def texts(phone: Handset, number: str, u: int, count: int, tally: Tally) -> None:
    """`count` texts at random moments over TEXT_SPREAD_S; each answer must name its text."""
    moments = sorted(random.uniform(0, TEXT_SPREAD_S) for _ in range(count))
    started = time.monotonic()
    for k, at in enumerate(moments):
        await asyncio.sleep(max(0.0, started + at - time.monotonic()))
        tag = f"sms {u} y {k}"
        try:
            await phone.text(number, f"note {tag}")
        except websockets.ConnectionClosed:  # the carrier stopped answering the phone's own pings
            tally.lost["texts the phone could not send"] += count - k
            return
        tally.sms_sent[tag] = time.monotonic()


def text_answers_heard(phones: list[Handset]) -> Iterator[tuple[str, float]]:
    """(the text it answers, when it reached the phone) for every answer the owners got so far; an
    answer to texts that came in together names each."""
    for phone in phones:
        for index, event in enumerate(phone.events):
            if event["type"] == "sms":
                for u, k in set(TEXT_TAG.findall(event["body"])):
                    yield f"sms {u} y {k}", phone.received_at[index]


def text_answers(phones: list[Handset], tally: Tally) -> None:
    """Each text's answer: when it first reached the phone, and whether another answer named it too."""
    seen: Counter[str] = Counter()
    for tag, when in text_answers_heard(phones):
        if tag in tally.sms_sent and not seen[tag]:
            tally.sms_reply_s.append(when - tally.sms_sent[tag])
            tally.by_agent[f"text {tally.agent(int(tag.split()[1]))}"].append(tally.sms_reply_s[-1] * 1000)
        seen[tag] += 1
    tally.lost["texts never answered"] = sum(1 for tag in tally.sms_sent if not seen[tag])
    tally.duplicated["texts answered twice"] = sum(1 for tag in tally.sms_sent if seen[tag] > 1)


async def texts_settled(phones: list[Handset], tally: Tally, timeout: float) -> None:
    """Until every text sent has an answer, or `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if {tag for tag, _ in text_answers_heard(phones)} >= set(tally.sms_sent):
            return
        await asyncio.sleep(2)


# ---- where the CPU went -------------------------------------------------------------------------

async def sample_calls(settings: Settings, tally: Tally, stop: asyncio.Event) -> None:
    """The bridge's own count of calls in progress (its /metrics), for the peak."""
    async with httpx.AsyncClient(timeout=5) as http:
        while not stop.is_set():
            try:
                page = (await http.get(f"http://127.0.0.1:{settings.voice_port}/metrics")).text
                if found := re.search(r"^deepclaw_active_calls(?:\{[^}]*\})? (\S+)$", page, re.M):
                    tally.calls_peak = max(tally.calls_peak, int(float(found[1])))
            except httpx.HTTPError:
                pass
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                pass


async def temporal_waits(settings: Settings) -> dict[str, str]:
    """From the worker's /metrics (the Temporal SDK's own): mean time tasks waited to be picked up,
    and ran, per kind; a queue that grows shows as waits growing while CPU stays idle."""
    async with httpx.AsyncClient(timeout=10) as http:
        page = (await http.get(f"http://127.0.0.1:{settings.worker_metrics_port}/metrics")).text
    totals: dict[str, list[float]] = {}
    for name, part, value in re.findall(
            r"^(\w*(?:schedule_to_start|execution)_latency\w*?)_(sum|count)(?:\{[^}]*\})? (\S+)$", page, re.M):
        totals.setdefault(name, [0.0, 0.0])[part == "count"] += float(value)
    # In seconds (core.temporal's exporter has durations_as_seconds), whatever the names say.
    return {name: f"mean {total / count * 1000:.0f} ms over {count:.0f}"
            for name, (total, count) in sorted(totals.items()) if count}


async def bridge_frame_latency(settings: Settings) -> str:
    """The bridge's own account of the time audio frames spent in it (its /metrics histogram): if
    turns are slow while this is small, the wait is outside the bridge."""
    async with httpx.AsyncClient(timeout=10) as http:
        page = (await http.get(f"http://127.0.0.1:{settings.voice_port}/metrics")).text
    buckets = [(float(le), float(n)) for le, n in re.findall(
        r'^deepclaw_frame_added_seconds_bucket\{[^}]*le="([^"]+)"[^}]*\} (\S+)$', page, re.M)]
    total = re.search(r"^deepclaw_frame_added_seconds_sum(?:\{[^}]*\})? (\S+)$", page, re.M)
    if not buckets or not buckets[-1][1] or total is None:
        return "no frames counted"
    count = buckets[-1][1]

    def bound(q: float) -> str:
        return next(f"<= {le * 1000:g} ms" for le, n in sorted(buckets) if n >= q * count)

    return f"{count:.0f} frames, mean {float(total[1]) / count * 1000:.2f} ms, p50 {bound(0.5)}, p99 {bound(0.99)}"


# ---- the run ------------------------------------------------------------------------------------

async def agent_latencies(sessions: async_sessionmaker[AsyncSession]) -> str:
    """What the voice agent reported as it started each answer (AgentStartedSpeaking, kept with the
    call): from the end of the caller's speech, its think request and its speech synthesis."""
    async with sessions() as session:
        records = (await session.execute(select(Conversation.latency).where(
            Conversation.kind == "call", Conversation.latency.is_not(None)))).scalars().all()
    # A JSON null passes IS NOT NULL (a call that ended before any answer was timed).
    turns = [turn for record in records if record for turn in record.get("turns", []) if turn.get("ttt_latency")]
    if not turns:
        return "none recorded"
    figures = []
    for key, name in (("total_latency", "speech end to answer"), ("ttt_latency", "think"), ("tts_latency", "speech")):
        values = [turn[key] * 1000 for turn in turns if key in turn]
        figures.append(f"{name} p50 {percentile(values, 0.5):.0f} ms / p99 {percentile(values, 0.99):.0f} ms")
    return f"{len(turns)} answers: " + ", ".join(figures)


def profiled(name: str, folder: Path) -> list[str]:
    """The platform's `name` service under cProfile, its profile written to `folder` when it stops
    (`deepclaw` itself leaves with os._exit, before cProfile would write it). The command line still
    names `core.cli <name>`, for cpu_by_role."""
    return [sys.executable, __file__, "--profiled", str(folder / f"{name}.prof"), "core.cli", name]


def run_profiled(out: str, name: str) -> None:
    import cProfile

    from core import cli
    from core.logs import configure_logging

    settings = Settings()
    configure_logging(name, fmt=settings.log_format, level=settings.log_level)
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        cli.COMMANDS[name][0](argparse.Namespace())
    finally:
        profiler.disable()
        profiler.dump_stats(out)


def print_profiles(folder: Path, top: int = 25) -> None:
    import pstats

    for path in sorted(folder.glob("*.prof")):
        print(f"---- {path.stem}: where its CPU went, by own time ----", flush=True)
        stats = pstats.Stats(str(path), stream=sys.stdout)
        stats.sort_stats("tottime").print_stats(top)


async def main(calls: int, sms: int, onboardings: int, real_agents: int,
               profile: Path | None = None, keep_logs: Path | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="deepclaw-load-") as tmp:
        root = Path(tmp)
        gateway_port = free_port()
        os.environ[STANDIN_URL] = f"http://127.0.0.1:{gateway_port}"
        os.environ[REAL_LIMIT] = str(real_agents)
        settings = scratch_settings(
            # A warm spare only if some users get real gateways (a run of stand-ins boots no OpenClaw).
            root, local_agent_spares=1 if real_agents else 0, number_pool_target=onboardings + 5,
            voice_agent_voice="espeak",  # Deepgram's voices are not on this machine in production
            inbound_text_limits="100000/minute", inbound_call_limits="100000/minute",
            agent_sms_limits="100000/minute", client_request_limits="100000/second")
        async with AsyncExitStack() as stack:
            (root / "data" / "logs").mkdir(parents=True, exist_ok=True)
            gateway = ChildProcess("agent-standin", [sys.executable, __file__, "--standin-gateway", str(gateway_port)],
                                   env={**os.environ}, log_path=str(root / "data" / "logs" / "agent-standin.log"))
            await gateway.start()
            stack.push_async_callback(gateway.stop)
            started = time.monotonic()
            commands = {"worker": [sys.executable, __file__, "--worker"]}
            if profile is not None:
                profile.mkdir(parents=True, exist_ok=True)
                commands |= {name: profiled(name, profile) for name in ("standins", "voice")}
            supervisor, settings = await start_supervised(settings, commands=commands)
            stack.push_async_callback(supervisor.stop)
            print(f"platform ready in {time.monotonic() - started:.0f} s", flush=True)
            try:
                return await run(stack, settings, calls, sms, onboardings, real_agents)
            finally:  # the run's folder goes with it; its processes' logs, once they stopped, need not
                if keep_logs is not None:
                    await stack.aclose()
                    shutil.copytree(root / "data" / "logs", keep_logs, dirs_exist_ok=True)
                    print(f"the platform's logs are in {keep_logs}", flush=True)
    raise AssertionError("unreachable")


async def run(stack: AsyncExitStack, settings: Settings, calls: int, sms: int, onboardings: int,
              real_agents: int) -> dict[str, Any]:
    client = await connect(settings)
    engine = create_engine(settings.database_url)
    stack.push_async_callback(engine.dispose)
    sessions = sessionmaker(engine)
    started = time.monotonic()
    # The callers' users, as provisioning leaves them, their agents woken. The real ones first and one
    # at a time: a gateway's cold boot takes both cores for ~15 s, and boots at once, or beside a
    # hundred other wakes, outlast the wake's timeout. Then the stand-ins' users, a few at a time.
    async def wake(user_id: uuid.UUID) -> bool:
        endpoint = await client.get_workflow_handle(lifecycle_id(user_id)).execute_update(
            AgentLifecycleWorkflow.ensure_awake)
        return endpoint.instance != "standin"

    users, woken = [], []
    for _ in range(min(real_agents, calls)):
        users.append(await provisioned_user(stack, settings, sessions, client))
        woken.append(await wake(users[-1][0].id))
    batch = 20
    while len(users) < calls:
        more = [await provisioned_user(stack, settings, sessions, client) for _ in range(min(batch, calls - len(users)))]
        woken += await asyncio.gather(*(wake(user.id) for user, _ in more))
        users += more
    print(f"{calls} users provisioned and awake ({sum(woken)} real OpenClaw) in {time.monotonic() - started:.0f} s",
          flush=True)
    deadline = time.monotonic() + 300
    while True:  # the hotline's callers take numbers from the pool: it is full first
        async with sessions() as session:
            available = (await session.execute(select(func.count()).where(PhoneNumber.state == "available"))).scalar_one()
        if available >= onboardings or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    print(f"number pool: {available} available", flush=True)

    tally = Tally(real_users=sum(woken))
    phones = [await stack.enter_async_context(handset(settings.carrier_url, user.phone_e164)) for user, _ in users]
    strangers = [f"+1555{uuid.uuid4().int % 10**7:07d}" for _ in range(onboardings)]
    per_user = [sms // calls + (1 if u < sms % calls else 0) for u in range(calls)]
    stop_sampling = asyncio.Event()
    sampler = asyncio.create_task(sample_calls(settings, tally, stop_sampling))
    cpu_before, window_start = cpu_by_role(), time.monotonic()
    print(f"load: {calls} calls, {sms} texts, {onboardings} onboardings at once", flush=True)

    async def stranger(caller: str) -> None:
        try:
            if await onboard(settings, caller, steps_ms=tally.onboarding_step_ms):
                tally.onboarded += 1
        except (TimeoutError, websockets.ConnectionClosed):  # a code, a welcome or the call never came
            log.exception("%s: onboarding gave up", caller)

    async def owner_calls(phone: Handset, number: str, u: int) -> None:
        try:
            await call(phone, number, u, tally)
        except TimeoutError:  # the carrier did not place the call in time
            log.exception("user %s: the call could not be placed", u)
            tally.lost["calls never placed"] += 1
        except websockets.ConnectionClosed:  # the carrier stopped answering the phone's own pings
            log.exception("user %s: the phone lost the carrier", u)
            tally.lost["calls cut off by the carrier"] += 1

    await asyncio.gather(
        *(owner_calls(phone, number, u) for u, (phone, (_, number)) in enumerate(zip(phones, users, strict=True))),
        *(texts(phone, number, u, per_user[u], tally) for u, (phone, (_, number)) in enumerate(zip(phones, users, strict=True))),
        *(stranger(caller) for caller in strangers))
    await texts_settled(phones, tally, ANSWER_TIMEOUT_S)
    window = time.monotonic() - window_start
    cpu_after = cpu_by_role()
    stop_sampling.set()
    await sampler
    text_answers(phones, tally)
    tally.lost["answers promised by text that never came"] = sum(
        1 for phone, start, tag in tally.owed
        if not any(e["type"] == "sms" and answer_to(tag).search(e["body"]) for e in phone.events[start:]))
    tally.lost["onboardings not finished"] = onboardings - tally.onboarded
    async with sessions() as session:
        tally.duplicated["users with two numbers"] = (await session.execute(text(
            "SELECT count(*) FROM (SELECT user_id FROM phone_numbers WHERE user_id IS NOT NULL "
            "GROUP BY user_id HAVING count(*) > 1) AS d"))).scalar_one()
    for name, figure in (await temporal_waits(settings)).items():
        print(f"  {name}: {figure}", flush=True)
    print(f"window {window:.0f} s; calls in progress at the peak (the bridge's count): {tally.calls_peak}", flush=True)
    print(f"time audio frames spent in the bridge: {await bridge_frame_latency(settings)}", flush=True)
    print(f"the voice agent's own figures per answer: {await agent_latencies(sessions)}", flush=True)
    print("CPU while the load ran, in cores (2 on this machine):", flush=True)
    for role, seconds in sorted(((r, cpu_after[r] - cpu_before[r]) for r in cpu_after), key=lambda x: -x[1]):
        print(f"  {role:>40}: {seconds / window:.2f}", flush=True)
    print(f"turns {len(tally.turn_ms)}: p50 {percentile(tally.turn_ms, 0.5):.0f} ms, p99 "
          f"{percentile(tally.turn_ms, 0.99):.0f} ms (until the words naming the turn: p50 "
          f"{percentile(tally.answer_caption_ms, 0.5):.0f} ms); texts {len(tally.sms_reply_s)} answered: p50 "
          f"{percentile(tally.sms_reply_s, 0.5):.1f} s, p99 {percentile(tally.sms_reply_s, 0.99):.1f} s; onboarding "
          f"steps {len(tally.onboarding_step_ms)}: p50 {percentile(tally.onboarding_step_ms, 0.5):.0f} ms; "
          f"lost {dict(+tally.lost)}; duplicated {dict(+tally.duplicated)}; what turns heard back "
          f"{dict(tally.outcomes)}", flush=True)
    for kind, values in sorted(tally.by_agent.items()):  # which agents the time went to
        print(f"  {kind} agents' {len(values)}: p50 {percentile(values, 0.5):.0f} ms, p99 "
              f"{percentile(values, 0.99):.0f} ms", flush=True)
    def figure(values: list[float], q: float, digits: int | None = None) -> float | None:
        """None (JSON null) when nothing of the kind was measured, as in a run without texts."""
        value = percentile(values, q)
        return None if math.isnan(value) else round(value, digits)

    return {"calls": calls, "sms": sms, "onboardings": onboardings, "real_agents": sum(woken),
            "p50_turn_ms": figure(tally.turn_ms, 0.5), "p99_turn_ms": figure(tally.turn_ms, 0.99),
            "p99_sms_reply_s": figure(tally.sms_reply_s, 0.99, 1),
            "p99_onboarding_step_ms": figure(tally.onboarding_step_ms, 0.99),
            "lost": sum(tally.lost.values()), "duplicated": sum(tally.duplicated.values())}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=CALLS)
    parser.add_argument("--sms", type=int, default=TEXTS)
    parser.add_argument("--onboardings", type=int, default=ONBOARDINGS)
    parser.add_argument("--real-agents", type=int, default=REAL_AGENTS)
    parser.add_argument("--text-spread", type=float, default=TEXT_SPREAD_S, metavar="S",
                        help="the texts are sent at random moments over the first S seconds")
    parser.add_argument("--timeline", type=int, default=0, metavar="N",
                        help="log the first N owners' calls event by event (where a slow turn's time went)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="run the stand-ins and the voice bridge under cProfile; print where their CPU went")
    parser.add_argument("--keep-logs", type=Path, metavar="DIR", help="copy the platform's logs to DIR at the end")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # the supervised worker
    parser.add_argument("--profiled", nargs=3, help=argparse.SUPPRESS)  # OUT core.cli NAME: a profiled service
    parser.add_argument("--standin-gateway", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_bench_worker()
    elif args.profiled:
        run_profiled(args.profiled[0], args.profiled[2])
    elif args.standin_gateway:
        run_standin_gateway(args.standin_gateway)
    else:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
        for chatty in ("httpx", "twilio"):  # a line per request from hundreds of phones
            logging.getLogger(chatty).setLevel(logging.WARNING)
        TIMELINES, TEXT_SPREAD_S = args.timeline, args.text_spread
        summary = asyncio.run(main(args.calls, args.sms, args.onboardings, args.real_agents, args.profile,
                                   args.keep_logs))
        if args.profile is not None:
            print_profiles(args.profile)
        print(json.dumps(summary), flush=True)
