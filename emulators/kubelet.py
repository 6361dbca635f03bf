"""A kubelet for the Kubernetes API emulator: runs the agent pods the runtime creates, on this host.

The emulator (kmock) stores objects and runs no controller. This stands in for the nodes: when the
runtime asks whether a pod is ready, a pod it has not started yet is started as local processes,
as its manifest says: the base config copied from the `agent-base` ConfigMap (the init container),
the gateway token from the pod's Secret, the real loader (deploy/agent/loader.mjs under Node) and a
gateway, both on loopback ports of the pod's own (a cluster gives each pod an IP instead). Which
gateway runs is the caller's choice: a real OpenClaw (bench/wake.py) or a small stand-in (tests).
`kill` makes a pod die as a lost node would: its processes gone, its object still in the API.
On a cluster each pod has the CPU it requested; on one host, spares run at a low priority (`nice`)
until the runtime labels them as a user's, so a spare's boot does not slow the user's agent.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx

from activities.runtime import k8s_manifests as manifests
from activities.runtime.kubernetes import KubeApi, PodAddress
from core.process import ChildProcess, free_port

LOADER = Path(__file__).resolve().parents[1] / "deploy" / "agent" / "loader.mjs"
SPARE_NICE = 15


@dataclass(frozen=True)
class PodRun:
    """What a pod's gateway gets: its folders, token and address (as its container would)."""

    name: str
    home: Path
    state_dir: Path
    config_path: Path
    token: str
    address: PodAddress
    env: dict[str, str]  # the gateway container's env from Secrets (the provider key)
    nice: int  # start at this priority (a spare's)


class Running(Protocol):
    async def stop(self) -> None: ...
    def set_priority(self, nice: int) -> None: ...


StartGateway = Callable[[PodRun], Awaitable[Running]]


@dataclass
class _Pod:
    run: PodRun | None = None
    parts: list[Running] = field(default_factory=list)
    ready: bool = False
    claimed: bool = False
    starting: asyncio.Task[None] | None = None


class _Child:
    def __init__(self, child: ChildProcess) -> None:
        self.child = child

    async def stop(self) -> None:
        await self.child.stop(timeout=3.0)

    def set_priority(self, nice: int) -> None:
        """The loader only moves files: it stays as it started."""


class SimulatedKubelet:
    def __init__(self, api: KubeApi, root: Path, node: Path, start_gateway: StartGateway,
                 openclaw_command: list[str] | None = None, start_delay_s: float = 0.0) -> None:
        """`openclaw_command`: how the loader runs OpenClaw's CLI (its session cleanup before a save at
        Sleep); None: a command that does nothing, for gateways that are not OpenClaw.
        `start_delay_s`: from a pod's creation to its containers starting (scheduling, image, sandbox).
        On one host it also keeps a new spare's boot off the turns of the pod just claimed, which
        on a cluster has CPU of its own (its requests)."""
        self.api = api
        self.root = root
        self.node = node
        self.openclaw_command = openclaw_command or ["true"]
        self.start_delay_s = start_delay_s
        self.spare_nice = SPARE_NICE
        self.watch_s = 0.5
        self._watcher: asyncio.Task[None] | None = None
        self.start_gateway = start_gateway
        self.pods: dict[str, _Pod] = {}
        self.addresses: dict[str, PodAddress] = {}
        self.dead: set[str] = set()
        self.started: list[str] = []  # every pod it ran, in order

    def address(self, pod: str) -> PodAddress:
        if pod not in self.addresses:
            self.addresses[pod] = PodAddress("127.0.0.1", gateway_port=free_port(), loader_port=free_port(),
                                             bind="loopback")
        return self.addresses[pod]

    async def pod_ready(self, pod: str) -> bool | None:
        if pod in self.dead or await self.api.read("Pod", pod) is None:
            await self._stop(pod)
            return False
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch())
        running = self.pods.get(pod)
        if running is None:  # (several workers ask at once: the first starts it)
            running = self.pods[pod] = _Pod()
            running.starting = asyncio.create_task(self._start(pod, running))
            self.started.append(pod)
            return None
        if running.starting is not None and running.starting.done() and running.starting.exception():
            self.dead.add(pod)
            return False
        return running.ready or None

    async def _prepare(self, pod: str) -> PodRun:
        secret = await self.api.read("Secret", manifests.token_secret_name(pod))
        provider = await self.api.read("Secret", manifests.PROVIDER_SECRET)
        base = await self.api.read("ConfigMap", manifests.BASE_CONFIG)
        home = self.root / pod
        address = self.address(pod)
        config = json.loads(base.data["openclaw.json"])
        config["gateway"] |= {"port": address.gateway_port, "bind": address.bind}  # this pod's "IP"
        decode = lambda value: base64.b64decode(value).decode()  # noqa: E731
        # The folders a gateway process keeps under its home (GatewayProcess: <home>/.openclaw/openclaw.json).
        state = home / ".openclaw"
        run = PodRun(name=pod, home=home, state_dir=state, config_path=state / "openclaw.json",
                     token=decode(secret.data["gateway-token"]), address=address,
                     env={manifests.PROVIDER_KEY_ENV: decode(provider.data["provider-key"])}, nice=self.spare_nice)
        for folder in (run.state_dir, run.config_path.parent):
            folder.mkdir(parents=True, exist_ok=True)
        run.config_path.write_text(json.dumps(config, indent=2))
        return run

    async def _start(self, name: str, pod: _Pod) -> None:
        await asyncio.sleep(self.start_delay_s)
        run = pod.run = await self._prepare(name)
        loader = ChildProcess(f"loader:{run.name}", [str(self.node), str(LOADER)], log_path=str(run.home / "loader.log"),
                              env={"OPENCLAW_STATE_DIR": str(run.state_dir), "OPENCLAW_CONFIG_PATH": str(run.config_path),
                                   "OPENCLAW_GATEWAY_TOKEN": run.token, "DEEPCLAW_LOADER_HOST": "127.0.0.1",
                                   "DEEPCLAW_LOADER_PORT": str(run.address.loader_port), "PATH": "/usr/bin:/bin",
                                   "DEEPCLAW_OPENCLAW_COMMAND": json.dumps(self.openclaw_command), **run.env})
        await loader.start()
        pod.parts.append(_Child(loader))
        pod.parts.append(await self.start_gateway(run))

        async def answers(url: str) -> bool:
            async with httpx.AsyncClient(timeout=2.0) as http:
                return (await http.get(url)).status_code == 200

        await loader.wait_until(lambda: answers(f"http://127.0.0.1:{run.address.loader_port}/healthz"),
                                what=f"the loader of {run.name}", timeout=30)
        deadline = asyncio.get_running_loop().time() + 120
        while not await _quietly(answers(f"http://127.0.0.1:{run.address.gateway_port}/readyz")):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"the gateway of {run.name} never became ready")
            await asyncio.sleep(0.1)
        pod.ready = True

    async def _watch(self) -> None:
        """As a kubelet would: a deleted pod's processes stop; a pod the runtime labelled as a user's
        gets its full priority (each within `watch_s`)."""
        while True:
            for name, running in list(self.pods.items()):
                found = await self.api.read("Pod", name)
                if found is None:
                    await self._stop(name)
                elif running.ready and not running.claimed and (found.metadata.labels or {}).get(manifests.ROLE) == "agent":
                    running.claimed = True
                    for part in running.parts:
                        part.set_priority(0)
            await asyncio.sleep(self.watch_s)

    async def kill(self, pod: str) -> None:
        """The pod's processes die (its node went away); its object stays in the API."""
        self.dead.add(pod)
        await self._stop(pod)

    async def _stop(self, pod: str) -> None:
        running = self.pods.pop(pod, None)
        if running is None:
            return
        if running.starting is not None:
            running.starting.cancel()
            with contextlib.suppress(BaseException):
                await running.starting
        for part in running.parts:
            await part.stop()
        if running.run is not None:
            shutil.rmtree(running.run.home, ignore_errors=True)

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(BaseException):
                await self._watcher
        for pod in list(self.pods):
            await self._stop(pod)


async def _quietly(probe: Awaitable[bool]) -> bool:
    try:
        return await probe
    except httpx.HTTPError:
        return False
