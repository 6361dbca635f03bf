"""Voice bridge overhead under N concurrent calls.

The bridge runs as its own process (`deepclaw voice`), as in production. A second process,
bench/voice_load.c (compiled here with the machine's C compiler), plays both of its peers: N
simulated Twilio Media Streams (a 20 ms mu-law frame every 20 ms per call, the calls' clocks
spread over the 20 ms as independent phones are) and a Deepgram-protocol voice agent in echo
mode. It is C so that the load costs a fraction of the bridge it measures: in Python it needed as
much CPU as the bridge, and on a small machine measured its own starvation. Every frame carries
its send time (CLOCK_MONOTONIC, the same in every process), so
  inbound:  Twilio side sent -> agent received   (the bridge's added latency, caller -> agent)
  outbound: agent sent       -> Twilio side got  (the bridge's added latency, agent -> caller)
Both include the kernel's loopback and the load process's own reading, so they overstate the
bridge's share slightly; `p99_load_lag_ms` says how late the load sent what was due. With two or
more cores the bridge and the load are pinned to different ones (BENCH_PIN=0 turns that off), and
as root loopback's receive work goes to the load's core (see receive_work_on_load_core).
Also printed: the bridge's CPU seconds per call-minute and resident memory per call. One JSON
line per level; the last line is the largest N:
{"calls", "p99_added_ms_in", "p99_added_ms_out", "cpu_s_per_call_minute", "rss_mb_per_call"}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx
import orjson
import psutil
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from twilio.request_validator import RequestValidator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.db import create_engine, sessionmaker  # noqa: E402
from core.keyring import new_key_entry  # noqa: E402
from core.process import ChildProcess, free_port  # noqa: E402
from core.streams import issue_ticket  # noqa: E402
from devstack.scratch import scratch_stack  # noqa: E402

SECRET = "bench-secret-of-at-least-thirty-two-characters"
AUTH_TOKEN = "bench-twilio-auth-token-32-characters"
LOAD_SOURCE = Path(__file__).with_name("voice_load.c")
CPUS = sorted(os.sched_getaffinity(0))  # the cores we may use (not always 0 and 1 in a container)
PIN = os.environ.get("BENCH_PIN", "1") == "1" and len(CPUS) >= 2
BRIDGE_CPU, LOAD_CPU = CPUS[0], CPUS[-1]
LOOPBACK_RPS = Path("/sys/class/net/lo/queues/rx-0/rps_cpus")
SETTLE_S = 1.0  # after the last call is up, before the audio: the bridge finishes setting calls up


@contextmanager
def receive_work_on_load_core() -> Iterator[bool]:
    """On loopback the kernel does the receiver's TCP work inside the sender's send(): every frame
    the bridge sends would also cost the bridge the load's receive path. Between two machines (or
    with a multi-queue NIC) that work is not on the bridge's core, so while pinned, and where we
    may, loopback's receive processing is steered (RPS) to the load's core; restored afterwards.
    BENCH_STEER_RX=0 keeps the kernel's default."""
    if not PIN or os.environ.get("BENCH_STEER_RX", "1") != "1" or not os.access(LOOPBACK_RPS, os.W_OK):
        yield False
        return
    before = LOOPBACK_RPS.read_text().strip()
    LOOPBACK_RPS.write_text(f"{1 << LOAD_CPU:x}\n")
    try:
        yield True
    finally:
        LOOPBACK_RPS.write_text(before + "\n")


def build_load(into: Path) -> Path:
    """Compiles the load generator; the machine's C compiler, no downloads."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        sys.exit("bench/voice_bridge.py needs a C compiler (cc or gcc) for its load generator")
    binary = into / "voice_load"
    subprocess.run([compiler, "-O2", "-o", str(binary), str(LOAD_SOURCE)], check=True)
    return binary


async def start_message(sessions: async_sessionmaker[AsyncSession], index: int, user_id: str) -> bytes:
    """Twilio's `start` for stream MZ<index>, with the one-time ticket the API would have issued."""
    sid = f"CA{uuid.uuid4().hex}"
    ticket = await issue_ticket(sessions, call_sid=sid, user_id=uuid.UUID(user_id), params={}, ttl_s=3600)
    return orjson.dumps({"event": "start", "sequenceNumber": "1", "streamSid": f"MZ{index}",
                         "start": {"streamSid": f"MZ{index}", "callSid": sid, "customParameters": {"ticket": ticket}}})


async def run_level(load_binary: Path, calls: int, seconds: float, bridge: psutil.Process, media_port: int,
                    agent_port: int, user_id: str, steered: bool,
                    sessions: async_sessionmaker[AsyncSession]) -> dict[str, float]:
    # As Twilio signs the upgrade: X-Twilio-Signature over the stream URL, no parameters.
    signature = RequestValidator(AUTH_TOKEN).compute_signature(f"ws://127.0.0.1:{media_port}/twilio/media", {})
    starts = [await start_message(sessions, i, user_id) for i in range(calls)]
    load = await asyncio.create_subprocess_exec(
        str(load_binary), "127.0.0.1", str(media_port), "/twilio/media", str(agent_port), str(calls), str(seconds),
        signature, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert load.stdin is not None and load.stdout is not None
    if PIN:
        os.sched_setaffinity(load.pid, {LOAD_CPU})
    rss_before = bridge.memory_info().rss
    try:
        load.stdin.write(b"".join(start + b"\n" for start in starts))
        await load.stdin.drain()
        line = await asyncio.wait_for(load.stdout.readline(), 180)
    except (BrokenPipeError, ConnectionResetError):
        line = b""
    if not line:  # its reason is on stderr, above
        sys.exit(f"the load generator stopped before every call was up (exit {await load.wait()})")
    assert json.loads(line) == {"ready": calls}, line
    await asyncio.sleep(SETTLE_S)
    rss_during = bridge.memory_info().rss
    cpu_before = sum(bridge.cpu_times()[:2])
    load.stdin.write(b"go\n")
    await load.stdin.drain()
    line = await load.stdout.readline()
    cpu = sum(bridge.cpu_times()[:2]) - cpu_before
    if await load.wait() != 0 or not line:
        sys.exit(f"the load generator failed at {calls} calls")
    figures = json.loads(line)
    load_cpu = figures.pop("load_cpu_s")
    figures["cpu_s_per_call_minute"] = round(cpu / (calls * seconds / 60), 4)
    figures["rss_mb_per_call"] = round(max(0, rss_during - rss_before) / calls / 2**20, 3)
    # The machine is shared: how busy the bridge's core was, and the load process's.
    figures["bridge_cpu_share"] = round(cpu / seconds, 2)
    figures["load_cpu_share"] = round(load_cpu / seconds, 2)
    figures["pinned"], figures["rx_on_load_core"] = PIN, steered
    print(json.dumps(figures), flush=True)
    await asyncio.sleep(1.0)  # the bridge closes the calls
    return figures


async def main(levels: list[int], seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="deepclaw-bench-") as tmp:
        load_binary = build_load(Path(tmp))
        async with scratch_stack(Path(tmp), "bench") as stack:
            conn = await asyncpg.connect(host="127.0.0.1", port=stack.postgres.port, user="postgres",
                                         password=stack.postgres.password, database="bench")
            user_id = str(uuid.uuid4())
            await conn.execute("INSERT INTO users (id, phone_e164, phone_verified, email_verified, agent_name, voice,"
                               " personality, created_at, updated_at) VALUES ($1, '+15550190000', true, false, 'Bench',"
                               " 'aura-2-thalia-en', 'casual', now(), now())", uuid.UUID(user_id))
            await conn.close()
            voice_port, media_port, agent_port = free_port(), free_port(), free_port()
            env = {**os.environ, "DEEPCLAW_DATABASE_URL": stack.database_url,
                   "DEEPCLAW_TEMPORAL_ADDRESS": stack.temporal.address, "DEEPCLAW_VOICE_PORT": str(voice_port),
                   "DEEPCLAW_VOICE_MEDIA_PORT": str(media_port), "DEEPCLAW_PLATFORM_SECRET": SECRET,
                   "DEEPCLAW_TWILIO_AUTH_TOKEN": AUTH_TOKEN, "DEEPCLAW_ENCRYPTION_KEYS": new_key_entry("bench"),
                   # A real adapter (the voice agent) is on: the bridge wants its public URLs, as in production.
                   "DEEPCLAW_PUBLIC_BASE_URL": "http://127.0.0.1:8000",
                   "DEEPCLAW_VOICE_PUBLIC_BASE_URL": f"http://127.0.0.1:{voice_port}",
                   "DEEPCLAW_MEDIA_PUBLIC_URL": f"ws://127.0.0.1:{media_port}/twilio/media",
                   "DEEPCLAW_VOICE_AGENT": "deepgram", "DEEPCLAW_LOG_LEVEL": "WARNING",
                   "DEEPCLAW_DEEPGRAM_URL": f"ws://127.0.0.1:{agent_port}/v1/agent/converse"}
            engine = create_engine(stack.database_url)
            process = ChildProcess("the voice bridge", [sys.executable, "-m", "core.cli", "voice"], env=env)
            await process.start()
            assert process.pid is not None
            if PIN:
                os.sched_setaffinity(process.pid, {BRIDGE_CPU})
            try:
                # The Media Streams port answers last (after the HTTP side): it is the one the load needs.
                async with httpx.AsyncClient() as http:
                    async def media_up() -> bool:
                        return (await http.get(f"http://127.0.0.1:{media_port}/healthz")).status_code == 200
                    await process.wait_until(media_up, what="the voice bridge", timeout=30)
                bridge = psutil.Process(process.pid)
                with receive_work_on_load_core() as steered:
                    results = [await run_level(load_binary, n, seconds, bridge, media_port, agent_port, user_id,
                                               steered, sessionmaker(engine)) for n in levels]
            finally:
                await process.stop()
                await engine.dispose()
    largest = results[-1]
    return {k: largest[k] for k in ("calls", "p99_added_ms_in", "p99_added_ms_out", "cpu_s_per_call_minute",
                                    "rss_mb_per_call")}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", default="50,200,500", help="comma-separated concurrency levels")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per call at each level")
    args = parser.parse_args()
    summary = asyncio.run(main([int(n) for n in args.calls.split(",")], args.seconds))
    print(json.dumps(summary), flush=True)
    os._exit(0)
