"""`python -m devstack run`: start the local platform, keep it running, stop all of it on SIGINT/SIGTERM.

Order: PostgreSQL -> migrations -> Temporal -> worker, API, voice bridge. A child that dies is
restarted with backoff; a stop reaches every process group, so nothing is left behind.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
import time

import httpx
from sqlalchemy.engine import make_url

from core.db import database_name
from core.process import ChildProcess
from core.settings import Settings
from devstack.postgres import EmbeddedPostgres
from devstack.temporal import TemporalDevServer

log = logging.getLogger(__name__)

SERVICES = ("worker", "api", "voice")
STOP_TIMEOUT_S = 4.0  # per group; the whole stop stays well under 10 s
MAX_BACKOFF_S = 10.0
WARMING_NOTE_EVERY_S = 15.0  # how often `make run` says it is still warming the first agent


def _stop_with_parent() -> None:
    """If whoever started us (make, a shell) dies, stop cleanly rather than linger."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except OSError:
        pass


def _command(name: str) -> list[str]:
    return [sys.executable, "-m", "core.cli", name]


class Supervisor:
    def __init__(self, settings: Settings, *, commands: dict[str, list[str]] | None = None) -> None:
        self.settings = settings
        self.commands = commands or {}  # a service run by another command (the load bench's worker)
        self.data_dir = settings.data_dir.resolve()
        self.logs_dir = self.data_dir / "logs"
        self.env = {**os.environ, "DEEPCLAW_DATA_DIR": str(self.data_dir), "PYTHONUNBUFFERED": "1"}
        self.postgres: EmbeddedPostgres | None = None
        self.temporal: TemporalDevServer | None = None
        self.services: dict[str, ChildProcess] = {}
        self.stopping = asyncio.Event()
        self._watchers: list[asyncio.Task[None]] = []

    async def start_infrastructure(self) -> None:
        log.info("starting the embedded PostgreSQL and Temporal dev server, then the platform's services")
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        settings = self.settings
        if settings.local_postgres:
            url = make_url(settings.database_url)
            if url.host not in ("127.0.0.1", "localhost"):
                raise SystemExit(f"local_postgres is on but database_url points at {url.host}; turn it off")
            self.postgres = EmbeddedPostgres(
                self.data_dir / "postgres", url.port or 5432, log_path=self.logs_dir / "postgres.log"
            )
            await self.postgres.start()
            await self.postgres.ensure_database(database_name(settings.database_url))
            # The cluster requires its password: the processes we start get a URL that carries it.
            self.env["DEEPCLAW_DATABASE_URL"] = self.postgres.url(database_name(settings.database_url))
            log.info("PostgreSQL ready on 127.0.0.1:%s", self.postgres.port)
        migrate = ChildProcess("migrate", _command("migrate"), env=self.env)
        await migrate.start()
        if await migrate.wait() != 0:
            raise RuntimeError("database migration failed (see the log above)")
        if settings.local_temporal:
            host = settings.temporal_address.rsplit(":", 1)[0]
            self.temporal = TemporalDevServer(
                self.data_dir / "temporal.db",
                host=host,
                port=settings.temporal_port,
                ui_port=settings.temporal_ui_port,
                log_path=self.logs_dir / "temporal.log",
                codec_endpoint=f"{settings.api_base_url}/codec",  # the UI decrypts payloads through the API
            )
            await self.temporal.start()
            log.info("Temporal ready on %s", self.temporal.address)

    async def start_services(self) -> None:
        names = ("standins", *SERVICES) if self.settings.local_standins else SERVICES
        for name in names:
            child = ChildProcess(name, self.commands.get(name) or _command(name), env=self.env)
            self.services[name] = child
            await child.start()
            self._watchers.append(asyncio.create_task(self._keep_alive(child)))

    async def _keep_alive(self, child: ChildProcess) -> None:
        backoff = 1.0
        while True:
            started = time.monotonic()
            code = await child.wait()
            if self.stopping.is_set():
                return
            if time.monotonic() - started > 30:
                backoff = 1.0  # it ran fine for a while: this is a fresh failure
            log.error("%s exited with %s; restarting in %.0fs", child.name, code, backoff)
            try:
                await asyncio.wait_for(self.stopping.wait(), backoff)
                return
            except TimeoutError:
                pass
            backoff = min(backoff * 2, MAX_BACKOFF_S)
            await child.start()

    async def wait_healthy(self, timeout: float = 180.0) -> bool:
        """Every service healthy and, as the first caller would want, a warm agent ready to claim
        (the API's /healthz reports the worker's spares)."""
        s = self.settings
        urls = [f"http://{s.api_host}:{s.api_port}/healthz", f"http://{s.voice_host}:{s.voice_port}/healthz"]
        if s.local_standins:
            urls.append(f"{s.carrier_url}/control/state")
        started = time.monotonic()
        deadline = started + timeout
        said_warming = 0.0
        async with httpx.AsyncClient(timeout=3.0) as http:
            while time.monotonic() < deadline and not self.stopping.is_set():
                try:
                    responses = await asyncio.gather(*(http.get(url) for url in urls))
                    if all(r.status_code == 200 for r in responses):
                        pool = responses[0].json()["components"]["worker"]["agent_pool"]
                        if pool["state"] == "ready":
                            return True
                        if not said_warming:
                            log.info("services are up; warming an agent for the first caller (OpenClaw's "
                                     "first start on a machine takes 30-90 s while Node compiles it; later ones "
                                     "use its compile cache)")
                            said_warming = time.monotonic()
                        elif time.monotonic() - said_warming > WARMING_NOTE_EVERY_S:
                            said_warming = time.monotonic()
                            log.info("still warming an agent (%.0f s so far; %d starting)",
                                     time.monotonic() - started, pool["spares_starting"])
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                await asyncio.sleep(0.3)
        return False

    def banner(self) -> str:
        """One short block: where to start and what to try; the rest on a few lines below it."""
        s = self.settings
        lines = ["", "DeepClaw is ready."]
        if s.local_standins:
            lines += [
                f"  Open the softphone  {s.carrier_url}/phone",
                f"  Call the hotline    {s.hotline_number}  (one tap on the softphone)",
                "  Try first           the SMS code shows in the softphone's timeline: key it, then #;",
                "                      no microphone? type what you would say; then call your new number",
                "                      and say: text me hello / remind me in two minutes to stretch",
                f"  Your dashboard      {s.api_base_url}/  (sign in with that phone: the code comes by text)",
            ]
        lines += [
            f"  Agents' model       {s.model_summary()}",
            "",
            f"  API {s.api_base_url} (/healthz)  ·  voice bridge http://{s.voice_host}:{s.voice_port}"
            + (f"  ·  Temporal UI {s.temporal_ui_url}" if self.temporal else f"  ·  Temporal {s.temporal_address}"),
        ]
        if s.local_standins:
            lines.append(f"  Mail outbox {s.api_base_url}/dev/outbox  ·  model stand-in {s.model_base_url}")
        lines += [f"  PostgreSQL {make_url(s.database_url).render_as_string(hide_password=True)}",
                  f"  Data {self.data_dir}  ·  logs {self.logs_dir}", "Press Ctrl-C to stop.", ""]
        return "\n".join(lines)

    async def stop(self) -> None:
        self.stopping.set()
        await asyncio.gather(*(c.stop(STOP_TIMEOUT_S) for c in self.services.values()))
        for task in self._watchers:
            task.cancel()
        await asyncio.gather(*(s.stop() for s in (self.temporal, self.postgres) if s is not None))


async def run_dev(settings: Settings) -> int:
    _stop_with_parent()
    supervisor = Supervisor(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, supervisor.stopping.set)

    async def start() -> None:
        await supervisor.start_infrastructure()
        await supervisor.start_services()
        if await supervisor.wait_healthy():
            print(supervisor.banner(), flush=True)
        else:
            log.error("the platform did not become healthy; see %s and the log above", supervisor.logs_dir)

    code = 0
    starting = asyncio.create_task(start())
    stopping = asyncio.create_task(supervisor.stopping.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done() and starting.exception() is None:
            await stopping
        log.info("stopping")
    finally:
        starting.cancel()
        stopping.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        if starting.done() and not starting.cancelled() and starting.exception() is not None:
            log.error("start-up failed", exc_info=starting.exception())
            code = 1
        await supervisor.stop()
    return code
