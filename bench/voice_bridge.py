"""Voice bridge overhead under N concurrent calls.

The bridge runs as its own process (`deepclaw voice`), as in production. This script plays both
ends: simulated Twilio Media Streams (a 20 ms mu-law frame every 20 ms per call) and a Deepgram-
protocol voice agent in echo mode. Each frame carries a sequence number, so one clock measures
  inbound:  Twilio side sent -> agent received   (the bridge's added latency, caller -> agent)
  outbound: agent sent       -> Twilio side got  (the bridge's added latency, agent -> caller)
plus the bridge's CPU seconds per call-minute and resident memory per call.
The last line is one JSON object for the largest N:
{"calls", "p99_added_ms_in", "p99_added_ms_out", "cpu_s_per_call_minute", "rss_mb_per_call"}.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import struct
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import psutil
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import tokens  # noqa: E402
from core.process import free_port  # noqa: E402
from devstack.scratch import scratch_stack  # noqa: E402

SECRET = "bench-secret"
FRAME = 160




def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else 0.0


class Clock:
    """Send times by (call, seq), shared by both ends of the measurement."""

    def __init__(self) -> None:
        self.sent_in: dict[tuple[int, int], float] = {}
        self.sent_out: dict[tuple[int, int], float] = {}
        self.inbound: list[float] = []
        self.outbound: list[float] = []


def frame_for(call: int, seq: int) -> bytes:
    return struct.pack(">II", call, seq) + b"\x7f" * (FRAME - 8)


async def echo_agent(clock: Clock, port: int) -> websockets.Server:
    async def session(ws: websockets.ServerConnection) -> None:
        await ws.send(json.dumps({"type": "Welcome", "request_id": str(uuid.uuid4())}))
        async for message in ws:
            if isinstance(message, str):
                if json.loads(message).get("type") == "Settings":
                    await ws.send(json.dumps({"type": "SettingsApplied"}))
                continue
            now = time.perf_counter()
            call, seq = struct.unpack(">II", message[:8])
            if (sent := clock.sent_in.pop((call, seq), None)) is not None:
                clock.inbound.append(now - sent)
            clock.sent_out[(call, seq)] = time.perf_counter()
            await ws.send(message)  # echo at once

    return await websockets.serve(session, "127.0.0.1", port, max_size=2**20)


async def caller(index: int, bridge_url: str, token: str, call_sid: str, seconds: float, clock: Clock) -> None:
    async with websockets.connect(bridge_url, max_size=2**20) as ws:
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": f"MZ{index}", "start": {
            "streamSid": f"MZ{index}", "callSid": call_sid, "customParameters": {"token": token},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))

        async def receive() -> None:
            async for raw in ws:
                message = json.loads(raw)
                if message.get("event") != "media":
                    continue
                now = time.perf_counter()
                payload = base64.b64decode(message["media"]["payload"])
                key = struct.unpack(">II", payload[:8])
                if (sent := clock.sent_out.pop(key, None)) is not None:
                    clock.outbound.append(now - sent)

        reader = asyncio.create_task(receive())
        await asyncio.sleep(0.5)  # the bridge connects to the agent and sends Settings
        start = time.perf_counter()
        for seq in range(int(seconds / 0.02)):
            payload = base64.b64encode(frame_for(index, seq)).decode()
            clock.sent_in[(index, seq)] = time.perf_counter()
            await ws.send(json.dumps({"event": "media", "streamSid": f"MZ{index}",
                                      "media": {"track": "inbound", "payload": payload}}))
            await asyncio.sleep(max(0.0, start + (seq + 1) * 0.02 - time.perf_counter()))
        await ws.send(json.dumps({"event": "stop", "streamSid": f"MZ{index}"}))
        await asyncio.sleep(0.3)
        reader.cancel()


async def run_level(calls: int, seconds: float, bridge: psutil.Process, bridge_url: str, user_id: str) -> dict[str, float]:
    clock = Clock()
    agent_port = int(os.environ["BENCH_AGENT_PORT"])
    server = await echo_agent(clock, agent_port)
    rss_before = bridge.memory_info().rss
    cpu_before = sum(bridge.cpu_times()[:2])
    sids = [f"CA{uuid.uuid4().hex}" for _ in range(calls)]
    call_tokens = [tokens.sign({"kind": "stream", "call": sid, "user": user_id}, SECRET, ttl_s=600) for sid in sids]
    peak_rss = rss_before

    async def sample_rss() -> None:
        nonlocal peak_rss
        while True:
            peak_rss = max(peak_rss, bridge.memory_info().rss)
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample_rss())
    await asyncio.gather(*(caller(i, bridge_url, call_tokens[i], sids[i], seconds, clock) for i in range(calls)))
    sampler.cancel()
    cpu = sum(bridge.cpu_times()[:2]) - cpu_before
    server.close()
    await server.wait_closed()
    figures = {
        "calls": calls,
        "frames": len(clock.inbound),
        "p50_added_ms_in": round(percentile(clock.inbound, 0.50) * 1000, 3),
        "p99_added_ms_in": round(percentile(clock.inbound, 0.99) * 1000, 3),
        "p50_added_ms_out": round(percentile(clock.outbound, 0.50) * 1000, 3),
        "p99_added_ms_out": round(percentile(clock.outbound, 0.99) * 1000, 3),
        "cpu_s_per_call_minute": round(cpu / (calls * seconds / 60), 3),
        "rss_mb_per_call": round(max(0, peak_rss - rss_before) / calls / 2**20, 3),
    }
    print(json.dumps(figures), flush=True)
    return figures


async def main(levels: list[int], seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="deepclaw-bench-") as tmp:
        async with scratch_stack(Path(tmp), "bench") as stack:
            conn = await asyncpg.connect(host="127.0.0.1", port=stack.postgres.port, user="postgres", database="bench")
            user_id = str(uuid.uuid4())
            await conn.execute("INSERT INTO users (id, phone_e164, phone_verified, email_verified, agent_name, voice,"
                               " personality, created_at, updated_at) VALUES ($1, '+15550190000', true, false, 'Bench',"
                               " 'aura-2-thalia-en', 'casual', now(), now())", uuid.UUID(user_id))
            await conn.close()
            voice_port, agent_port = free_port(), free_port()
            os.environ["BENCH_AGENT_PORT"] = str(agent_port)
            env = {**os.environ, "DEEPCLAW_DATABASE_URL": stack.database_url,
                   "DEEPCLAW_TEMPORAL_ADDRESS": stack.temporal.address, "DEEPCLAW_VOICE_PORT": str(voice_port),
                   "DEEPCLAW_PLATFORM_SECRET": SECRET, "DEEPCLAW_VOICE_AGENT": "deepgram",
                   "DEEPCLAW_LOG_LEVEL": "WARNING",
                   "DEEPCLAW_DEEPGRAM_URL": f"ws://127.0.0.1:{agent_port}/v1/agent/converse"}
            process = await asyncio.create_subprocess_exec(sys.executable, "-m", "core.cli", "voice", env=env)
            try:
                async with httpx.AsyncClient() as http:
                    for _ in range(100):
                        try:
                            if (await http.get(f"http://127.0.0.1:{voice_port}/healthz")).status_code == 200:
                                break
                        except httpx.HTTPError:
                            await asyncio.sleep(0.1)
                bridge = psutil.Process(process.pid)
                results = [await run_level(n, seconds, bridge, f"ws://127.0.0.1:{voice_port}/twilio/media", user_id)
                           for n in levels]
            finally:
                process.terminate()
                await process.wait()
    largest = results[-1]
    return {k: largest[k] for k in ("calls", "p99_added_ms_in", "p99_added_ms_out", "cpu_s_per_call_minute",
                                    "rss_mb_per_call")}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", default="10,50,100", help="comma-separated concurrency levels")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per call at each level")
    args = parser.parse_args()
    summary = asyncio.run(main([int(n) for n in args.calls.split(",")], args.seconds))
    print(json.dumps(summary), flush=True)
    os._exit(0)
