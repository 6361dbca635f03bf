"""A kubelet for the Kubernetes API emulator: runs the agent pods the runtime creates, on this host.

The emulator (kmock) stores objects and runs no controller. This stands in for the nodes: when the
runtime asks whether a pod is ready, a pod it has not started yet is started as local processes,
as its manifest says: the base config copied from the `agent-base` ConfigMap (the init container),
the gateway token from the pod's Secret, the real loader (deploy/agent/loader.mjs under Node) and a
gateway, both on loopback ports of the pod's own (a cluster gives each pod an IP instead). Which
gateway runs is the caller's choice: a real OpenClaw (bench/wake.py) or a small stand-in (tests).
`kill` makes a pod die as a lost node would: its processes gone, its object still in the API.
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


@dataclass(frozen=True)
class PodRun:
    """What a pod's gateway gets: its folders, token and address (as its container would)."""

    name: str
    home: Path
    state_dir: Path
    config_path: Path
    token: str
    address: PodAddress


class Running(Protocol):
    async def stop(self) -> None: ...


StartGateway = Callable[[PodRun], Awaitable[Running]]


@dataclass
class _Pod:
    run: PodRun | None = None
    parts: list[Running] = field(default_factory=list)
    ready: bool = False
    starting: asyncio.Task[None] | None = None


class _Child:
    def __init__(self, child: ChildProcess) -> None:
        self.child = child

    async def stop(self) -> None:
        await self.child.stop(timeout=3.0)


class SimulatedKubelet:
    def __init__(self, api: KubeApi, root: Path, node: Path, start_gateway: StartGateway) -> None:
        self.api = api
        self.root = root
        self.node = node
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
        base = await self.api.read("ConfigMap", manifests.BASE_CONFIG)
        home = self.root / pod
        address = self.address(pod)
        config = json.loads(base.data["openclaw.json"])
        config["gateway"] |= {"port": address.gateway_port, "bind": address.bind}  # this pod's "IP"
        run = PodRun(name=pod, home=home, state_dir=home / "state", config_path=home / "config" / "openclaw.json",
                     token=base64.b64decode(secret.data["gateway-token"]).decode(), address=address)
        for folder in (run.state_dir, run.config_path.parent):
            folder.mkdir(parents=True, exist_ok=True)
        run.config_path.write_text(json.dumps(config, indent=2))
        return run

    async def _start(self, name: str, pod: _Pod) -> None:
        run = pod.run = await self._prepare(name)
        loader = ChildProcess(f"loader:{run.name}", [str(self.node), str(LOADER)], log_path=str(run.home / "loader.log"),
                              env={"OPENCLAW_STATE_DIR": str(run.state_dir), "OPENCLAW_CONFIG_PATH": str(run.config_path),
                                   "OPENCLAW_GATEWAY_TOKEN": run.token, "DEEPCLAW_LOADER_HOST": "127.0.0.1",
                                   "DEEPCLAW_LOADER_PORT": str(run.address.loader_port), "PATH": "/usr/bin:/bin"})
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
        for pod in list(self.pods):
            await self._stop(pod)


async def _quietly(probe: Awaitable[bool]) -> bool:
    try:
        return await probe
    except httpx.HTTPError:
        return False
