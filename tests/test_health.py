"""GET /healthz against real PostgreSQL, a real Temporal server and a real worker."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from api.app import create_app
from core.settings import Settings
from workers.main import run_worker


@asynccontextmanager
async def api_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client


async def _wait_for_status(client: httpx.AsyncClient, status: int, timeout: float = 10.0) -> httpx.Response:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        response = await client.get("/healthz")
        if response.status_code == status or asyncio.get_running_loop().time() > deadline:
            return response
        await asyncio.sleep(0.2)


async def test_healthy_with_worker_and_unavailable_without(settings: Settings) -> None:
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, stop))
    async with api_client(settings) as client:
        response = await _wait_for_status(client, 200)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "ok"
        assert {name: c["state"] for name, c in body["components"].items()} == {
            "database": "up",
            "temporal": "up",
            "worker": "up",
        }
        assert body["components"]["worker"]["instances"] == 1
        # The worker's warm agents are reported (none are kept in this test).
        assert body["components"]["worker"]["agent_pool"] == {"state": "ready", "spares_ready": 0,
                                                              "spares_starting": 0, "spares_target": 0}

        stop.set()
        await asyncio.wait_for(worker, 10)
        response = await _wait_for_status(client, 503)
        assert response.status_code == 503
        assert response.json()["components"]["worker"]["state"] == "down"
        assert response.json()["components"]["worker"]["instances"] == 0


async def test_unreachable_temporal_is_reported(settings: Settings) -> None:
    broken = settings.model_copy(update={"temporal_address": "127.0.0.1:1"})
    async with api_client(broken) as client:
        response = await client.get("/healthz")
    assert response.status_code == 503
    components = response.json()["components"]
    assert components["temporal"]["state"] == "down" and components["temporal"]["error"]
    assert components["database"]["state"] == "up"
