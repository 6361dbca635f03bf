"""The local AgentRuntime: one real OpenClaw gateway process per user, woken fast.

Waking follows the design both runtimes share (activities/runtime/wake.py):
- Warm spares: gateway processes started in advance with nothing user-specific (and warmed up with
  one request). Waking a Sleeping user claims a spare and hands it that user's agent by
  hot-reloading its config; the spare then belongs to that user alone until it sleeps.
- Idle = SIGSTOP (memory kept, ~0.3 s back); Sleeping = no process; the user's state (workspace,
  sessions) lives in the user's own folder and follows them from process to process.
- Archive = a tar.gz of that folder in the ArchiveStore; restore unpacks it byte for byte.
- Each gateway runs as a Unix user of its own (agent_users.py): code the agent executes reaches its
  own user's folder and nothing of the platform's or of other users'.
Gateways are children of the worker with PDEATHSIG: a dead worker leaks nothing, and a new worker
simply wakes users again from their folders.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import signal
import tarfile
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


from activities.runtime.agent_users import AgentUsers
from activities.runtime.gateway import GatewayProcess
from activities.runtime.openclaw_config import ModelProvider, agent_id, render_config, with_agent, with_mcp_servers
from activities.runtime.wake import Gateway, SpareWake, personality_prompt, wait_listed, warm_up
from core.ports import AgentEndpoint, AgentSpec, ArchiveStore, RuntimeState, archive_key, export_key
from core.tokens import Keyring
from core.process import free_port, grant_traverse
from activities.runtime.tools import Tools

log = logging.getLogger(__name__)

# Spares start at low CPU priority, and only a while after a claim, so that on two cores they
# never slow the user whose wake is in progress.
SPARE_NICE = 15
REPLENISH_DELAY_S = 15.0
CLEANUP_TIMEOUT_S = 60.0


class _Running:
    def __init__(self, gateway: GatewayProcess) -> None:
        self.gateway = gateway
        self.paused = False


class LocalAgentRuntime:
    def __init__(self, tools: Tools, root: Path, model: ModelProvider, *, keyring: Keyring, spares: int = 1,
                 reachable: Sequence[str] = (), replenish_delay_s: float = REPLENISH_DELAY_S) -> None:
        """`reachable`: URLs the agents must reach besides the model (the platform's MCP server)."""
        self.keyring = keyring  # gateway tokens are derived from it (AgentEndpoint.token)
        self.replenish_delay_s = replenish_delay_s
        self.tools = tools
        self.root = root.resolve()
        self.model = model
        self.spare_target = spares
        self._spares: asyncio.Queue[GatewayProcess] = asyncio.Queue()
        self._starting = 0
        self._scheduled = 0
        self._claiming = 0  # wakes waiting for a gateway
        self._running: dict[uuid.UUID, _Running] = {}
        self._locks: dict[uuid.UUID, asyncio.Lock] = {}
        self._background: set[asyncio.Task[None]] = set()
        for folder in (self.root, self.root / "users", self.root / "gateways"):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o711)  # gateways reach their own folders inside; nobody lists them
        grant_traverse(self.root)
        grant_traverse(tools.openclaw_dir)
        grant_traverse(tools.node_dir)
        self.users = AgentUsers(tools.root / "tmp", loopback_ports=_loopback_ports([model.base_url, *reachable]))
        # web_fetch may reach the platform's loopback hosts (MMS attachment links); the firewall
        # still limits the agents to the model's and the platform's ports there.
        self.platform_hosts = sorted({host for url in reachable if (host := urlparse(url).hostname) in LOOPBACK})

    # ---- folders --------------------------------------------------------------------------

    def user_dir(self, user_id: uuid.UUID) -> Path:
        return self.root / "users" / user_id.hex

    def _spec(self, user_id: uuid.UUID) -> AgentSpec:
        path = self.user_dir(user_id) / "spec.json"
        if not path.exists():
            raise LookupError(f"no agent for user {user_id}")
        return AgentSpec.model_validate_json(path.read_text())

    def _lock(self, user_id: uuid.UUID) -> asyncio.Lock:
        return self._locks.setdefault(user_id, asyncio.Lock())

    # ---- spares ---------------------------------------------------------------------------

    def _base_config(self, port: int) -> dict[str, Any]:
        config = render_config(port=port, bind="loopback", model=self.model, platform_hosts=self.platform_hosts)
        # Session-store maintenance would start a worker thread on a new agent's first turn (~2 s of
        # the wake on two cores); it runs at sleep instead (_clean_sessions).
        config["session"] = {"maintenance": {"mode": "warn"}}
        return config

    async def _start_spare(self) -> None:
        """Counted in `_starting` by whoever launched it."""
        try:
            port = free_port()
            home = self.root / "gateways" / f"{port}-{secrets.token_hex(4)}"
            home.mkdir(parents=True)
            endpoint = AgentEndpoint(base_url=f"http://127.0.0.1:{port}", instance=secrets.token_hex(8),
                                     key_id=self.keyring.kid)
            user = await asyncio.to_thread(self.users.acquire)  # may create a Unix user: not on the loop
            gateway = GatewayProcess(self.tools, home, port=port, token=endpoint.token(self.keyring),
                                     config=self._base_config(port), user=user, instance=endpoint.instance,
                                     key_id=endpoint.key_id)
            try:
                await gateway.start(nice=SPARE_NICE)
                await gateway.wait_ready()
                await warm_up(_address(gateway))
            except BaseException:  # cancelled by close() too: never leave a half-started gateway
                await asyncio.shield(self._discard(gateway))
                raise
            await self._spares.put(gateway)
        finally:
            self._starting -= 1

    async def start(self) -> None:
        self.replenish()

    def pool(self) -> dict[str, int]:
        return {"spares_ready": self._spares.qsize(), "spares_starting": self._starting + self._scheduled,
                "spares_target": self.spare_target}

    def replenish(self, delay: float = 0.0) -> None:
        missing = self.spare_target - self._spares.qsize() - self._starting - self._scheduled
        for _ in range(max(0, missing)):
            self._launch(delay)

    def _launch(self, delay: float) -> None:
        if delay > 0:
            self._scheduled += 1
            task = asyncio.create_task(self._start_spare_after(delay))
        else:
            self._starting += 1
            task = asyncio.create_task(self._start_spare())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _start_spare_after(self, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
        finally:
            self._scheduled -= 1
        if self._spares.qsize() + self._starting >= self.spare_target:
            return  # wakes meanwhile started what was missing
        self._starting += 1
        await self._start_spare()

    async def _claim_spare(self) -> GatewayProcess:
        self._claiming += 1
        try:
            # Every wake waiting has a gateway on its way now: with nothing warm (or no spares kept
            # at all) each pays a cold start, rather than queueing behind another wake's or waiting
            # out a replacement's delay.
            for _ in range(self._claiming - self._spares.qsize() - self._starting):
                self._launch(0.0)
            gateway = await asyncio.wait_for(self._spares.get(), 120)
        finally:
            self._claiming -= 1
        gateway.set_priority(0)
        self.replenish(delay=self.replenish_delay_s)
        return gateway

    # ---- AgentRuntime ---------------------------------------------------------------------

    async def create(self, spec: AgentSpec) -> None:
        folder = self.user_dir(spec.user_id)
        folder.mkdir(mode=0o700, exist_ok=True)
        (folder / "workspace").mkdir(parents=True, exist_ok=True)
        (folder / "agent").mkdir(parents=True, exist_ok=True)
        (folder / "spec.json").write_text(spec.model_dump_json(indent=2))
        soul = folder / "workspace" / "SOUL.md"
        if not soul.exists():
            soul.write_text(personality_prompt(spec))

    async def apply(self, spec: AgentSpec) -> None:
        await self.create(spec)
        (self.user_dir(spec.user_id) / "workspace" / "SOUL.md").write_text(personality_prompt(spec))
        async with self._lock(spec.user_id):
            running = self._running.get(spec.user_id)
            if not running:
                return
            # A paused (Idle) gateway cannot reload: it runs just long enough to load the new settings.
            paused = running.paused and running.gateway.child is not None and running.gateway.child.running
            if paused:
                os.killpg(running.gateway.child.pid, signal.SIGCONT)  # type: ignore[union-attr]
            try:
                await self._load(running.gateway, spec)
                await wait_listed(_address(running.gateway), agent_id(spec.user_id))
            finally:
                if paused:
                    os.killpg(running.gateway.child.pid, signal.SIGSTOP)  # type: ignore[union-attr]

    async def _load(self, gateway: GatewayProcess, spec: AgentSpec) -> None:
        """Give a gateway this user's agent: their folder behind the agent's paths, then hot reload."""
        folder = self.user_dir(spec.user_id)
        self.users.hand_over(folder, gateway.user)
        ident = agent_id(spec.user_id)
        link = gateway.state_dir / "agents" / ident
        if not link.parent.exists():
            link.parent.mkdir(parents=True)
            gateway.own(link.parent)
        if not link.is_symlink():
            shutil.rmtree(link, ignore_errors=True)
            link.symlink_to(folder, target_is_directory=True)  # sessions land in <folder>/agent
        config = with_agent(self._base_config(gateway.port), spec.user_id, spec.agent_name, str(folder / "workspace"))
        gateway.config = with_mcp_servers(config, spec.mcp_servers)
        gateway.write_config()

    def _endpoint(self, gateway: GatewayProcess) -> AgentEndpoint:
        return AgentEndpoint(base_url=gateway.base_url, instance=gateway.instance, key_id=gateway.key_id)

    async def wake(self, user_id: uuid.UUID) -> AgentEndpoint:
        async with self._lock(user_id):
            running = self._running.get(user_id)
            if running and running.gateway.child and running.gateway.child.running:
                if running.paused:
                    os.killpg(running.gateway.child.pid, signal.SIGCONT)
                    running.paused = False
                return self._endpoint(running.gateway)
            if running is not None:  # its gateway died (killed, crashed): cleared away, a fresh one instead
                log.warning("the gateway of user %s on :%s had stopped; starting another", user_id, running.gateway.port)
                del self._running[user_id]
                await self._discard(running.gateway, user_id)
            spec = self._spec(user_id)
            wake = SpareWake(claim=self._claim_spare, load=lambda gateway: self._load(gateway, spec), gateway=_address,
                             discard=lambda gateway: self._discard(gateway, user_id))
            gateway = await wake.wake(user_id)
            self._running[user_id] = _Running(gateway)
            return self._endpoint(gateway)

    async def pause(self, user_id: uuid.UUID) -> None:
        async with self._lock(user_id):
            running = self._running.get(user_id)
            if running and running.gateway.child and running.gateway.child.running and not running.paused:
                os.killpg(running.gateway.child.pid, signal.SIGSTOP)
                running.paused = True

    async def sleep(self, user_id: uuid.UUID) -> None:
        async with self._lock(user_id):
            running = self._running.pop(user_id, None)
            if running is None:
                return
            if running.paused and running.gateway.child and running.gateway.child.running:
                os.killpg(running.gateway.child.pid, signal.SIGCONT)  # a stopped process can't handle SIGTERM
            await running.gateway.stop()
            await self._clean_sessions(running.gateway, user_id)
            await self._discard(running.gateway, user_id)

    async def _discard(self, gateway: GatewayProcess, user_id: uuid.UUID | None = None) -> None:
        """Stop a gateway for good: its scratch goes, the user's folder is root's again, its Unix user is free."""
        await gateway.stop()
        if user_id is not None:
            self.users.take_back(self.user_dir(user_id), gateway.user)
        shutil.rmtree(gateway.home, ignore_errors=True)  # the gateway's own scratch, not the user's
        await asyncio.to_thread(self.users.release, gateway.user)  # waits for what it kills
        gateway.user = None

    async def _clean_sessions(self, gateway: GatewayProcess, user_id: uuid.UUID) -> None:
        """OpenClaw's session retention (age, count, disk budget), run offline while the agent sleeps."""
        cleanup = gateway.command(f"openclaw-sessions-cleanup:{user_id.hex[:8]}",
                                  ["sessions", "cleanup", "--enforce", "--agent", agent_id(user_id), "--json"],
                                  gateway.home / "cleanup.log", nice=SPARE_NICE)
        await cleanup.start()
        try:
            code = await asyncio.wait_for(cleanup.wait(), CLEANUP_TIMEOUT_S)
        except TimeoutError:
            code = None
        finally:
            await cleanup.stop(timeout=1.0)
        if code != 0:
            log.warning("session cleanup for user %s ended with %s: %s", user_id, code,
                        (gateway.home / "cleanup.log").read_text(errors="replace")[-500:])

    async def archive(self, user_id: uuid.UUID, store: ArchiveStore) -> str:
        await self.sleep(user_id)
        folder = self.user_dir(user_id)
        if not folder.exists():
            raise LookupError(f"no agent state for user {user_id}")
        key = archive_key(user_id)
        with tempfile.TemporaryDirectory(dir=self.root) as tmp:
            bundle = Path(tmp) / "state.tar.gz"
            await asyncio.to_thread(_pack, folder, bundle)
            await store.put(key, bundle)
        shutil.rmtree(folder)
        return key

    async def export_memory(self, user_id: uuid.UUID, store: ArchiveStore) -> bool:
        workspace = self.user_dir(user_id) / "workspace"
        if not workspace.is_dir():
            return False
        with tempfile.TemporaryDirectory(dir=self.root) as tmp:
            bundle = Path(tmp) / "workspace.tar.gz"
            await asyncio.to_thread(_pack, workspace, bundle)
            await store.put(export_key(user_id), bundle)
        return True

    async def restore(self, user_id: uuid.UUID, store: ArchiveStore, key: str) -> None:
        folder = self.user_dir(user_id)
        with tempfile.TemporaryDirectory(dir=self.root) as tmp:
            bundle = Path(tmp) / "state.tar.gz"
            await store.get(key, bundle)
            staging = Path(tmp) / "state"
            await asyncio.to_thread(_unpack, bundle, staging)
            shutil.rmtree(folder, ignore_errors=True)
            folder.parent.mkdir(parents=True, exist_ok=True)
            staging.rename(folder)

    async def delete(self, user_id: uuid.UUID) -> None:
        await self.sleep(user_id)
        shutil.rmtree(self.user_dir(user_id), ignore_errors=True)

    async def status(self, user_id: uuid.UUID) -> RuntimeState:
        running = self._running.get(user_id)
        if running and running.gateway.child and running.gateway.child.running:
            return RuntimeState.PAUSED if running.paused else RuntimeState.RUNNING
        if (self.user_dir(user_id) / "spec.json").exists():
            return RuntimeState.STOPPED
        return RuntimeState.ABSENT

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for user_id in list(self._running):
            await self.sleep(user_id)
        while not self._spares.empty():
            await self._discard(self._spares.get_nowait())
        self.users.close()


LOOPBACK = ("127.0.0.1", "localhost")


def _address(gateway: GatewayProcess) -> Gateway:
    return Gateway(gateway.base_url, gateway.token)


def _loopback_ports(urls: Sequence[str]) -> set[int]:
    ports = set()
    for url in urls:
        parsed = urlparse(url)
        if parsed.hostname in LOOPBACK and parsed.port:
            ports.add(parsed.port)
    return ports


def _pack(folder: Path, bundle: Path) -> None:
    with tarfile.open(bundle, "w:gz") as archive:
        archive.add(folder, arcname=".")


def _unpack(bundle: Path, destination: Path) -> None:
    destination.mkdir()
    with tarfile.open(bundle) as archive:
        archive.extractall(destination, filter="data")

