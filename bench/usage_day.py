"""One user-day of the capacity model's usage profile, played on the whole platform, and what it costs:
Temporal history events and billable actions, database rows and writes, CPU by process.

The profile (issue #20): per user-day 2 calls of 3 minutes, 6 texts in and 6 out, 1 reminder; the agent
awake during activity and 10 minutes after. Here the day is played compressed, on the platform as
`make run` runs it (separate processes: API, worker with real OpenClaw agents, voice bridge, the
stand-ins for Twilio, Deepgram and the model; embedded PostgreSQL; Temporal dev server):
  - each user's agent sleeps between the day's six moments of activity (their lifecycle is started
    with Idle after IDLE_S and Sleeping after SLEEP_S instead of 10 minutes), so every moment pays a
    wake from Sleeping and a put-to-sleep, as a day whose activity is spread out does;
  - the moments: a call, two texts, two texts, two texts (the last sets a reminder by text), the
    reminder coming due, a second call. Each call lasts 3 minutes and says TURNS_PER_CALL things
    at a person's pace (what a call-minute costs the voice bridge is bench/voice_bridge.py's figure).
The window starts once every user is provisioned and asleep, and ends when they are asleep again
after their day; only what happened inside it is counted:
  - Temporal: every event of every execution in the namespace, and the billable actions among them
    (Temporal Cloud's list, as far as history shows it: workflow starts, signals, updates, activity
    attempts, local activities, timers, search-attribute upserts; queries and heartbeats are not in
    history and are not counted), per user and for the platform-wide workflows apart; the bytes of
    those events (what Temporal's database stores for them);
  - PostgreSQL (the platform's database): rows added net and rows written (inserted, updated,
    deleted) by table, and the bytes of a row by table (its table and indexes over its rows);
  - CPU seconds by process role, less what each uses idle (measured for IDLE_WINDOW_S before the
    day, every agent asleep); gateways that end inside the window are counted up to their end.
Last line: {"users", "temporal_actions_per_user_day", "history_events_per_user_day",
"history_bytes_per_user_day", "platform_actions_per_day", "db_rows_per_user_day",
"db_rows_per_user_month", "db_bytes_per_user_month", "db_writes_per_user_day",
"awake_periods_per_user_day" (each ends with the agent put to Idle), "cpu_s_per_user_day"} (cpu by role).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.driving import CpuMeter, caption, quiet, scratch_settings, start_supervised  # noqa: E402
from tests.voice.platform import wait_state  # noqa: E402
from core.db import create_engine, sessionmaker  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.temporal import connect  # noqa: E402
from emulators.carrier.handset import Handset, handset  # noqa: E402
from tests.voice.platform import provisioned_user  # noqa: E402
from workflows.agent_lifecycle import AgentLifecycleWorkflow, LifecycleState, Thresholds  # noqa: E402
from workflows.agent_lifecycle import workflow_id as lifecycle_id  # noqa: E402
from workflows.hotline_setup import WORKFLOW_ID as HOTLINE_ID  # noqa: E402
from workflows.number_pool import WORKFLOW_ID as POOL_ID  # noqa: E402

log = logging.getLogger("bench")

USERS = 2
CALL_S = 180.0  # the profile's 3-minute call
TURNS_PER_CALL = 9  # an answer every ~20 s
IDLE_S, SLEEP_S = 60, 70  # the profile's "10 minutes after", compressed (a call touches its agent every 30 s)
REMINDER_IN_S = 120  # due after the agent has gone to sleep again, so it wakes for it
DAYS_PER_MONTH = 30
IDLE_WINDOW_S = 60.0  # the platform measured idle first, so the day's CPU is the users' alone
PLATFORM_WIDE = (POOL_ID, HOTLINE_ID)  # workflows that exist once, whatever the number of users
E = EventType
ACTION_EVENTS = {E.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED, E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
                 E.EVENT_TYPE_TIMER_STARTED, E.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED,
                 E.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES, E.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED}


def actions_of(event: HistoryEvent) -> int:
    """Billable actions an event stands for (Temporal Cloud's definition, as history shows it)."""
    kind = event.event_type
    if kind == E.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:  # a child's start is counted at its parent
        return 0 if event.workflow_execution_started_event_attributes.HasField("parent_workflow_execution") else 1
    if kind == E.EVENT_TYPE_ACTIVITY_TASK_STARTED:  # every attempt, retries included
        return max(1, event.activity_task_started_event_attributes.attempt)
    if kind == E.EVENT_TYPE_MARKER_RECORDED:  # a local activity
        return 1 if event.marker_recorded_event_attributes.marker_name == "core_local_activity" else 0
    return 1 if kind in ACTION_EVENTS else 0


async def temporal_usage(client: Client, start: datetime, end: datetime) -> dict[str, Counter[str]]:
    """Events, actions and bytes inside [start, end], per user workflows and platform-wide apart,
    and events by workflow type."""
    usage: dict[str, Counter[str]] = {"user": Counter(), "platform": Counter(), "by_type": Counter(),
                                      "activities": Counter()}
    async for execution in client.list_workflows():
        if execution.close_time is not None and execution.close_time < start:
            continue
        history = await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
        share = usage["platform" if execution.id in PLATFORM_WIDE else "user"]
        for event in history.events:
            if not start <= event.event_time.ToDatetime(tzinfo=UTC) <= end:
                continue
            share["events"] += 1
            share["actions"] += actions_of(event)
            share["bytes"] += event.ByteSize()
            usage["by_type"][execution.workflow_type] += 1
            if event.event_type == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                usage["activities"][event.activity_task_scheduled_event_attributes.activity_type.name] += 1
    return usage


TABLES = text("SELECT relname, n_tup_ins + n_tup_upd + n_tup_del AS written, "
              "(SELECT count(*) FROM pg_index WHERE indrelid = relid) AS indexes "
              "FROM pg_stat_user_tables WHERE schemaname = 'public'")
# A row's bytes: its tuple (pg_column_size of the row) plus the heap's per-row overhead (tuple header
# and line pointer) plus an index entry per index; table size / rows would be pages, not rows, here.
ROW_OVERHEAD_B, INDEX_ENTRY_B = 28, 32
PLATFORM_TABLES = ("service_heartbeats",)  # one row per process, rewritten whatever the number of users


async def table_figures(sessions: async_sessionmaker[AsyncSession]) -> dict[str, dict[str, float]]:
    """Rows (counted), rows written so far and a row's bytes, by table of the platform's database."""
    async with sessions() as session:
        stats = (await session.execute(TABLES)).all()
        figures = {}
        for name, written, indexes in stats:
            rows, tuple_bytes = (await session.execute(
                text(f'SELECT count(*), coalesce(avg(pg_column_size(t.*)), 0) FROM "{name}" t'))).one()
            figures[name] = {"rows": rows, "written": written,
                             "row_bytes": float(tuple_bytes) + ROW_OVERHEAD_B + INDEX_ENTRY_B * indexes}
    return figures


async def idle_cpu(seconds: float) -> Counter[str]:
    """Each role's CPU share (cores) while every agent sleeps and nobody calls or texts."""
    meter = CpuMeter()
    await asyncio.sleep(seconds)
    return Counter({role: used / seconds for role, used in (await meter.stop()).items()})


async def asleep(client: Client, user_id: uuid.UUID) -> None:
    await wait_state(client.get_workflow_handle(lifecycle_id(user_id)), LifecycleState.SLEEPING, timeout=240)


async def text_and_answer(phone: Handset, number: str, body: str, answer: str, timeout: float = 120) -> None:
    mark = len(phone.events)
    await phone.text(number, body)
    await phone.wait_for("sms", lambda e: answer in e["body"], after=mark, timeout=timeout)


async def a_call(phone: Handset, number: str, day: int) -> None:
    """A call of CALL_S seconds: TURNS_PER_CALL things said at a person's pace, each remembered and
    its answer heard (the call's length matters: the bridge keeps the agent awake every 30 s)."""
    mark = len(phone.events)
    await phone.dial(number)
    began = time.monotonic()
    if await caption(phone, "", after=mark, timeout=120) is None:
        raise SystemExit("a call was never greeted")
    for turn in range(TURNS_PER_CALL):
        await quiet(phone)
        await asyncio.sleep(max(0.0, began + turn * CALL_S / TURNS_PER_CALL - time.monotonic()))
        said = len(phone.events)
        await phone.say(f"remember my note {day} {turn} is on the desk")
        if await caption(phone, f"note {day} {turn}", after=said, timeout=120) is None:
            raise SystemExit(f"turn {turn} of a call was never answered")
    await quiet(phone)
    await asyncio.sleep(max(0.0, began + CALL_S - time.monotonic()))
    await phone.hangup()
    await phone.wait_for("call_state", lambda e: e["state"] == "completed", after=mark, timeout=60)


async def one_day(client: Client, phone: Handset, user_id: uuid.UUID, number: str) -> None:
    """The profile's day for one user, their agent put to sleep after each moment of it."""
    moments = [
        lambda: a_call(phone, number, 1),
        lambda: texts(("remember my bike lock is 3141", "I'll remember"), ("what is my bike lock", "3141")),
        lambda: texts(("remember my gym day is friday", "I'll remember"), ("what is my gym day", "friday")),
        lambda: texts(("what did I tell you about my bike lock", "3141"),
                      (f"remind me in {REMINDER_IN_S} seconds to stretch", "stretch")),
        lambda: phone.wait_for("sms", lambda e: "reminder: stretch" in e["body"].lower(), timeout=180),
        lambda: a_call(phone, number, 2),
    ]

    async def texts(*exchanges: tuple[str, str]) -> None:
        for body, answer in exchanges:
            await text_and_answer(phone, number, body, answer)

    for moment in moments:
        await moment()
        await asleep(client, user_id)


async def main(users: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="deepclaw-usage-") as tmp:
        settings = scratch_settings(Path(tmp), local_agent_spares=1, number_pool_target=0)
        async with AsyncExitStack() as stack:
            started = time.monotonic()
            supervisor, settings = await start_supervised(settings)
            stack.push_async_callback(supervisor.stop)
            print(f"platform ready in {time.monotonic() - started:.0f} s", flush=True)
            return await run(stack, settings, users)
    raise AssertionError("unreachable")


async def run(stack: AsyncExitStack, settings: Settings, users: int) -> dict[str, Any]:
    client = await connect(settings)
    engine = create_engine(settings.database_url)
    stack.push_async_callback(engine.dispose)
    sessions = sessionmaker(engine)
    thresholds = Thresholds(idle_after=timedelta(seconds=IDLE_S), sleep_after=timedelta(seconds=SLEEP_S))
    lines = [await provisioned_user(stack, settings, sessions, client, thresholds=thresholds) for _ in range(users)]
    for user, _ in lines:  # provisioning's first boot is not the day's: each agent is up once, then asleep
        await client.get_workflow_handle(lifecycle_id(user.id)).execute_update(AgentLifecycleWorkflow.ensure_awake)
        await asleep(client, user.id)
    phones = [await stack.enter_async_context(handset(settings.carrier_url, user.phone_e164, auto_answer=True))
              for user, _ in lines]
    idle = await idle_cpu(IDLE_WINDOW_S)  # also lets the database's statistics of what came before settle
    before = await table_figures(sessions)
    meter = CpuMeter()
    start, began = datetime.now(UTC), time.monotonic()
    print(f"{users} users provisioned and asleep; playing their day", flush=True)
    await asyncio.gather(*(one_day(client, phone, user.id, number)
                           for phone, (user, number) in zip(phones, lines, strict=True)))
    end, took = datetime.now(UTC), time.monotonic() - began
    used = await meter.stop()
    # What the users' day added: the platform's own upkeep (polling, heartbeats, the spare keeper)
    # is what it uses idle, whatever the number of users.
    cpu = Counter({role: max(0.0, used[role] - idle[role] * took) for role in used})
    print("CPU while idle, in cores: " + ", ".join(f"{role} {share:.3f}" for role, share in idle.most_common()),
          flush=True)
    await asyncio.sleep(12)  # PostgreSQL reports an idle backend's table statistics within 10 s
    after = await table_figures(sessions)
    usage = await temporal_usage(client, start, end)
    return summary(users, took, usage, before, after, cpu)


def summary(users: int, took: float, usage: dict[str, Counter[str]], before: dict[str, dict[str, float]],
            after: dict[str, dict[str, float]], cpu: Counter[str]) -> dict[str, Any]:
    print(f"the day took {took:.0f} s for {users} users; Temporal events by workflow type: "
          f"{dict(usage['by_type'].most_common())}", flush=True)
    print(f"platform-wide workflows: {dict(usage['platform'])}; activities scheduled: "
          f"{dict(usage['activities'].most_common())}", flush=True)
    added, written, row_bytes = Counter[str](), Counter[str](), {}
    for name, now in after.items():
        then = before.get(name, {"rows": 0, "written": 0})
        added[name] = now["rows"] - then["rows"]
        written[name] = now["written"] - then["written"]
        row_bytes[name] = now["row_bytes"]
    platform_writes = sum(written.pop(name, 0) for name in PLATFORM_TABLES)
    print("database, per user-day: " + ", ".join(
        f"{name} +{added[name] / users:g} rows ({written[name] / users:g} written, {row_bytes[name]:.0f} B/row)"
        for name in sorted(after) if added[name] or written[name]) + f"; platform-wide: {platform_writes} written",
          flush=True)
    print("CPU seconds in the window: " + ", ".join(f"{role} {seconds:.1f}" for role, seconds in cpu.most_common()),
          flush=True)
    rows_day = sum(added.values()) / users
    bytes_day = sum(added[name] * row_bytes[name] for name in after) / users
    return {"users": users, "temporal_actions_per_user_day": round(usage["user"]["actions"] / users, 1),
            "history_events_per_user_day": round(usage["user"]["events"] / users, 1),
            "history_bytes_per_user_day": round(usage["user"]["bytes"] / users),
            "platform_actions_per_day": usage["platform"]["actions"],
            "db_rows_per_user_day": round(rows_day, 1),
            "db_rows_per_user_month": round(rows_day * DAYS_PER_MONTH),
            "db_bytes_per_user_month": round(bytes_day * DAYS_PER_MONTH),
            "db_writes_per_user_day": round(sum(written.values()) / users, 1),
            "awake_periods_per_user_day": usage["activities"]["pause_agent"] / users,
            "cpu_s_per_user_day": {role: round(seconds / users, 2) for role, seconds in cpu.most_common()}}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=USERS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(asyncio.run(main(args.users))), flush=True)
    os._exit(0)
