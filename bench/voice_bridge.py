"""Voice bridge overhead under N concurrent calls.

The bridge runs as its own process (`deepclaw voice`), as in production. A second process plays
both of its peers: N simulated Twilio Media Streams (a 20 ms mu-law frame every 20 ms per call,
the calls' clocks spread over the 20 ms as independent phones are) and a Deepgram-protocol voice
agent in echo mode. Every frame carries its send time (CLOCK_MONOTONIC, the same in every
process), so
  inbound:  Twilio side sent -> agent received   (the bridge's added latency, caller -> agent)
  outbound: agent sent       -> Twilio side got  (the bridge's added latency, agent -> caller)
Both include the kernel's loopback and the load process's own reading, so they overstate the
bridge's share slightly. Also printed: the bridge's CPU seconds per call-minute and resident
memory per call. One JSON line per level; the last line is the largest N:
{"calls", "p99_added_ms_in", "p99_added_ms_out", "cpu_s_per_call_minute", "rss_mb_per_call"}.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import orjson
import psutil
import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect, ws_create_server

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import tokens  # noqa: E402
from core.process import free_port  # noqa: E402
from devstack.scratch import scratch_stack  # noqa: E402

SECRET = "bench-secret"
FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law
FRAME_S = 0.02
STAMP = struct.Struct(">IIq")  # call, sequence, send time in ns
CONNECT_BATCH = 25
PIN = os.environ.get("BENCH_PIN") == "1"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else 0.0


# ---- the load process: N Twilio streams and the echo agent ---------------------------------


class Measure:
    def __init__(self) -> None:
        self.recording = False
        self.inbound: list[int] = []
        self.outbound: list[int] = []
        self.agent_sessions = 0


class EchoAgent(WSListener):
    """Deepgram's side in echo mode: each audio frame goes straight back, re-stamped."""

    def __init__(self, measure: Measure) -> None:
        self.measure = measure

    def on_ws_connected(self, transport: WSTransport) -> None:
        transport.send(WSMsgType.TEXT, b'{"type":"Welcome","request_id":"bench"}')

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.BINARY:
            now = time.monotonic_ns()
            audio = bytearray(frame.get_payload_as_bytes())
            call, seq, sent = STAMP.unpack_from(audio)
            if self.measure.recording:
                self.measure.inbound.append(now - sent)
            STAMP.pack_into(audio, 0, call, seq, time.monotonic_ns())
            transport.send(WSMsgType.BINARY, audio)
        elif frame.msg_type == WSMsgType.TEXT and b'"Settings"' in frame.get_payload_as_bytes():
            self.measure.agent_sessions += 1
            transport.send(WSMsgType.TEXT, b'{"type":"SettingsApplied"}')
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()


class TwilioStream(WSListener):
    """One phone call's Media Stream as Twilio sends it."""

    def __init__(self, measure: Measure) -> None:
        self.measure = measure
        self.transport: WSTransport | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type != WSMsgType.TEXT:
            return
        now = time.monotonic_ns()
        message = orjson.loads(frame.get_payload_as_bytes())
        if message.get("event") == "media" and self.measure.recording:
            _, _, sent = STAMP.unpack_from(base64.b64decode(message["media"]["payload"]))
            self.measure.outbound.append(now - sent)


async def run_load(bridge_url: str, agent_port: int, calls: int, seconds: float, user_id: str) -> None:
    """The load process: prints one JSON line of latencies, after `ready` and `go` on stdin/stdout."""
    measure = Measure()
    server = await ws_create_server(lambda request: EchoAgent(measure), "127.0.0.1", agent_port)
    streams: list[tuple[TwilioStream, str]] = []
    for batch in range(0, calls, CONNECT_BATCH):
        async def open_call(index: int) -> None:
            sid = f"CA{uuid.uuid4().hex}"
            token = tokens.sign({"kind": "stream", "call": sid, "user": user_id}, SECRET, ttl_s=3600)
            transport, stream = await ws_connect(lambda: TwilioStream(measure), bridge_url)
            transport.send(WSMsgType.TEXT, b'{"event":"connected","protocol":"Call","version":"1.0.0"}')
            transport.send(WSMsgType.TEXT, orjson.dumps({"event": "start", "sequenceNumber": "1", "streamSid": f"MZ{index}",
                                                         "start": {"streamSid": f"MZ{index}", "callSid": sid,
                                                                   "customParameters": {"token": token}}}))
            streams.append((stream, f"MZ{index}"))  # type: ignore[arg-type]
        await asyncio.gather(*(open_call(i) for i in range(batch, min(calls, batch + CONNECT_BATCH))))
    while measure.agent_sessions < calls:  # every call has reached the agent
        await asyncio.sleep(0.05)
    print(json.dumps({"ready": calls}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # "go"

    # Each call has its own phase within the 20 ms, like independent phones; one ticker sends what is due.
    prefixes = [b'{"event":"media","streamSid":"' + sid.encode() + b'","media":{"track":"inbound","payload":"'
                for _, sid in streams]
    start = time.monotonic() + 0.05
    total = int(seconds / FRAME_S)
    audio = bytearray(b"\x7f" * FRAME_BYTES)
    measure.recording = True
    seq = index = 0  # the next frame due: call `index`, round `seq`
    while seq < total:
        now = time.monotonic()
        while seq < total and start + FRAME_S * (seq + index / calls) <= now:
            STAMP.pack_into(audio, 0, index, seq, time.monotonic_ns())
            transport = streams[index][0].transport
            assert transport is not None
            transport.send(WSMsgType.TEXT, prefixes[index] + base64.b64encode(audio) + b'"}}')
            index += 1
            if index == calls:
                index, seq = 0, seq + 1
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.2)  # the last echoes
    measure.recording = False
    for stream, sid in streams:
        assert stream.transport is not None
        stream.transport.send(WSMsgType.TEXT, orjson.dumps({"event": "stop", "streamSid": sid}))
        stream.transport.disconnect()
    server.close()
    print(json.dumps({"calls": calls, "frames": len(measure.inbound),
                      "p50_added_ms_in": round(percentile(measure.inbound, 0.50) / 1e6, 3),
                      "p99_added_ms_in": round(percentile(measure.inbound, 0.99) / 1e6, 3),
                      "p50_added_ms_out": round(percentile(measure.outbound, 0.50) / 1e6, 3),
                      "p99_added_ms_out": round(percentile(measure.outbound, 0.99) / 1e6, 3)}), flush=True)


# ---- the conductor: a scratch database and Temporal, the bridge, one load process per level --


async def run_level(calls: int, seconds: float, bridge: psutil.Process, bridge_url: str, agent_port: int,
                    user_id: str) -> dict[str, float]:
    load = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--load", "--calls", str(calls), "--seconds", str(seconds), "--bridge-url",
        bridge_url, "--agent-port", str(agent_port), "--user", user_id,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert load.stdin is not None and load.stdout is not None
    if PIN:
        os.sched_setaffinity(load.pid, {1})
    rss_before = bridge.memory_info().rss
    ready = json.loads(await asyncio.wait_for(load.stdout.readline(), 120))
    assert ready == {"ready": calls}, ready
    rss_during = bridge.memory_info().rss
    load_process = psutil.Process(load.pid)
    cpu_before, load_cpu_before = sum(bridge.cpu_times()[:2]), sum(load_process.cpu_times()[:2])
    load.stdin.write(b"go\n")
    await load.stdin.drain()
    line = await load.stdout.readline()
    cpu = sum(bridge.cpu_times()[:2]) - cpu_before
    load_cpu = sum(load_process.cpu_times()[:2]) - load_cpu_before
    await load.wait()
    figures = json.loads(line)
    figures["cpu_s_per_call_minute"] = round(cpu / (calls * seconds / 60), 4)
    figures["rss_mb_per_call"] = round(max(0, rss_during - rss_before) / calls / 2**20, 3)
    # The machine is shared: how busy the bridge's core was, and the load process's.
    figures["bridge_cpu_share"] = round(cpu / seconds, 2)
    figures["load_cpu_share"] = round(load_cpu / seconds, 2)
    print(json.dumps(figures), flush=True)
    await asyncio.sleep(1.0)  # the bridge closes the calls
    return figures


async def main(levels: list[int], seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="deepclaw-bench-") as tmp:
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
                   "DEEPCLAW_VOICE_AGENT": "deepgram", "DEEPCLAW_LOG_LEVEL": "WARNING",
                   "DEEPCLAW_DEEPGRAM_URL": f"ws://127.0.0.1:{agent_port}/v1/agent/converse"}
            process = await asyncio.create_subprocess_exec(sys.executable, "-m", "core.cli", "voice", env=env)
            if PIN:
                os.sched_setaffinity(process.pid, {0})
            try:
                async with httpx.AsyncClient() as http:
                    for _ in range(100):
                        try:
                            if (await http.get(f"http://127.0.0.1:{voice_port}/healthz")).status_code == 200:
                                break
                        except httpx.HTTPError:
                            await asyncio.sleep(0.1)
                bridge = psutil.Process(process.pid)
                bridge_url = f"ws://127.0.0.1:{media_port}/twilio/media"
                results = [await run_level(n, seconds, bridge, bridge_url, agent_port, user_id) for n in levels]
            finally:
                process.terminate()
                await process.wait()
    largest = results[-1]
    return {k: largest[k] for k in ("calls", "p99_added_ms_in", "p99_added_ms_out", "cpu_s_per_call_minute",
                                    "rss_mb_per_call")}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", default="50,200,500", help="comma-separated concurrency levels")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per call at each level")
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)  # the load process
    parser.add_argument("--bridge-url", help=argparse.SUPPRESS)
    parser.add_argument("--agent-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--user", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        uvloop.run(run_load(args.bridge_url, args.agent_port, int(args.calls), args.seconds, args.user))
        sys.exit(0)
    summary = asyncio.run(main([int(n) for n in args.calls.split(",")], args.seconds))
    print(json.dumps(summary), flush=True)
    os._exit(0)
