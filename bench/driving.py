"""Driving the platform from outside, as people would: the supervised platform on a scratch data
directory, and what a caller does on the hotline. Shared by the chaos and load benches."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from core.process import free_port
from core.settings import Settings
from devstack.supervisor import Supervisor
from emulators.carrier.handset import Handset, handset

log = logging.getLogger("bench")

PORTS = ("api", "voice", "media", "carrier", "agent", "search", "llm", "providers", "metrics", "pg", "temporal", "ui")


def scratch_settings(root: Path, **overrides: Any) -> Settings:
    """Settings for a whole platform on free ports under `root`, exported to the environment (the
    supervised processes read them from there)."""
    ports = {name: free_port() for name in PORTS}
    settings = Settings(
        _env_file=None, data_dir=root / "data", api_port=ports["api"], voice_port=ports["voice"],
        voice_media_port=ports["media"], carrier_port=ports["carrier"], voice_agent_port=ports["agent"],
        search_port=ports["search"], llm_port=ports["llm"], providers_port=ports["providers"],
        worker_metrics_port=ports["metrics"], temporal_ui_port=ports["ui"],
        temporal_address=f"127.0.0.1:{ports['temporal']}",
        database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{ports['pg']}/deepclaw", quiet_hours="off",
        **overrides)
    os.environ.update(settings.as_env())
    return settings


async def start_supervised(settings: Settings, *, commands: dict[str, list[str]] | None = None,
                           timeout: float = 300) -> tuple[Supervisor, Settings]:
    """The platform as `make run` starts it; returns the supervisor and the settings as its processes
    have them (the database URL carries the embedded cluster's password)."""
    supervisor = Supervisor(settings, commands=commands)
    await supervisor.start_infrastructure()
    await supervisor.start_services()
    if not await supervisor.wait_healthy(timeout=timeout):
        await supervisor.stop()
        raise SystemExit(f"the platform did not become healthy; see {supervisor.logs_dir}")
    return supervisor, settings.model_copy(update={"database_url": supervisor.env["DEEPCLAW_DATABASE_URL"]})


async def caption(phone: Handset, containing: str, *, after: int, timeout: float = 60) -> dict[str, Any] | None:
    """The agent's words containing `containing`, as they reach the phone (None after `timeout`)."""
    try:
        return await phone.wait_for("caption", lambda e: e["role"] == "agent" and containing in e["text"],
                                    after=after, timeout=timeout)
    except TimeoutError:
        return None


async def quiet(phone: Handset, gap_s: float = 0.8, timeout: float = 60) -> None:
    """Until the line has been quiet for `gap_s` (what the agent was saying has been heard)."""
    deadline = time.monotonic() + timeout
    seen, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = len(phone.heard)
        if count != seen:
            seen, since = count, time.monotonic()
        elif time.monotonic() - since >= gap_s:
            return
        await asyncio.sleep(0.1)


def call_ended(phone: Handset, after: int) -> bool:
    return any(e["type"] == "call_state" and e["state"] == "completed" for e in phone.events[after:])


async def words_done(phone: Handset, after: int, timeout: float = 30) -> float:
    """When the caller's typed words (said after event `after`) finished playing into the call."""
    said = await phone.wait_for("caption", lambda e: e["role"] == "caller" and e.get("typed"), after=after,
                                timeout=timeout)
    return arrived(phone, said, after) + float(said.get("seconds", 0))


def arrived(phone: Handset, event: dict[str, Any], after: int = 0) -> float:
    """When `event` (found from index `after` on) reached the phone. Found by identity: a line said
    again makes an event equal to an earlier one."""
    return phone.received_at[next(i for i in range(after, len(phone.events)) if phone.events[i] is event)]


async def onboard(settings: Settings, caller: str, *, steps_ms: list[float] | None = None) -> str | None:
    """The hotline's steps, as a person takes them: a turn not understood is said again; a call the
    platform could not carry is made again, and the hotline picks up at the step it was on. Returns
    the caller's new number (None if they got stuck); `steps_ms` gets, for each step, the time from
    the end of the caller's words (or keys) to the hotline's answer reaching them."""
    s = settings
    address = f"bench.{uuid.uuid4().hex[:8]}@example.com"
    async with handset(s.carrier_url, caller) as phone:
        call_mark = len(phone.events)
        await phone.dial(s.hotline_number)
        code = re.findall(r"\d{6}", (await phone.wait_for(
            "sms", lambda e: "Your DeepClaw code" in e["body"], timeout=180))["body"])[0]
        steps: list[tuple[str, str, str]] = [  # (how, what, the answer that moves on)
            ("dtmf", code + "#", "your phone is verified"),
            ("say", address.replace(".", " dot ").replace("@", " at "), "Is that right?"),
            ("say", "yes", "I've emailed you a six-digit code"),
            ("say", "<email code>", "Your email is verified"),
            ("say", "Luna", "Luna it is"), ("say", "formal please", "Formal, got it"),
            ("say", "call it Nova", "Nova, lovely"), ("dtmf", "2468#", "All set!")]
        step, tries = 0, 0
        while step < len(steps):
            how, what, expect = steps[step]
            if tries >= 6:
                log.error("%s: stuck at %r", caller, expect)
                return None
            tries += 1
            if call_ended(phone, call_mark):
                log.warning("%s: the call ended at %r; calling again", caller, expect)
                call_mark = len(phone.events)
                await phone.dial(s.hotline_number)
                await caption(phone, "Welcome", after=call_mark, timeout=90)
            if what == "<email code>":
                what = " ".join(await email_code(s.api_base_url, address))
            await quiet(phone)
            mark = len(phone.events)
            if how == "dtmf":
                await phone.dtmf(what)
                done = time.monotonic()
            else:
                await phone.say(what)
                try:
                    done = await words_done(phone, mark)
                except TimeoutError:  # the call had ended: the words went nowhere (it is called again)
                    continue
            if heard := await caption(phone, expect, after=mark, timeout=60):
                if steps_ms is not None:
                    steps_ms.append((arrived(phone, heard, mark) - done) * 1000)
                step, tries = step + 1, 0
        welcome = await phone.wait_for("sms", lambda e: "Nova" in e["body"] and e["from"] != s.hotline_number,
                                       timeout=300)
        await phone.hangup()
    log.info("%s onboarded: %s", caller, welcome["from"])
    return str(welcome["from"])


async def email_code(api_base_url: str, address: str, timeout: float = 120) -> str:
    async with httpx.AsyncClient() as http:
        for _ in range(int(timeout * 5)):
            try:
                page = await http.get(f"{api_base_url}/dev/outbox", params={"to": address})
                if found := re.findall(r"Your DeepClaw code: (\d{6})", page.text):
                    return found[0]
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit(f"no email code reached {address}")


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..1) of `values`; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


# What each process is in the platform, by its command line (the first match wins). The load bench's
# own worker and agent stand-in are named too.
ROLES = (("openclaw gateways", ("openclaw",)), ("postgres", ("postgres",)), ("temporal", ("temporal",)),
         ("stand-ins (carrier, voice agent, model)", ("core.cli standins",)), ("api", ("core.cli api",)),
         ("voice bridge", ("core.cli voice",)), ("worker", ("core.cli worker", "load.py --worker")),
         ("agent stand-in", ("load.py --standin-gateway",)), ("stand-ins' Piper voice", ("-m piper",)))
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_by_pid() -> dict[int, tuple[str, float]]:
    """(role, CPU seconds so far) of every process on the machine that has a role in the platform;
    this process is the bench driver (its handsets)."""
    found: dict[int, tuple[str, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds = (int(fields[11]) + int(fields[12])) / TICKS
        if int(entry.name) == os.getpid():
            found[int(entry.name)] = ("bench driver (handsets)", seconds)
            continue
        for role, marks in ROLES:
            if any(m in cmdline for m in marks):
                found[int(entry.name)] = (role, seconds)
                break
    return found


def cpu_by_role() -> Counter[str]:
    """CPU seconds so far of every process on the machine, by what it is in the platform."""
    used: Counter[str] = Counter()
    for role, seconds in cpu_by_pid().values():
        used[role] += seconds
    return used


class CpuMeter:
    """CPU seconds by role over a window, counting processes that start and end inside it (agents'
    gateways come and go with their wakes): /proc is read every `every_s`, and a process that is gone
    keeps what it had used when last seen (under `every_s` of its CPU can be missed)."""

    def __init__(self, every_s: float = 0.5) -> None:
        self.every_s = every_s
        self.baseline = cpu_by_pid()
        self.last = dict(self.baseline)
        self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            self._read()

    def _read(self) -> None:
        for pid, (role, seconds) in cpu_by_pid().items():
            if pid in self.last and self.last[pid][0] != role:  # the pid was reused by another process
                self.baseline.pop(pid, None)
            self.last[pid] = (role, seconds)

    async def stop(self) -> Counter[str]:
        """CPU seconds used in the window, by role."""
        self._task.cancel()
        self._read()
        used: Counter[str] = Counter()
        for pid, (role, seconds) in self.last.items():
            used[role] += seconds - self.baseline.get(pid, (role, 0.0))[1]
        return used
