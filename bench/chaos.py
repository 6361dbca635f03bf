"""Faults under load: the whole platform as `make run` starts it (its processes supervised, embedded
PostgreSQL, Temporal dev server on its SQLite file, the stand-ins), driven from outside as users
would, while faults hit it. Nothing may be lost, done twice, or left silent.

The work, all from handsets on the local carrier: ONBOARDINGS strangers onboard on the hotline at
once; then each new user texts (each text's answer names it), asks by text for two reminders a
minute out, and calls their number twice, asking a question at each step. The faults, one of each
kind (`faults` counts the kinds injected):

  worker_kill       SIGKILL the worker during the onboardings (the supervisor starts it again)
  temporal_restart  stop the Temporal dev server and start it again on the same SQLite file
  postgres_pause    stop PostgreSQL for 10 s, then start it again
  agent_kill        SIGKILL a user's OpenClaw during their call
  voice_agent_drop  cut every voice-agent socket mid-call (the stand-in's control endpoint)
  bridge_roll       start a second voice bridge on the same ports (SO_REUSEPORT), then SIGTERM the
                    first during calls: calls in progress finish on it, new calls reach the second

After recovery: users_lost (an onboarding neither finished nor waiting at its step, or finished
without a number and a running agent), numbers_double_assigned, numbers_leaked (on the carrier but
not in the database, or reserved with no user), sms_unanswered / sms_answered_twice (each text's
answer names it once), reminders_missed / reminders_doubled, silent_calls (a question on a call
that got neither an answer nor an apology, a call that went quiet without the line-lost apology, or
an apology that promised the answer by text when no text came).

Last line: {"faults", "users_lost", "numbers_double_assigned", "numbers_leaked", "sms_unanswered",
"sms_answered_twice", "reminders_missed", "reminders_doubled", "silent_calls"}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import func, select, text
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.routes.twilio import LINE_LOST  # noqa: E402
from core.db import create_engine, sessionmaker  # noqa: E402
from core.models import PhoneNumber, User  # noqa: E402
from bench.driving import caption, onboard, quiet, scratch_settings, start_supervised  # noqa: E402
from core.process import ChildProcess  # noqa: E402
from core.temporal import connect  # noqa: E402
from devstack.faults import kill_listener  # noqa: E402
from devstack.supervisor import Supervisor  # noqa: E402
from emulators.carrier.handset import Handset, handset  # noqa: E402
from voice.bridge import RECONNECT_APOLOGY  # noqa: E402
from voice.proxy import TOO_SLOW, UNREACHABLE  # noqa: E402
from workflows.agent_lifecycle import AgentLifecycleWorkflow  # noqa: E402
from workflows.agent_lifecycle import workflow_id as lifecycle_id  # noqa: E402
from workflows.onboarding import workflow_id as onboarding_id  # noqa: E402

log = logging.getLogger("chaos")

ONBOARDINGS = 3
TEXTS_PER_USER = 4
REMINDER_IN_S = 60
APOLOGIES = (RECONNECT_APOLOGY, UNREACHABLE, TOO_SLOW, "Sorry")
TEXT_TAG = re.compile(r"chaos (\d+)-(\d+)")
REMINDER_TAG = re.compile(r"stretch(\d+)x(\d+)")


@dataclass
class Ledger:
    faults: list[str] = field(default_factory=list)
    onboardings: dict[str, str | None] = field(default_factory=dict)  # caller -> their new number
    texts_sent: set[str] = field(default_factory=set)
    reminders_asked: set[str] = field(default_factory=set)
    questions: int = 0
    heard: Counter[str] = field(default_factory=Counter)  # what each question on a call got
    owed: list[tuple[Handset, int, str, str]] = field(default_factory=list)  # answers promised by text
    silent: list[str] = field(default_factory=list)


class Platform:
    """The supervised platform, and the faults."""

    def __init__(self, root: Path) -> None:
        self.settings = scratch_settings(
            root, voice_reuse_port=True, local_agent_spares=1, number_pool_target=2, think_timeout_s=20,
            inbound_text_limits="1000/minute", inbound_call_limits="1000/minute", agent_sms_limits="1000/hour",
            voice_drain_s=120)
        self.supervisor = Supervisor(self.settings)
        self.twin: ChildProcess | None = None

    async def start(self) -> None:
        self.supervisor, self.settings = await start_supervised(self.settings)

    async def stop(self) -> None:
        if self.twin:
            await self.twin.stop()
        await self.supervisor.stop()

    # ---- faults ---------------------------------------------------------------------------------

    async def kill_worker(self) -> None:
        worker = self.supervisor.services["worker"]
        log.warning("FAULT worker_kill: SIGKILL worker pid %s", worker.pid)
        os.killpg(worker.pid, signal.SIGKILL)  # type: ignore[arg-type]

    async def restart_temporal(self) -> None:
        assert self.supervisor.temporal is not None
        log.warning("FAULT temporal_restart")
        await self.supervisor.temporal.stop()
        await self.supervisor.temporal.start()

    async def pause_postgres(self, seconds: float = 10.0) -> None:
        assert self.supervisor.postgres is not None
        log.warning("FAULT postgres_pause: %.0f s", seconds)
        await self.supervisor.postgres.stop()
        await asyncio.sleep(seconds)
        await self.supervisor.postgres.start()

    async def kill_agent(self, client: Client, user_id: uuid.UUID) -> None:
        endpoint = await client.get_workflow_handle(lifecycle_id(user_id)).execute_update(
            AgentLifecycleWorkflow.ensure_awake)
        log.warning("FAULT agent_kill: the OpenClaw of %s at %s", user_id, endpoint.base_url)
        kill_listener(httpx.URL(endpoint.base_url).port)  # type: ignore[arg-type]

    async def drop_voice_agent(self) -> int:
        async with httpx.AsyncClient() as http:
            dropped = (await http.post(f"http://127.0.0.1:{self.settings.voice_agent_port}/control/drop")).json()
        log.warning("FAULT voice_agent_drop: %s sockets cut", dropped["dropped"])
        return int(dropped["dropped"])

    async def roll_bridge(self) -> None:
        """A second bridge joins the ports; the first is told to stop (it drains its calls)."""
        log_path = self.supervisor.logs_dir / "voice-twin.log"
        self.twin = ChildProcess("voice-twin", [sys.executable, "-m", "core.cli", "voice"], env=self.supervisor.env,
                                 log_path=str(log_path))
        await self.twin.start()
        for _ in range(300):
            if log_path.exists() and "Media Streams on" in log_path.read_text(errors="replace"):
                break
            await asyncio.sleep(0.1)
        else:
            raise SystemExit("the second bridge did not start")
        first = self.supervisor.services["voice"]
        log.warning("FAULT bridge_roll: SIGTERM bridge pid %s, twin pid %s takes new calls", first.pid, self.twin.pid)
        os.kill(first.pid, signal.SIGTERM)  # type: ignore[arg-type]


# ---- what callers do ----------------------------------------------------------------------------

async def _onboard(p: Platform, ledger: Ledger, caller: str) -> None:
    ledger.onboardings[caller] = None  # started: counted as lost unless it finishes or waits at a step
    ledger.onboardings[caller] = await onboard(p.settings, caller)


async def text_and_remind(ledger: Ledger, phone: Handset, number: str, u: int) -> None:
    for n in range(TEXTS_PER_USER):
        tag = f"chaos {u}-{n}"
        ledger.texts_sent.add(tag)
        await phone.text(number, tag)
        await asyncio.sleep(2)
    for k in range(2):
        tag = f"stretch{u}x{k}"
        ledger.reminders_asked.add(tag)
        await phone.text(number, f"remind me in {REMINDER_IN_S} seconds to {tag}")


async def question(phone: Handset, ledger: Ledger, words: str, answer: str, what: str) -> None:
    """A question on a call: an answer or an apology must follow; silence is counted."""
    ledger.questions += 1
    await quiet(phone)
    mark = len(phone.events)
    await phone.say(words)
    for _ in range(120):
        heard = [e["text"] for e in phone.events[mark:] if e["type"] == "caption" and e["role"] == "agent"]
        if any(answer in text for text in heard):
            ledger.heard["answer"] += 1
            return
        if apology := next((a for a in APOLOGIES if any(a in text for text in heard)), None):
            ledger.heard[f"apology: {apology[:40]}"] += 1
            if apology in (UNREACHABLE, TOO_SLOW):  # the answer is owed by text
                ledger.owed.append((phone, mark, answer, what))
            return
        if any(e["type"] == "say" and e["text"] == LINE_LOST for e in phone.events[mark:]):
            ledger.heard["line lost"] += 1
            return
        await asyncio.sleep(0.5)
    log.error("silent: %s", what)
    ledger.silent.append(what)


async def call(p: Platform, ledger: Ledger, phone: Handset, number: str, u: int, client: Client,
               user_id: uuid.UUID, faults: list[str]) -> None:
    """A call of three questions; `faults` hit between them."""
    mark = len(phone.events)
    await phone.dial(number)
    if not await caption(phone, "", after=mark, timeout=120):
        ledger.silent.append(f"user {u}: no greeting")
        return
    await question(phone, ledger, f"remember my locker code is 44{u}1", "Got it", f"user {u} q1")
    for fault in faults:
        if fault == "voice_agent_drop":
            await p.drop_voice_agent()
        elif fault == "agent_kill":
            await p.kill_agent(client, user_id)
        await question(phone, ledger, "what is my locker code?", "locker code", f"user {u} after {fault}")
    await question(phone, ledger, "what is the weather like", "You said", f"user {u} last")
    await phone.hangup()
    await phone.wait_for("call_state", lambda e: e["state"] == "completed", after=mark, timeout=30)


async def main(onboardings: int) -> dict[str, int]:
    ledger = Ledger()
    with tempfile.TemporaryDirectory(prefix="deepclaw-chaos-") as tmp:
        p = Platform(Path(tmp))
        started = time.monotonic()
        await p.start()
        print(f"platform ready in {time.monotonic() - started:.0f} s", flush=True)
        try:
            await run(p, ledger, onboardings)
            return await tally(p, ledger)
        finally:
            await p.stop()


async def run(p: Platform, ledger: Ledger, onboardings: int) -> None:
    s = p.settings
    callers = [f"+1555{uuid.uuid4().int % 10**7:07d}" for _ in range(onboardings)]
    # Phase 1: onboardings in flight while the worker is killed, Temporal restarts, PostgreSQL pauses.
    onboarding = asyncio.gather(*(_onboard(p, ledger, caller) for caller in callers))
    await asyncio.sleep(20)
    await p.kill_worker()
    ledger.faults.append("worker_kill")
    await asyncio.sleep(15)
    await p.restart_temporal()
    ledger.faults.append("temporal_restart")
    await asyncio.sleep(15)
    await p.pause_postgres()
    ledger.faults.append("postgres_pause")
    await onboarding
    users = [(caller, number) for caller, number in ledger.onboardings.items() if number]
    print(f"{len(users)}/{onboardings} onboarded", flush=True)
    if not users:
        return
    client = await connect(s)
    engine = create_engine(s.database_url)
    sessions = sessionmaker(engine)
    async with sessions() as session:
        ids = {row.phone_e164: row.id for row in (await session.execute(select(User.phone_e164, User.id))).all()}
    await engine.dispose()
    # Phase 2: texts and reminders in flight while calls meet the voice agent dropping, the user's
    # OpenClaw dying and the bridge rolling over; then a second round of calls on the new bridge.
    async with AsyncExitStack() as stack:
        phones = [await stack.enter_async_context(handset(s.carrier_url, caller)) for caller, _ in users]
        lines = list(enumerate(zip(phones, users, strict=True)))
        texting = [asyncio.create_task(text_and_remind(ledger, phone, number, u))
                   for u, (phone, (_, number)) in lines]
        first_calls = [asyncio.create_task(call(p, ledger, phone, number, u, client, ids[caller],
                                                ["voice_agent_drop", "agent_kill"] if u == 0 else []))
                       for u, (phone, (caller, number)) in lines]
        await asyncio.sleep(8)
        await p.roll_bridge()  # calls in progress stay on the draining bridge
        await asyncio.gather(*first_calls, *texting)
        ledger.faults += ["voice_agent_drop", "agent_kill", "bridge_roll"]
        await asyncio.gather(*(call(p, ledger, phone, number, u, client, ids[caller], [])
                               for u, (phone, (caller, number)) in lines))
        await asyncio.sleep(REMINDER_IN_S + 30)  # the reminders fall due; late duplicates would show
        for phone, mark, answer, what in ledger.owed:  # an apology that promised a text: it came
            if not any(e["type"] == "sms" and answer in e["body"] for e in phone.events[mark:]):
                log.error("silent: %s was promised a text that never came", what)
                ledger.silent.append(f"{what}: no text")


async def tally(p: Platform, ledger: Ledger) -> dict[str, int]:
    s = p.settings
    client = await connect(s)
    engine = create_engine(s.database_url)
    sessions = sessionmaker(engine)
    users_lost = 0
    for caller, number in ledger.onboardings.items():
        handle = client.get_workflow_handle(onboarding_id(s.keyring, caller))
        status = (await handle.describe()).status
        if status not in (WorkflowExecutionStatus.COMPLETED, WorkflowExecutionStatus.RUNNING):
            users_lost += 1
            log.error("onboarding of %s: %s", caller, status)
        elif status == WorkflowExecutionStatus.COMPLETED and not number:
            users_lost += 1
    async with sessions() as session:
        doubled = (await session.execute(text(
            "SELECT count(*) FROM (SELECT user_id FROM phone_numbers WHERE user_id IS NOT NULL "
            "GROUP BY user_id HAVING count(*) > 1) AS d"))).scalar_one()
        ours = set((await session.execute(select(PhoneNumber.e164))).scalars())
        stranded = (await session.execute(select(func.count()).where(
            PhoneNumber.state == "assigned", PhoneNumber.user_id.is_(None)))).scalar_one()
        for user in (await session.execute(select(User))).scalars():
            try:  # every user has their agent's lifecycle
                await client.get_workflow_handle(lifecycle_id(user.id)).query(AgentLifecycleWorkflow.current_state)
            except RPCError as error:
                log.error("user %s has no agent lifecycle: %s", user.id, error)
                users_lost += 1
    await engine.dispose()
    async with httpx.AsyncClient() as http:
        carrier = (await http.get(f"{s.carrier_url}/control/state")).json()
    owned = {n["phone_number"] for n in carrier.get("numbers", [])} - {s.hotline_number}
    leaked = len(owned - ours) + stranded
    answers: Counter[str] = Counter()
    reminders: Counter[str] = Counter()
    for sms in carrier.get("messages", []):
        if not str(sms.get("direction", "")).startswith("outbound"):
            continue  # what the users sent
        body = str(sms.get("body", ""))
        answers.update(f"chaos {a}-{b}" for a, b in set(TEXT_TAG.findall(body)))
        if body.lower().startswith(("reminder", "hi! here's your reminder")):
            reminders.update(f"stretch{a}x{b}" for a, b in REMINDER_TAG.findall(body))
    print(f"onboarded {sum(1 for n in ledger.onboardings.values() if n)}/{len(ledger.onboardings)}; "
          f"texts {len(ledger.texts_sent)} ({sum(answers.values())} answers naming them); reminders "
          f"{len(ledger.reminders_asked)} ({sum(reminders.values())} fired); questions on calls {ledger.questions}: "
          f"{dict(ledger.heard)}; faults {sorted(set(ledger.faults))}", flush=True)
    return {"faults": len(set(ledger.faults)), "users_lost": users_lost, "numbers_double_assigned": int(doubled),
            "numbers_leaked": leaked,
            "sms_unanswered": sum(1 for t in ledger.texts_sent if answers[t] == 0),
            "sms_answered_twice": sum(1 for t in ledger.texts_sent if answers[t] > 1),
            "reminders_missed": sum(1 for t in ledger.reminders_asked if reminders[t] == 0),
            "reminders_doubled": sum(1 for t in ledger.reminders_asked if reminders[t] > 1),
            "silent_calls": len(ledger.silent)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--onboardings", type=int, default=ONBOARDINGS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    summary = asyncio.run(main(args.onboardings))
    print(json.dumps(summary), flush=True)
