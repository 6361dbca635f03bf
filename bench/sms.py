"""Texts under load: 200 texts to 4 users' numbers from their owners, in bursts, answered by their
awake agents (real OpenClaw, the instant model stand-in answering as the demo model).

Runs the whole platform in this process on a freshly started scratch stack (embedded PostgreSQL,
Temporal dev server), provisions 4 users, wakes their agents, then sends ROUNDS rounds: in each,
every owner sends BURST texts back to back; a round starts every ROUND_EVERY_S seconds, whether or
not the last one is answered. Each text is "bench <user>-<n>", so its answer ("You said: bench
<user>-<n>. …") says which text it answers. Measured per text, as the owner's phone sees it: send
-> the answer's arrival ("working on it" notes are counted apart, not as answers). Texts that arrive
while the agent is answering are read together: their one answer names each.

Last line: {"messages", "p50_reply_s", "p99_reply_s", "duplicates", "lost", "out_of_order",
"working_on_it"}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import AsyncExitStack
from datetime import datetime
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.driving import percentile  # noqa: E402
from core.db import create_engine, sessionmaker  # noqa: E402
from core.temporal import connect  # noqa: E402
from devstack.scratch import scratch_stack  # noqa: E402
from emulators.carrier.handset import Handset, handset  # noqa: E402
from tests.voice.platform import (  # noqa: E402
    platform_settings_for,
    provisioned_user,
    spare_ready,
    start_platform,
)
from workflows.agent_lifecycle import AgentLifecycleWorkflow  # noqa: E402
from workflows.agent_lifecycle import workflow_id as lifecycle_id  # noqa: E402
from workflows.sms_conversation import WORKING_ON_IT  # noqa: E402
from workflows.sms_conversation import workflow_id as sms_workflow_id  # noqa: E402

USERS = 4
ROUNDS = 25
BURST = 2
ROUND_EVERY_S = 3.0
ANSWER_TIMEOUT_S = 90.0
TAG = re.compile(r"bench (\d+)-(\d+)")


async def where_the_time_went(client: Client, workflow_ids: list[str]) -> None:
    """From the conversations' histories: per activity (and workflow task), the wait for a worker
    (scheduled -> started) and the run (started -> closed), p50 / max in ms."""
    waits: dict[str, list[float]] = defaultdict(list)
    runs: dict[str, list[float]] = defaultdict(list)
    first_asks = []  # each conversation's first turns: an agent left unused a while shows here
    for workflow_id in workflow_ids:
        asks_before = len(runs["ask_agent"])
        scheduled: dict[int, tuple[str, datetime]] = {}
        started: dict[int, datetime] = {}
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        for event in history.events:
            when = event.event_time.ToDatetime()
            kind = event.event_type
            if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                scheduled[event.event_id] = (event.activity_task_scheduled_event_attributes.activity_type.name, when)
            elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
                scheduled[event.event_id] = ("(workflow task)", when)
            elif kind in (EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED, EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED):
                attributes = (event.activity_task_started_event_attributes
                              if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
                              else event.workflow_task_started_event_attributes)
                name, at = scheduled[attributes.scheduled_event_id]
                waits[name].append((when - at).total_seconds() * 1000)
                started[attributes.scheduled_event_id] = when
            elif kind in (EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED, EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED):
                attributes = (event.activity_task_completed_event_attributes
                              if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
                              else event.workflow_task_completed_event_attributes)
                name, _ = scheduled[attributes.scheduled_event_id]
                runs[name].append((when - started[attributes.scheduled_event_id]).total_seconds() * 1000)
        first_asks.append(runs["ask_agent"][asks_before:asks_before + 3])
    for name in sorted(runs):
        print(f"{name:>18}: n={len(runs[name])} wait p50 {statistics.median(waits[name]):.0f} max "
              f"{max(waits[name]):.0f} ms; run p50 {statistics.median(runs[name]):.0f} max {max(runs[name]):.0f} ms",
              flush=True)
    print("first three ask_agent runs of each conversation (ms):",
          "; ".join(" ".join(f"{ms:.0f}" for ms in asks) for asks in first_asks), flush=True)


class Inbox:
    """When each answer reached one owner's phone, by the text it answers."""

    def __init__(self, phone: Handset) -> None:
        self.phone = phone
        self.arrived: list[tuple[float, int]] = []  # (when, text number), in arrival order
        self.working_on_it = 0
        self.seen = 0
        self.task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            texts = self.phone.texts()
            for text in texts[self.seen:]:
                if text["body"] == WORKING_ON_IT:
                    self.working_on_it += 1
                else:  # texts that came in together get one answer, naming each
                    self.arrived += [(time.monotonic(), int(n)) for _, n in TAG.findall(text["body"])]
            self.seen = len(texts)
            await asyncio.sleep(0.005)


async def main(users: int, rounds: int, burst: int, every_s: float,
               detail: bool = False) -> dict[str, float | int]:
    with tempfile.TemporaryDirectory(prefix="deepclaw-bench-") as tmp:
        async with scratch_stack(Path(tmp), "bench") as stack, AsyncExitStack() as platform:
            settings = platform_settings_for(database_url=stack.database_url, temporal_address=stack.temporal.address,
                                             data_dir=Path(tmp) / "data", local_agent_spares=1,
                                             inbound_text_limits="10000/minute")
            await start_platform(platform, settings)
            client = await connect(settings)
            engine = create_engine(settings.database_url)
            platform.push_async_callback(engine.dispose)
            sessions = sessionmaker(engine)
            started = time.monotonic()
            lines = []
            for _ in range(users):  # one at a time: four cold boots at once outlast a wake on 2 cores
                lines.append(user_line := await provisioned_user(platform, settings, sessions, client))
                await client.get_workflow_handle(lifecycle_id(user_line[0].id)).execute_update(
                    AgentLifecycleWorkflow.ensure_awake)
            await spare_ready(settings)  # no gateway boots while the texts are measured
            print(f"{users} agents awake after {time.monotonic() - started:.0f} s", flush=True)
            phones = [await platform.enter_async_context(handset(settings.carrier_url, user.phone_e164))
                      for user, _ in lines]
            inboxes = [Inbox(phone) for phone in phones]
            sent: list[dict[int, float]] = [{} for _ in range(users)]
            for round_ in range(rounds):
                began = time.monotonic()
                for u, (phone, (_, number)) in enumerate(zip(phones, lines, strict=True)):
                    for k in range(burst):
                        n = round_ * burst + k
                        sent[u][n] = time.monotonic()
                        await phone.text(number, f"bench {u}-{n}")
                await asyncio.sleep(max(0.0, every_s - (time.monotonic() - began)))
            deadline = time.monotonic() + ANSWER_TIMEOUT_S
            while time.monotonic() < deadline and any(
                    len({n for _, n in inbox.arrived}) < len(sent[u]) for u, inbox in enumerate(inboxes)):
                await asyncio.sleep(0.1)
            await asyncio.sleep(2.0)  # a late duplicate would show up now
            if detail:
                await where_the_time_went(client, [sms_workflow_id(user.id) for user, _ in lines])
            for inbox in inboxes:
                inbox.task.cancel()
    latencies, duplicates, lost, out_of_order, working = [], 0, 0, 0, 0
    for u, inbox in enumerate(inboxes):
        first: dict[int, float] = {}
        for when, n in inbox.arrived:
            if n in first:
                duplicates += 1
            else:
                first[n] = when
        lost += len(set(sent[u]) - set(first))
        latencies += [first[n] - sent[u][n] for n in first if n in sent[u]]
        if detail:  # each text's wait, in the order sent: where the slow answers are
            print(f"user {u}:", " ".join(f"{first[n] - sent[u][n]:.1f}" if n in first else "lost"
                                         for n in sorted(sent[u])), flush=True)
        order = [n for _, n in inbox.arrived]
        out_of_order += sum(1 for a, b in zip(order, order[1:], strict=False) if b < a)
        working += inbox.working_on_it
    if not latencies:
        raise SystemExit("no text was answered")
    print(f"answers: {len(latencies)}; mean {statistics.fmean(latencies):.2f} s, max {max(latencies):.2f} s",
          flush=True)
    return {"messages": sum(len(s) for s in sent), "p50_reply_s": round(percentile(latencies, 0.5), 2),
            "p99_reply_s": round(percentile(latencies, 0.99), 2), "duplicates": duplicates, "lost": lost,
            "out_of_order": out_of_order, "working_on_it": working}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=USERS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--burst", type=int, default=BURST)
    parser.add_argument("--every-s", type=float, default=ROUND_EVERY_S)
    parser.add_argument("--detail", action="store_true", help="print each text's wait")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    summary = asyncio.run(main(args.users, args.rounds, args.burst, args.every_s, args.detail))
    print(json.dumps(summary), flush=True)
    os._exit(0)
