"""`python -m devstack run` (what `make run` runs) end to end: healthy, search attributes registered,
SIGTERM stops everything within 10 s, and a second start finds its data again."""

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
import httpx
import psutil
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client

from tests.conftest import free_port

SEARCH_ATTRIBUTES = {"UserId", "UserPhone", "AgentNumber", "LifecycleState"}


def _env(data_dir: Path) -> dict[str, str]:
    ports = {name: free_port() for name in ("api", "voice", "media", "temporal", "ui", "pg", "carrier", "agent",
                                                 "llm")}
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("DEEPCLAW_")},
        "DEEPCLAW_DATA_DIR": str(data_dir),
        "DEEPCLAW_API_PORT": str(ports["api"]),
        "DEEPCLAW_VOICE_PORT": str(ports["voice"]),
        "DEEPCLAW_VOICE_MEDIA_PORT": str(ports["media"]),
        "DEEPCLAW_TEMPORAL_ADDRESS": f"127.0.0.1:{ports['temporal']}",
        "DEEPCLAW_TEMPORAL_UI_PORT": str(ports["ui"]),
        "DEEPCLAW_DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:{ports['pg']}/deepclaw",
        "DEEPCLAW_WORKER_HEARTBEAT_INTERVAL_S": "1",
        "DEEPCLAW_LOCAL_AGENT_SPARES": "0",
        "DEEPCLAW_CARRIER_PORT": str(ports["carrier"]),
        "DEEPCLAW_VOICE_AGENT_PORT": str(ports["agent"]),
        "DEEPCLAW_LLM_PORT": str(ports["llm"]),
    }


@asynccontextmanager
async def dev_stack(env: dict[str, str], log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "devstack", "run", env=env, stdout=out, stderr=asyncio.subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _wait_healthy(env: dict[str, str], proc: asyncio.subprocess.Process, log: Path) -> dict:
    url = f"http://127.0.0.1:{env['DEEPCLAW_API_PORT']}/healthz"
    deadline = time.monotonic() + 120
    async with httpx.AsyncClient(timeout=3) as http:
        while time.monotonic() < deadline:
            assert proc.returncode is None, f"python -m devstack run exited early:\n{log.read_text()[-3000:]}"
            try:
                response = await http.get(url)
                if response.status_code == 200:
                    return response.json()
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
    raise AssertionError(f"never healthy:\n{log.read_text()[-3000:]}")


async def _stop_and_check_nothing_left(proc: asyncio.subprocess.Process) -> float:
    tree = [proc.pid, *(p.pid for p in psutil.Process(proc.pid).children(recursive=True))]
    assert len(tree) >= 7, "expected postgres, temporal, stand-ins, worker, api and voice under the supervisor"
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(proc.wait(), 15)
    elapsed = time.monotonic() - started
    survivors = [pid for pid in tree if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert survivors == [], f"left running after SIGTERM: {survivors}"
    assert code == 0
    return elapsed


async def test_dev_stack_runs_stops_cleanly_and_keeps_its_data(tmp_path: Path) -> None:
    env = _env(tmp_path / "data")
    log = tmp_path / "dev.log"
    pg = dict(host="127.0.0.1", port=int(env["DEEPCLAW_DATABASE_URL"].rsplit(":", 1)[1].split("/")[0]), user="postgres",
              database="deepclaw", password=lambda: (tmp_path / "data" / "postgres.password").read_text().strip())

    # One warm agent, as `make run` keeps: the URLs are printed once it is ready to be claimed.
    async with dev_stack({**env, "DEEPCLAW_LOCAL_AGENT_SPARES": "1"}, log) as proc:
        health = await _wait_healthy(env, proc, log)
        assert {n: c["state"] for n, c in health["components"].items()} == {
            "database": "up", "temporal": "up", "worker": "up"
        }
        assert set(health["components"]["worker"]["agent_pool"]) == {"state", "spares_ready", "spares_starting",
                                                                     "spares_target"}
        for _ in range(600):  # the supervisor prints its URLs once a spare agent is ready
            if "DeepClaw is ready" in log.read_text():
                break
            await asyncio.sleep(0.2)
        banner = log.read_text()
        async with httpx.AsyncClient(timeout=5) as http:
            pool = (await http.get(f"http://127.0.0.1:{env['DEEPCLAW_API_PORT']}/healthz")).json()[
                "components"]["worker"]["agent_pool"]
        assert pool["state"] == "ready" and pool["spares_ready"] == 1, pool
        assert f"http://127.0.0.1:{env['DEEPCLAW_TEMPORAL_UI_PORT']}" in banner
        softphone = f"http://127.0.0.1:{env['DEEPCLAW_CARRIER_PORT']}/phone"
        assert softphone in banner and "+15550000100" in banner, "softphone URL and hotline number are printed"
        assert "Try first" in banner and "the local demo model" in banner, "what to try, and which model answers"
        assert f"Your dashboard      http://127.0.0.1:{env['DEEPCLAW_API_PORT']}/" in banner

        async with httpx.AsyncClient(timeout=5) as http:
            ui = await http.get(f"http://127.0.0.1:{env['DEEPCLAW_TEMPORAL_UI_PORT']}/")
            voice = await http.get(f"http://127.0.0.1:{env['DEEPCLAW_VOICE_PORT']}/healthz")
            phone_page = await http.get(softphone)
            carrier = (await http.get(f"http://127.0.0.1:{env['DEEPCLAW_CARRIER_PORT']}/control/state")).json()
            media = await http.get(f"http://127.0.0.1:{env['DEEPCLAW_VOICE_MEDIA_PORT']}/healthz")
        assert ui.status_code == 200 and voice.status_code == 200 and media.status_code == 200
        assert phone_page.status_code == 200 and "DeepClaw softphone" in phone_page.text
        async with httpx.AsyncClient(timeout=5) as http:
            info = (await http.get(f"{softphone}/info")).json()
        assert info["hotline"] == "+15550000100" and "demo model" in info["model"]
        assert carrier["numbers"][0]["phone_number"] == "+15550000100", "the hotline exists from the start"
        assert carrier["numbers"][0]["voice_url"] == f"http://127.0.0.1:{env['DEEPCLAW_API_PORT']}/twilio/voice", \
            "the worker pointed the hotline at the API"

        client = await Client.connect(env["DEEPCLAW_TEMPORAL_ADDRESS"])
        listed = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace="default"))
        assert SEARCH_ATTRIBUTES <= set(listed.custom_attributes)

        with pytest.raises(asyncpg.InvalidPasswordError):  # local agents run on this host: no trust auth
            await asyncpg.connect(**{**pg, "password": "guess"})
        assert (tmp_path / "data" / "temporal.db").stat().st_mode & 0o077 == 0, "workflow history is the platform's alone"
        conn = await asyncpg.connect(**pg)
        for _ in range(100):  # the worker started the number pool, which buys from the carrier
            if await conn.fetchval("SELECT count(*) FROM phone_numbers WHERE state = 'available'") == 5:
                break
            await asyncio.sleep(0.2)
        assert await conn.fetchval("SELECT count(*) FROM phone_numbers WHERE state = 'available'") == 5
        await conn.execute("INSERT INTO users (id, phone_e164, phone_verified, email_verified, agent_name, voice,"
                           " personality, created_at, updated_at) VALUES (gen_random_uuid(), '+15550001111', true,"
                           " false, 'Claw', 'aura-2-thalia-en', 'casual', now(), now())")
        await conn.close()

        assert await _stop_and_check_nothing_left(proc) < 10

    async with dev_stack(env, log) as proc:
        await _wait_healthy(env, proc, log)
        conn = await asyncpg.connect(**pg)
        assert await conn.fetchval("SELECT count(*) FROM users WHERE phone_e164 = '+15550001111'") == 1
        await conn.close()
        assert await _stop_and_check_nothing_left(proc) < 10
