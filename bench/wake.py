"""Wake latency of a user's agent with the local runtime and real OpenClaw.

Starts its own embedded PostgreSQL, Temporal dev server, model stand-in and worker (local
runtime, one warm spare), provisions one user, then measures, N times each:
  - Idle -> first answered chat: `ensure_awake` (SIGCONT) + one chat turn
  - Sleeping -> first answered chat: `ensure_awake` (claim a warm spare, hot-reload the user's
    agent into it) + one chat turn
and the resident memory of a running agent's gateway process tree.
The last line is one JSON object: {"wake_from_sleeping_s", "wake_from_idle_s", "rss_mb_per_agent"}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from temporalio.worker import Worker  # noqa: E402

from activities.runtime.local import LocalAgentRuntime
from activities.runtime.openclaw_config import agent_id  # noqa: E402
from core.db import create_engine, sessionmaker  # noqa: E402
from core.models import User  # noqa: E402
from core.ports import AgentEndpoint, AgentSpec  # noqa: E402
from core.process import free_port  # noqa: E402
from core.serve import serving  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.temporal import connect  # noqa: E402
from core.tokens import Keyring  # noqa: E402
from devstack.scratch import scratch_stack  # noqa: E402
from emulators import llm  # noqa: E402
from workers import registry  # noqa: E402
from workflows.agent_lifecycle import (  # noqa: E402
    AgentLifecycleInput,
    AgentLifecycleWorkflow,
    LifecycleState,
    Thresholds,
    workflow_id,
)


SECRET = "bench-platform-secret-of-thirty-two-chars"  # gateway tokens derive from it


async def chat(endpoint: AgentEndpoint, user_id: uuid.UUID, text: str) -> str:
    async with httpx.AsyncClient(timeout=120) as http:
        response = await http.post(
            f"{endpoint.base_url}/v1/chat/completions",
            headers={**endpoint.authorization(Keyring.of(SECRET)), "x-openclaw-session-key": "bench"},
            json={"model": f"openclaw/{agent_id(user_id)}", "messages": [{"role": "user", "content": text}]})
    response.raise_for_status()
    return response.json()["choices"][0]["message"]["content"]


async def wait_state(handle, state: LifecycleState, timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while await handle.query(AgentLifecycleWorkflow.current_state) != state:
        if time.monotonic() > deadline:
            raise TimeoutError(f"agent never reached {state}")
        await asyncio.sleep(0.1)


def running_rss_mb(runtime: LocalAgentRuntime, user_id: uuid.UUID) -> float:
    """Resident memory of the user's gateway and its children, right after it answered."""
    running = runtime._running.get(user_id)  # noqa: SLF001
    if running is None or running.gateway.child is None or running.gateway.child.pid is None:
        return 0.0
    root = psutil.Process(running.gateway.child.pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20


async def main(rounds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="deepclaw-bench-") as tmp:
        async with scratch_stack(Path(tmp), "bench") as stack:
            llm_port = free_port()
            settings = Settings(_env_file=None, data_dir=Path(tmp) / "data", database_url=stack.database_url,
                                platform_secret=SECRET,
                                temporal_address=stack.temporal.address, llm_port=llm_port, local_agent_spares=1,
                                temporal_task_queue="bench")
            engine = create_engine(settings.database_url)
            sessions = sessionmaker(engine)
            try:
                async with serving(llm.create_app(), "127.0.0.1", llm_port), \
                           registry.activities(settings, sessions) as parts:
                    runtime = parts.runtime
                    assert isinstance(runtime, LocalAgentRuntime)
                    client = await connect(settings)
                    async with Worker(client, task_queue="bench", workflows=list(registry.WORKFLOWS),
                                      activities=parts.activities):
                        return await measure(client, sessions, runtime, rounds)
            finally:
                await engine.dispose()


async def measure(client, sessions, runtime: LocalAgentRuntime, rounds: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    user = User(phone_e164="+15550142000")
    async with sessions() as session, session.begin():
        session.add(user)
    # Short thresholds so each state comes round in seconds (the defaults are 10 min / 2 h).
    thresholds = Thresholds(idle_after=timedelta(seconds=6), sleep_after=timedelta(seconds=12),
                            archive_after=timedelta(days=30))
    handle = await client.start_workflow(
        AgentLifecycleWorkflow.run,
        AgentLifecycleInput(spec=AgentSpec(user_id=user.id), user_phone=user.phone_e164, thresholds=thresholds),
        id=workflow_id(user.id), task_queue="bench")
    print("provisioning (first spare starts cold)...", flush=True)
    endpoint = await handle.execute_update(AgentLifecycleWorkflow.ensure_awake)
    await chat(endpoint, user.id, "hello")
    rss = running_rss_mb(runtime, user.id)

    idle, sleeping = [], []
    for i in range(rounds):
        await wait_state(handle, LifecycleState.IDLE)
        started = time.monotonic()
        endpoint = await handle.execute_update(AgentLifecycleWorkflow.ensure_awake)
        await chat(endpoint, user.id, f"idle round {i}")
        idle.append(time.monotonic() - started)
        print(f"wake from Idle #{i + 1}: {idle[-1]:.2f} s", flush=True)

        await wait_state(handle, LifecycleState.SLEEPING)
        while runtime._spares.empty():  # noqa: SLF001  (measure the designed path: a spare is ready)
            await asyncio.sleep(0.5)
        started = time.monotonic()
        endpoint = await handle.execute_update(AgentLifecycleWorkflow.ensure_awake)
        answer = await chat(endpoint, user.id, f"sleeping round {i}")
        sleeping.append(time.monotonic() - started)
        print(f"wake from Sleeping #{i + 1}: {sleeping[-1]:.2f} s ({answer[:40]!r})", flush=True)
        rss = max(rss, running_rss_mb(runtime, user.id))
    await handle.terminate()
    return {"wake_from_sleeping_s": round(statistics.median(sleeping), 2),
            "wake_from_idle_s": round(statistics.median(idle), 3),
            "rss_mb_per_agent": round(rss, 1)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("activities.runtime.wake").setLevel(logging.INFO)  # each wake's breakdown
    figures = asyncio.run(main(parser.parse_args().rounds))
    print(json.dumps(figures), flush=True)
    os._exit(0)  # temporalio may abort at interpreter exit in short scripts
