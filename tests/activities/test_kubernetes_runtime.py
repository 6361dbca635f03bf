"""The Kubernetes runtime: the real `kubernetes` client against a Kubernetes API emulator on loopback
(kmock), every manifest checked against the Kubernetes 1.37 schemas (kubernetes-validate, strict),
claims decided in the real PostgreSQL, state kept in an S3 emulator (moto), and the pods it creates
run by a simulated kubelet: the real loader (deploy/agent/loader.mjs) beside a gateway stand-in that
serves OpenClaw's HTTP surface and lists the agents of the config the loader wrote."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import tarfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
from kubernetes import client as k8s
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from activities.archive.stores import S3ArchiveStore
from activities.runtime import k8s_manifests as manifests
from activities.runtime.k8s_manifests import ClusterSettings, UserNames
from activities.runtime.kubernetes import KubeApi, KubernetesAgentRuntime, PodAddress
from activities.runtime.openclaw_config import WARM_UP_PROMPT, WARMTH_PRELOAD, ModelProvider, agent_id
from activities.runtime.pod_claims import PodClaims, PodState
from activities.runtime.tools import Tools
from core.models import AgentPod
from core.ports import AgentSpec, McpServerSpec, RuntimeState, archive_key
from core.serve import serving
from core.tokens import Keyring
from emulators.kubelet import PodRun, SimulatedKubelet
from tests.conftest import s3_store
from tests.polling import until

IMAGE = "registry.digitalocean.com/deepclaw/agent@sha256:" + "a" * 64
KEYRING = Keyring.of("test-platform-secret")
MODEL = ModelProvider(base_url="https://api.openai.com/v1", api_key="sk-secret", model="gpt-4.1-mini")


def _cluster(spares: int = 1) -> ClusterSettings:
    # A pool per test: each test's spares and claims are its own in the shared database.
    return ClusterSettings(namespace="users", platform_namespace="deepclaw", image=IMAGE,
                           pool=f"pool-{secrets.token_hex(3)}", spares=spares)


# ---- manifests ----------------------------------------------------------------------------------

def test_every_manifest_is_valid_and_hardened() -> None:
    cluster = _cluster()
    user = uuid.uuid4()
    pod = manifests.spare_pod("agent-0123456789ab", cluster)
    rendered = [*manifests.shared_objects(cluster, {"gateway": {}}, "sk-secret"), pod,
                manifests.token_secret("agent-0123456789ab", cluster, "t0k"),
                manifests.user_spec(user, cluster, AgentSpec(user_id=user).model_dump_json()),
                manifests.user_policy(user, cluster)]
    for manifest in rendered:
        kubernetes_validate.validate(manifest, "1.37.0", strict=True)
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False and spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["nodeSelector"] == {"doks.digitalocean.com/node-pool": cluster.pool}
    assert spec["hostname"] == "agent-0123456789ab" and spec["subdomain"] == manifests.SERVICE
    assert {v["name"] for v in spec["volumes"] if "emptyDir" in v} == {"state", "config", "tmp"}, "no volume claims"
    containers = {c["name"]: c for c in [*spec["initContainers"], *spec["containers"]]}
    assert set(containers) == {"base-config", "openclaw", "loader"}
    for container in containers.values():
        assert container["image"] == IMAGE and container["securityContext"]["readOnlyRootFilesystem"]
        assert container["securityContext"]["runAsNonRoot"] and container["resources"]["limits"]
    gateway, loader = containers["openclaw"], containers["loader"]
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 18789}
    assert loader["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": manifests.LOADER_PORT}
    token_ref = {"secretKeyRef": {"name": "agent-0123456789ab-token", "key": "gateway-token"}}
    for container in (gateway, loader):
        assert {"name": "OPENCLAW_GATEWAY_TOKEN", "valueFrom": token_ref} in container["env"]
    node_options = next(e["value"] for e in gateway["env"] if e["name"] == "NODE_OPTIONS")
    assert node_options.endswith(f"--import file://{manifests.CONFIG_DIR}/{WARMTH_PRELOAD.name}")
    assert "sk-secret" not in json.dumps(pod), "the provider key comes from its Secret"
    by_name = {m["metadata"]["name"]: m for m in rendered}
    assert by_name[manifests.BASE_CONFIG]["data"][WARMTH_PRELOAD.name] == WARMTH_PRELOAD.read_text()
    # A spare is under the spares' policy; the claim's labels move it under its user's.
    assert pod["metadata"]["labels"][manifests.ROLE] == "spare"
    assert by_name[manifests.SPARES_POLICY]["spec"]["podSelector"] == {"matchLabels": {manifests.ROLE: "spare"}}
    policy = by_name[UserNames(user).base]["spec"]
    assert policy["podSelector"] == {"matchLabels": {manifests.USER: user.hex}}
    # The wake fetches the user's state while the labels are patched: a spare may reach what its user may.
    spares = by_name[manifests.SPARES_POLICY]["spec"]
    assert {**spares, "podSelector": None} == {**policy, "podSelector": None}
    assert manifests.claimed_labels(user)["metadata"]["labels"] == {manifests.ROLE: "agent", manifests.USER: user.hex}
    loader_in = policy["ingress"][1]
    assert loader_in["ports"] == [{"protocol": "TCP", "port": manifests.LOADER_PORT}]
    assert loader_in["from"][0]["podSelector"]["matchExpressions"][0]["values"] == ["worker"]
    internet = policy["egress"][1]["to"][0]["ipBlock"]
    assert internet["cidr"] == "0.0.0.0/0" and "10.0.0.0/8" in internet["except"]


# ---- a simulated cluster ----------------------------------------------------------------------------

class GatewayStandIn:
    """OpenClaw's HTTP surface as the runtime uses it: /readyz, the agents of its config as models, and
    chat turns (recorded), behind the pod's token."""

    def __init__(self, run: PodRun) -> None:
        self.run = run
        self.turns: list[tuple[str, str]] = []
        self._stack = contextlib.AsyncExitStack()

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.run.token}"

    def app(self) -> Starlette:
        async def readyz(request: Request) -> JSONResponse:
            return JSONResponse({"ready": True})

        async def models(request: Request) -> JSONResponse:
            if not self._authorized(request):
                return JSONResponse({}, status_code=401)
            agents = json.loads(self.run.config_path.read_text()).get("agents", {}).get("entries", {})
            return JSONResponse({"data": [{"id": f"openclaw/{name}"} for name in ["default", *agents]]})

        async def chat(request: Request) -> JSONResponse:
            if not self._authorized(request):
                return JSONResponse({}, status_code=401)
            body = await request.json()
            self.turns.append((body["model"], body["messages"][-1]["content"]))
            return JSONResponse({"choices": [{"message": {"role": "assistant", "content": "ok"}}]})

        return Starlette(routes=[Route("/readyz", readyz), Route("/v1/models", models),
                                 Route("/v1/chat/completions", chat, methods=["POST"])])

    async def start(self) -> GatewayStandIn:
        await self._stack.enter_async_context(serving(self.app(), "127.0.0.1", self.run.address.gateway_port))
        return self

    async def stop(self) -> None:
        await self._stack.aclose()

    def set_priority(self, nice: int) -> None:
        """(In the test's own process: nothing to renice.)"""


class Cluster:
    def __init__(self, api: KubeApi, kubelet: SimulatedKubelet, store: S3ArchiveStore,
                 sessions: async_sessionmaker[AsyncSession], gateways: dict[str, GatewayStandIn]) -> None:
        self.api, self.kubelet, self.store, self.sessions, self.gateways = api, kubelet, store, sessions, gateways
        self.runtimes: list[KubernetesAgentRuntime] = []
        self.sent: list[str] = []  # the kinds of what the runtimes created or replaced, each validated

    async def runtime(self, cluster: ClusterSettings) -> KubernetesAgentRuntime:
        """A worker's runtime (several share one cluster, one database and one store)."""
        api_client = k8s.ApiClient(self.api.api_client.configuration)  # a worker's own client
        runtime = KubernetesAgentRuntime(api_client, cluster, MODEL, keyring=KEYRING, sessions=self.sessions,
                                         urls=self.store, status=self.kubelet, poll_s=0.05, claim_timeout_s=30)
        apply = runtime.api.apply

        async def validated(manifest: dict[str, Any]) -> Any:
            """Every object the runtime sends is checked against the 1.37 schemas first (strict)."""
            kubernetes_validate.validate(manifest, "1.37.0", strict=True)
            self.sent.append(manifest["kind"])
            return await apply(manifest)

        runtime.api.apply = validated  # type: ignore[method-assign]
        self.runtimes.append(runtime)
        await runtime.start()
        return runtime

    async def rows(self, pool: str) -> list[AgentPod]:
        async with self.sessions() as session:
            return list((await session.execute(select(AgentPod).where(AgentPod.pool == pool))).scalars())

    async def ready_spares(self, runtime: KubernetesAgentRuntime, count: int) -> None:
        await until(lambda: _count(self, runtime.cluster.pool, PodState.READY, count), f"{count} ready spares")

    def state_files(self, user: uuid.UUID, tmp: Path) -> dict[str, bytes]:
        target = tmp / f"{uuid.uuid4().hex}.tar.gz"
        self.store.client.download_file(self.store.bucket, archive_key(user), str(target))
        with tarfile.open(target) as archive:
            return {m.name.removeprefix("./"): archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}  # type: ignore[union-attr]


async def _count(cluster: Cluster, pool: str, state: PodState, count: int) -> bool:
    return sum(1 for row in await cluster.rows(pool) if row.state == state) >= count


@pytest.fixture
async def cluster(kmock: Any, tools: Tools, s3_emulator: str, sessions: async_sessionmaker[AsyncSession],
                  tmp_path: Path) -> AsyncIterator[Cluster]:
    api = KubeApi(k8s.ApiClient(k8s.Configuration(host=str(kmock.url).rstrip("/"))), "users")
    gateways: dict[str, GatewayStandIn] = {}

    async def start_gateway(run: PodRun) -> GatewayStandIn:
        gateways[run.name] = await GatewayStandIn(run).start()
        return gateways[run.name]

    kubelet = SimulatedKubelet(api, tmp_path / "nodes", tools.node, start_gateway)
    simulated = Cluster(api, kubelet, s3_store(s3_emulator), sessions, gateways)
    yield simulated
    for runtime in simulated.runtimes:
        await runtime.close()
    await kubelet.close()
    api.api_client.close()


def _run(cluster: Cluster, pod: str) -> PodRun:
    run = cluster.kubelet.pods[pod].run
    assert run is not None, f"pod {pod} is running"
    return run


def _state_dir(cluster: Cluster, pod: str, user: uuid.UUID) -> Path:
    return _run(cluster, pod).state_dir / "agents" / agent_id(user)


async def _chat(endpoint_url: str, token: str, user: uuid.UUID) -> str:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(f"{endpoint_url}/v1/chat/completions", headers={"Authorization": f"Bearer {token}"},
                                   json={"model": f"openclaw/{agent_id(user)}", "messages": [{"role": "user", "content": "hi"}]})
    response.raise_for_status()
    return response.json()["choices"][0]["message"]["content"]


# ---- the runtime -------------------------------------------------------------------------------------

async def test_wake_sleep_and_wake_again_carry_the_state_through_the_store(cluster: Cluster, tmp_path: Path) -> None:
    runtime = await cluster.runtime(_cluster(spares=1))
    platform = McpServerSpec(name="deepclaw", url="https://deepclaw.example.com/mcp",
                             headers={"Authorization": "Bearer mcp-secret-token"})
    spec = AgentSpec(user_id=uuid.uuid4(), agent_name="Nova", mcp_servers=[platform])
    user = spec.user_id
    await runtime.create(spec)
    await runtime.create(spec)  # a retried activity: 409s are updates
    assert await runtime.status(user) == RuntimeState.STOPPED
    with pytest.raises(LookupError):
        await runtime.wake(uuid.uuid4())
    await cluster.ready_spares(runtime, 1)
    spare = next(r.name for r in await cluster.rows(runtime.cluster.pool))
    assert cluster.gateways[spare].turns == [("openclaw/default", cluster.gateways[spare].turns[0][1])], \
        "a spare is warmed up before it is offered"

    endpoint = await runtime.wake(user)
    assert endpoint.instance == spare and endpoint.key_id == KEYRING.kid
    assert await _chat(endpoint.base_url, endpoint.token(KEYRING), user) == "ok"
    assert endpoint.token(KEYRING) not in endpoint.model_dump_json(), "the endpoint (kept in history) has no token"
    turns = cluster.gateways[spare].turns
    assert turns[1][0] == f"openclaw/{agent_id(user)}", "the caller's question is the agent's first turn"

    async def warmed_up() -> bool:
        return len(turns) > 2

    await until(warmed_up, "a warm-up turn a moment after the wake")
    assert turns[2] == (f"openclaw/{agent_id(user)}", WARM_UP_PROMPT)
    pod = await cluster.api.read("Pod", spare)
    assert pod.metadata.labels[manifests.USER] == user.hex and pod.metadata.labels[manifests.ROLE] == "agent"
    config = json.loads(_run(cluster, spare).config_path.read_text())
    assert config["agents"]["entries"][agent_id(user)]["name"] == "Nova"
    assert config["mcp"]["servers"]["deepclaw"]["headers"]["Authorization"] == "Bearer mcp-secret-token"
    assert "Nova" in (_state_dir(cluster, spare, user) / "workspace" / "SOUL.md").read_text()
    assert await runtime.status(user) == RuntimeState.RUNNING
    assert (await runtime.wake(user)).instance == spare, "an awake agent is where it is"
    await cluster.ready_spares(runtime, 1)  # the claimed spare was replaced

    # What the agent writes is checkpointed at Idle and saved at Sleep; the pod then goes.
    memory = _state_dir(cluster, spare, user) / "workspace" / "MEMORY.md"
    memory.write_text("Locker code 4471.\n")
    await runtime.pause(user)
    assert cluster.state_files(user, tmp_path)["workspace/MEMORY.md"] == b"Locker code 4471.\n"
    memory.write_text("Locker code 4471. Dentist on Friday.\n")
    await runtime.sleep(user)
    assert await cluster.api.read("Pod", spare) is None and await cluster.api.read("Secret", f"{spare}-token") is None
    assert spare not in [r.name for r in await cluster.rows(runtime.cluster.pool)], "a claimed pod never returns"
    assert cluster.state_files(user, tmp_path)["workspace/MEMORY.md"] == b"Locker code 4471. Dentist on Friday.\n"
    assert await runtime.status(user) == RuntimeState.STOPPED

    second = await runtime.wake(user)
    assert second.instance != spare and second.token(KEYRING) != endpoint.token(KEYRING)
    assert (_state_dir(cluster, second.instance, user) / "workspace" / "MEMORY.md").read_text() == \
        "Locker code 4471. Dentist on Friday.\n"

    await runtime.apply(spec.model_copy(update={"agent_name": "Orion"}))
    config = json.loads(_run(cluster, second.instance).config_path.read_text())
    assert config["agents"]["entries"][agent_id(user)]["name"] == "Orion"
    assert "Orion" in (_state_dir(cluster, second.instance, user) / "workspace" / "SOUL.md").read_text()

    key = await runtime.archive(user, cluster.store)
    assert key == archive_key(user) and await runtime.status(user) == RuntimeState.ABSENT
    assert await cluster.api.read("NetworkPolicy", UserNames(user).base) is None
    await runtime.restore(user, cluster.store, key)
    await runtime.apply(spec)
    third = await runtime.wake(user)
    assert (_state_dir(cluster, third.instance, user) / "workspace" / "MEMORY.md").exists()
    assert not await runtime.export_memory(user, cluster.store), "the export's source is the saved state"

    await runtime.delete(user)
    await runtime.delete(user)  # 404s are success
    assert await runtime.status(user) == RuntimeState.ABSENT
    assert await cluster.api.read("Pod", third.instance) is None


async def test_two_wakes_racing_for_one_user_share_one_pod(cluster: Cluster) -> None:
    settings = _cluster(spares=2)
    first, second = await cluster.runtime(settings), await cluster.runtime(settings)  # two workers
    spec = AgentSpec(user_id=uuid.uuid4(), agent_name="Nova")
    await first.create(spec)
    await cluster.ready_spares(first, 2)
    a, b = await asyncio.gather(first.wake(spec.user_id), second.wake(spec.user_id))
    assert a == b, "both wakes answer with the same pod"
    rows = await cluster.rows(settings.pool)
    assert [r.name for r in rows if r.user_id == spec.user_id] == [a.instance]
    assert sum(1 for r in rows if r.user_id is not None) == 1, "the other spare was not taken"

    async def loaded() -> list[str]:
        return [name for name, gateway in cluster.gateways.items()
                if any(m.endswith(agent_id(spec.user_id)) for m, _ in gateway.turns)]

    async def warmed_up() -> bool:
        return bool(await loaded())

    await until(warmed_up, "the woken agent's warm-up turn")
    assert await loaded() == [a.instance], "only one pod ever loaded the agent (and was warmed up)"


async def test_a_spare_dying_mid_claim_is_discarded_and_another_serves(cluster: Cluster) -> None:
    runtime = await cluster.runtime(_cluster(spares=2))
    spec = AgentSpec(user_id=uuid.uuid4(), agent_name="Nova")
    await runtime.create(spec)
    await cluster.ready_spares(runtime, 2)
    claim, killed = runtime.claims.claim, []

    async def claim_then_die(user_id: uuid.UUID) -> Any:
        got = await claim(user_id)
        if got is not None and not killed:
            killed.append(got.name)
            await cluster.kubelet.kill(got.name)  # its node went away between the claim and the load
        return got

    runtime.claims.claim = claim_then_die  # type: ignore[method-assign]
    endpoint = await runtime.wake(spec.user_id)
    assert killed and endpoint.instance != killed[0]
    assert await _chat(endpoint.base_url, endpoint.token(KEYRING), spec.user_id) == "ok"
    assert await cluster.api.read("Pod", killed[0]) is None, "the dead spare was deleted"
    assert killed[0] not in [r.name for r in await cluster.rows(runtime.cluster.pool)]
    await cluster.ready_spares(runtime, 2)  # and replaced, with the claimed one


async def test_a_pod_lost_while_serving_is_replaced_on_the_next_wake(cluster: Cluster, tmp_path: Path) -> None:
    runtime = await cluster.runtime(_cluster(spares=1))
    spec = AgentSpec(user_id=uuid.uuid4(), agent_name="Nova")
    await runtime.create(spec)
    await cluster.ready_spares(runtime, 1)
    first = await runtime.wake(spec.user_id)
    (_state_dir(cluster, first.instance, spec.user_id) / "workspace" / "MEMORY.md").write_text("checkpointed\n")
    await runtime.pause(spec.user_id)  # Idle: a checkpoint
    await cluster.kubelet.kill(first.instance)
    second = await runtime.wake(spec.user_id)
    assert second.instance != first.instance
    assert (_state_dir(cluster, second.instance, spec.user_id) / "workspace" / "MEMORY.md").read_text() == "checkpointed\n"


async def test_the_loader_serves_one_agent_to_its_own_platform_only(cluster: Cluster) -> None:
    runtime = await cluster.runtime(_cluster(spares=1))
    spec = AgentSpec(user_id=uuid.uuid4(), agent_name="Nova")
    await runtime.create(spec)
    await cluster.ready_spares(runtime, 1)
    endpoint = await runtime.wake(spec.user_id)
    address: PodAddress = cluster.kubelet.address(endpoint.instance)
    loader = f"http://127.0.0.1:{address.loader_port}"
    token = {"Authorization": f"Bearer {endpoint.token(KEYRING)}"}
    other = {"agent": agent_id(uuid.uuid4()), "config": {}, "state_url": None}
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.post(f"{loader}/load", json=other)).status_code == 401
        assert (await http.post(f"{loader}/load", json=other, headers={"Authorization": "Bearer nope"})).status_code == 401
        assert (await http.post(f"{loader}/load", json=other, headers=token)).status_code == 409, "never a second user"
        assert (await http.post(f"{loader}/save", json={"agent": other["agent"], "url": "http://x"},
                                headers=token)).status_code == 409
        escape = {"agent": agent_id(spec.user_id), "config": {}, "files": {"../../config/openclaw.json": "{}"}}
        assert (await http.post(f"{loader}/config", json=escape, headers=token)).status_code == 400
        assert (await http.post(f"{loader}/load", content=b"not json", headers=token)).status_code == 400
        assert (await http.get(f"{loader}/healthz")).json() == {"loaded": agent_id(spec.user_id)}


async def test_claims_are_exclusive_under_concurrency(sessions: async_sessionmaker[AsyncSession]) -> None:
    claims = PodClaims(sessions, f"pool-{secrets.token_hex(3)}")
    names = iter(f"agent-{i:012x}" for i in range(100))
    added = await claims.add_spares(5, lambda: next(names), KEYRING.kid)
    assert len(added) == 5 and await claims.add_spares(5, lambda: next(names), KEYRING.kid) == [], "no overshoot"
    for name in added:
        await claims.mark_ready(name)
    users = [uuid.uuid4() for _ in range(8)]
    got = await asyncio.gather(*(claims.claim(u) for u in users))
    taken = [c.name for c in got if c is not None]
    assert len(taken) == 5 and len(set(taken)) == 5, "each ready pod went to one user"
    assert sum(c is None for c in got) == 3, "the others found no spare"
    winner = next(u for u, c in zip(users, got) if c is not None)
    again = await claims.claim(winner)
    assert again is not None and again.name in taken and not again.new, "a repeated claim finds its own pod"
    counts = await claims.counts()
    assert counts[PodState.LOADING] == 5 and counts[PodState.READY] == 0

