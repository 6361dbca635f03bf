"""The local AgentRuntime: one real OpenClaw gateway process per user, woken fast.

Waking follows the design both runtimes share (activities/runtime/wake.py). Here it is split by
concern:
- local_spares.py: warm gateway processes, started ahead with no user and warmed up; a wake claims
  one and hands it the user's agent by hot-reloading its config; it then belongs to that user alone
  until it sleeps.
- local_state.py: the user's state (workspace, sessions), in the user's own folder, which follows
  them from process to process; archived as a tar.gz of that folder in the ArchiveStore.
- agent_users.py and agent_network.py: confinement. Each gateway runs as a Unix user of its own,
  so code the agent executes reaches its own user's folder and nothing of the platform's or of
  other users'; the firewall keeps it off the platform's private ports.
This module: the lifecycle of a user's gateway. Idle = SIGSTOP (memory kept, ~0.3 s back);
Sleeping = no process. Gateways are children of the worker with PDEATHSIG: a dead worker leaks
nothing, and a new worker simply wakes users again from their folders.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from activities.runtime.agent_users import AgentUsers
from activities.runtime.gateway import GatewayProcess
from activities.runtime.local_spares import REPLENISH_DELAY_S, SPARE_NICE, LocalSpares, address
from activities.runtime.local_state import LocalStates
from activities.runtime.openclaw_config import ModelProvider, agent_id, render_config, with_agent, with_mcp_servers
from activities.runtime.tools import Tools
from activities.runtime.wake import LaterWarmUps, SpareWake, spare_config, wait_listed
from core.ports import AgentEndpoint, AgentSpec, ArchiveStore, RuntimeState
from core.process import grant_traverse
from core.tokens import Keyring

log = logging.getLogger(__name__)

CLEANUP_TIMEOUT_S = 60.0
LOOPBACK = ("127.0.0.1", "localhost")


class _Running:
    def __init__(self, gateway: GatewayProcess) -> None:
        self.gateway = gateway
        self.paused = False


class LocalAgentRuntime:
    def __init__(self, tools: Tools, root: Path, model: ModelProvider, *, keyring: Keyring, spares: int = 1,
                 reachable: Sequence[str] = (), replenish_delay_s: float = REPLENISH_DELAY_S) -> None:
        """`reachable`: URLs the agents must reach besides the model (the platform's MCP server)."""
        self.keyring = keyring  # gateway tokens are derived from it (AgentEndpoint.token)
        self.tools = tools
        self.root = root.resolve()
        self.model = model
        self.states = LocalStates(self.root)
        self._running: dict[uuid.UUID, _Running] = {}
        self._locks: dict[uuid.UUID, asyncio.Lock] = {}
        self.warm_ups = LaterWarmUps()
        for folder in (self.root, self.states.folder, self.root / "gateways"):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o711)  # gateways reach their own folders inside; nobody lists them
        grant_traverse(self.root)
        grant_traverse(tools.openclaw_dir)
        grant_traverse(tools.node_dir)
        self.users = AgentUsers(tools.root / "tmp", loopback_ports=_loopback_ports([model.base_url, *reachable]))
        # web_fetch may reach the platform's loopback hosts (MMS attachment links); the firewall
        # still limits the agents to the model's and the platform's ports there.
        self.platform_hosts = sorted({host for url in reachable if (host := urlparse(url).hostname) in LOOPBACK})
        self.spares = LocalSpares(tools, self.root / "gateways", self.users, keyring, target=spares,
                                  config=self._base_config, discard=self._discard, replenish_delay_s=replenish_delay_s,
                                  agents_awake=lambda: any(not running.paused for running in self._running.values()))

    def user_dir(self, user_id: uuid.UUID) -> Path:
        return self.states.user_dir(user_id)

    def _lock(self, user_id: uuid.UUID) -> asyncio.Lock:
        return self._locks.setdefault(user_id, asyncio.Lock())

    def _base_config(self, port: int) -> dict[str, Any]:
        # (Sessions are cleaned up at sleep: _clean_sessions.)
        return spare_config(render_config(port=port, bind="loopback", model=self.model, platform_hosts=self.platform_hosts))

    async def start(self) -> None:
        self.spares.replenish()

    def pool(self) -> dict[str, int]:
        return self.spares.counts()

    # ---- AgentRuntime ---------------------------------------------------------------------

    async def create(self, spec: AgentSpec) -> None:
        self.states.write(spec, personality=False)

    async def apply(self, spec: AgentSpec) -> None:
        self.states.write(spec, personality=True)
        async with self._lock(spec.user_id):
            running = self._running.get(spec.user_id)
            if not running:
                return
            # A paused (Idle) gateway cannot reload: it runs just long enough to load the new settings.
            child = running.gateway.child
            paused = running.paused and child is not None and child.running
            if paused:
                child.resume()  # type: ignore[union-attr]
            try:
                await self._load(running.gateway, spec)
                await wait_listed(address(running.gateway), agent_id(spec.user_id))
            finally:
                if paused:
                    child.pause()  # type: ignore[union-attr]

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
                    running.gateway.child.resume()
                    running.paused = False
                    self.spares.reprioritise()  # booting spares yield to it
                return self._endpoint(running.gateway)
            if running is not None:  # its gateway died (killed, crashed): cleared away, a fresh one instead
                log.warning("the gateway of user %s on :%s had stopped; starting another", user_id, running.gateway.port)
                del self._running[user_id]
                await self._discard(running.gateway, user_id)
            spec = self.states.spec(user_id)
            wake = SpareWake(claim=self.spares.claim, load=lambda gateway: self._load(gateway, spec), gateway=address,
                             discard=lambda gateway: self._discard(gateway, user_id), warm_ups=self.warm_ups)
            gateway = await wake.wake(user_id)
            self._running[user_id] = _Running(gateway)
            self.spares.reprioritise()
            return self._endpoint(gateway)

    async def pause(self, user_id: uuid.UUID) -> None:
        async with self._lock(user_id):
            running = self._running.get(user_id)
            if running and running.gateway.child and running.gateway.child.running and not running.paused:
                running.gateway.child.pause()
                running.paused = True
                self.spares.reprioritise()

    async def sleep(self, user_id: uuid.UUID) -> None:
        await self._stop(user_id, clean_sessions=True)

    async def _stop(self, user_id: uuid.UUID, *, clean_sessions: bool) -> None:
        """The user's gateway stopped for good; `clean_sessions`: their kept state gets OpenClaw's
        session retention first (not for a deletion: the state goes anyway, and the cleanup is an
        OpenClaw process of its own, ~5 s of a core)."""
        async with self._lock(user_id):
            running = self._running.pop(user_id, None)
            if running is None:
                return
            self.spares.reprioritise()
            await running.gateway.stop()  # (a paused one is thawed to handle it)
            if clean_sessions:
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
        return await self.states.archive(user_id, store)

    async def export_memory(self, user_id: uuid.UUID, store: ArchiveStore) -> bool:
        return await self.states.export_memory(user_id, store)

    async def restore(self, user_id: uuid.UUID, store: ArchiveStore, key: str) -> None:
        await self.states.restore(user_id, store, key)

    async def delete(self, user_id: uuid.UUID) -> None:
        await self._stop(user_id, clean_sessions=False)
        self.states.delete(user_id)

    async def status(self, user_id: uuid.UUID) -> RuntimeState:
        running = self._running.get(user_id)
        if running and running.gateway.child and running.gateway.child.running:
            return RuntimeState.PAUSED if running.paused else RuntimeState.RUNNING
        return RuntimeState.STOPPED if self.states.has_agent(user_id) else RuntimeState.ABSENT

    async def close(self) -> None:
        await self.warm_ups.close()
        await self.spares.close()
        for user_id in list(self._running):
            await self.sleep(user_id)
        self.users.close()


def _loopback_ports(urls: Sequence[str]) -> set[int]:
    ports = set()
    for url in urls:
        parsed = urlparse(url)
        if parsed.hostname in LOOPBACK and parsed.port:
            ports.add(parsed.port)
    return ports
