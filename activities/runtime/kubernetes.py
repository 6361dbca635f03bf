"""The Kubernetes AgentRuntime: warm spare pods, claimed in PostgreSQL, loaded with the user's state.

The wake follows the design both runtimes share (activities/runtime/wake.py). Here:
- Spares: pods booted with OpenClaw and no user (k8s_manifests.spare_pod), `spares` of them kept
  per node pool by every worker's replenisher, each with a gateway token of its own. A row per pod in
  `agent_pods` says what it is (pod_claims.py).
- Wake: claim a ready spare in PostgreSQL (FOR UPDATE SKIP LOCKED, one user per pod, once), label
  the pod as the user's (their NetworkPolicy now applies) while its loader sidecar fetches the
  user's state from the archive store by a presigned URL and writes their agent's config, which
  OpenClaw hot-reloads. A spare that fails on the way is deleted and the next one tried.
- Idle: pods cannot be frozen; the agent's state is checkpointed to the store (a pod lost while
  Idle loses nothing) and the pod keeps running until Sleep.
- Sleep: the loader saves the state to the store, then the pod is deleted. A sleeping user holds no
  pod and no volume: their state is one object, `archive_key(user)`.
- Archive: the state is already in the store; the user's spec Secret and policy go. Restore checks
  the archive is there; the next apply(spec) recreates them.
Every call is idempotent under retries: 409 on create patches in place, 404 on delete is success.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activities.runtime import k8s_manifests as manifests
from activities.runtime.k8s_manifests import ClusterSettings, UserNames
from activities.runtime.openclaw_config import GATEWAY_PORT, ModelProvider, agent_id, render_config, with_agent, with_mcp_servers
from activities.runtime.pod_claims import Claim, PodClaims, PodState
from activities.runtime.wake import (Gateway, LaterWarmUps, SpareFailed, SpareWake, personality_prompt, spare_config,
                                     wait_listed, warm_up)
from core.ports import AgentEndpoint, AgentSpec, ArchiveStore, RuntimeState, archive_key
from core.tokens import Keyring

log = logging.getLogger(__name__)

LOAD_TIMEOUT_S = 60.0  # a claim still loading after this is a wake that died (its worker went away)
CLAIM_TIMEOUT_S = 120.0  # how long a wake waits for a spare when none is ready
READY_PROBE_TIMEOUT_S = 1.0  # a serving gateway answers /readyz in milliseconds


@dataclass(frozen=True)
class PodAddress:
    """Where a pod's gateway and loader are reached, and how its gateway binds (a cluster gives every
    pod its own IP: the same ports, all interfaces; a simulation on one host gives it ports of its own)."""

    host: str
    gateway_port: int = GATEWAY_PORT
    loader_port: int = manifests.LOADER_PORT
    bind: str = "lan"


class ClusterStatus(Protocol):
    """Where pods are reached and whether they are ready (what the kubelet reports)."""

    def address(self, pod: str) -> PodAddress: ...
    async def pod_ready(self, pod: str) -> bool | None: ...  # None: not yet; False: gone or failed


class StateUrls(Protocol):
    """Presigned URLs into the archive store: a pod reaches its user's state object, nothing else."""

    def state_url(self, key: str, *, upload: bool) -> str: ...


class KubeApi:
    """The official client's blocking calls, run in threads, with Kubernetes' idempotency rules."""

    KINDS = ("Secret", "ConfigMap", "Service", "NetworkPolicy", "Pod")  # the worker's Role grants these

    def __init__(self, api_client: k8s.ApiClient, namespace: str) -> None:
        self.api_client = api_client
        self.namespace = namespace
        self.core = k8s.CoreV1Api(api_client)
        self.net = k8s.NetworkingV1Api(api_client)

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    def _ops(self, kind: str) -> tuple[Callable[..., Any], ...]:
        core, net = self.core, self.net
        return {
            "Secret": (core.create_namespaced_secret, core.patch_namespaced_secret, core.delete_namespaced_secret,
                       core.read_namespaced_secret),
            "ConfigMap": (core.create_namespaced_config_map, core.patch_namespaced_config_map,
                          core.delete_namespaced_config_map, core.read_namespaced_config_map),
            "Service": (core.create_namespaced_service, core.patch_namespaced_service, core.delete_namespaced_service,
                        core.read_namespaced_service),
            "NetworkPolicy": (net.create_namespaced_network_policy, net.patch_namespaced_network_policy,
                              net.delete_namespaced_network_policy, net.read_namespaced_network_policy),
            "Pod": (core.create_namespaced_pod, core.patch_namespaced_pod, core.delete_namespaced_pod,
                    core.read_namespaced_pod),
        }[kind]

    async def apply(self, manifest: dict[str, Any]) -> Any:
        """Create, or on 409 patch in place."""
        create, patch, _, _ = self._ops(manifest["kind"])
        try:
            return await self.call(create, self.namespace, manifest)
        except ApiException as error:
            if error.status != 409:
                raise
            return await self.call(patch, manifest["metadata"]["name"], self.namespace, manifest)

    async def patch(self, kind: str, name: str, body: dict[str, Any]) -> bool:
        """False if the object does not exist."""
        try:
            await self.call(self._ops(kind)[1], name, self.namespace, body)
            return True
        except ApiException as error:
            if error.status == 404:
                return False
            raise

    async def delete(self, kind: str, name: str) -> None:
        try:
            await self.call(self._ops(kind)[2], name, self.namespace, propagation_policy="Background")
        except ApiException as error:
            if error.status != 404:
                raise

    async def read(self, kind: str, name: str) -> Any | None:
        try:
            return await self.call(self._ops(kind)[3], name, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise


class ApiStatus:
    """The pod's Ready condition as the kubelet writes it; its DNS name through the headless Service."""

    def __init__(self, api: KubeApi, cluster: ClusterSettings) -> None:
        self.api = api
        self.cluster = cluster

    def address(self, pod: str) -> PodAddress:
        return PodAddress(manifests.pod_host(pod, self.cluster))

    async def pod_ready(self, pod: str) -> bool | None:
        found = await self.api.read("Pod", pod)
        if found is None or found.metadata.deletion_timestamp is not None:
            return False
        status = found.status
        if status is None:
            return None
        if status.phase in ("Failed", "Succeeded"):
            return False
        return True if any(c.type == "Ready" and c.status == "True" for c in status.conditions or []) else None


class KubernetesAgentRuntime:
    def __init__(self, api_client: k8s.ApiClient, cluster: ClusterSettings, model: ModelProvider, *, keyring: Keyring,
                 sessions: async_sessionmaker[AsyncSession], urls: StateUrls, status: ClusterStatus | None = None,
                 poll_s: float = 1.0, claim_timeout_s: float = CLAIM_TIMEOUT_S, load_timeout_s: float = LOAD_TIMEOUT_S) -> None:
        self.keyring = keyring  # gateway tokens are derived from it (AgentEndpoint.token)
        self.api = KubeApi(api_client, cluster.namespace)
        self.cluster = cluster
        self.model = model
        self.urls = urls
        self.claims = PodClaims(sessions, cluster.pool)
        self.status_reader = status or ApiStatus(self.api, cluster)
        self.poll_s = poll_s
        self.claim_timeout_s = claim_timeout_s
        self.load_timeout_s = load_timeout_s
        self._locks: dict[uuid.UUID, asyncio.Lock] = {}
        self._warming: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        self.warm_ups = LaterWarmUps()
        self._keeper: asyncio.Task[None] | None = None
        self._replenishing: asyncio.Task[None] | None = None
        self._pool_counts: dict[str, int] = {}
        # One client for the pods' gateways and loaders (plain HTTP inside the cluster): a client per
        # request would build its connection pool and TLS context every time.
        self._pods_http = httpx.AsyncClient(timeout=90)

    # ---- spares -----------------------------------------------------------------------------

    def _config(self, address: PodAddress) -> dict[str, Any]:
        # (Sessions are cleaned up by the loader at Sleep, before it saves the state.)
        return spare_config(render_config(port=address.gateway_port, bind=address.bind, model=self.model,
                                          api_key_env=manifests.PROVIDER_KEY_ENV))

    async def start(self) -> None:
        base = self._config(PodAddress("any"))  # every pod's own network: the ports and bind of a cluster
        for manifest in manifests.shared_objects(self.cluster, base, self.model.api_key):
            await self.api.apply(manifest)
        self._keeper = asyncio.create_task(self._keep_spares())

    async def _keep_spares(self) -> None:
        while True:
            await self._replenish_logged()
            await asyncio.sleep(self.poll_s)

    async def _replenish_logged(self) -> None:
        try:
            await self.replenish()
        except Exception:  # the API or the database away for a moment: the next round tries again
            log.exception("keeping the spare agent pods failed")

    async def replenish(self) -> None:
        """Spares that became ready are warmed up and offered; failed ones go; missing ones are created."""
        for name, key_id in await self.claims.starting():
            if name in self._warming:
                continue
            self._warming.add(name)  # (before any await: replenish runs from the loop and from wakes)
            ready: bool | None = None
            try:
                ready = await self.status_reader.pod_ready(name)
            finally:
                if not ready:
                    self._warming.discard(name)
            if ready:
                self._spawn(self._offer(name, key_id))
            elif ready is False:
                log.warning("spare agent pod %s failed before it was ready; replacing it", name)
                await self._remove(name)
        new_name = lambda: f"agent-{secrets.token_hex(6)}"  # noqa: E731
        for name in await self.claims.add_spares(self.cluster.spares, new_name, self.keyring.kid):
            await self._create_pod(name)
        self._pool_counts = {state.value: count for state, count in (await self.claims.counts()).items()}

    def _replenish_soon(self) -> None:
        """A round of replenish now (after a claim, or while a wake waits), unless one is running."""
        if self._replenishing is None or self._replenishing.done():
            self._replenishing = asyncio.create_task(self._replenish_logged())
            self._background.add(self._replenishing)
            self._replenishing.add_done_callback(self._background.discard)

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _offer(self, name: str, key_id: str | None) -> None:
        """A ready pod's first turn is paid before anyone waits on it; then it can be claimed."""
        try:
            await warm_up(self._gateway(name, key_id))
            await self.claims.mark_ready(name)
        except httpx.HTTPError as error:
            log.warning("spare agent pod %s did not answer its warm-up (%s); replacing it", name, error)
            await self._remove(name)
        finally:
            self._warming.discard(name)

    async def _create_pod(self, name: str) -> None:
        token = self._endpoint(name, self.keyring.kid).token(self.keyring)
        try:
            await self.api.apply(manifests.token_secret(name, self.cluster, token))
            pod = await self.api.apply(manifests.spare_pod(name, self.cluster))
            if pod.metadata.uid:  # (an API server sets it; an emulator may not, and _remove deletes both anyway)
                await self.api.patch("Secret", manifests.token_secret_name(name), manifests.owned_by(name, pod.metadata.uid))
        except Exception:
            await self._remove(name)
            raise

    async def _remove(self, name: str) -> None:
        """A pod leaves for good: the pod, its token and its row."""
        await self.api.delete("Pod", name)
        await self.api.delete("Secret", manifests.token_secret_name(name))  # the garbage collector would too
        await self.claims.drop(name)

    def pool(self) -> dict[str, int]:
        counts = self._pool_counts
        return {"spares_ready": counts.get("ready", 0), "spares_starting": counts.get("starting", 0),
                "spares_target": self.cluster.spares}

    async def close(self) -> None:
        await self.warm_ups.close()
        tasks = [t for t in (self._keeper, *self._background) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._pods_http.aclose()
        await asyncio.to_thread(self.api.api_client.close)

    # ---- addresses ------------------------------------------------------------------------------

    def _endpoint(self, pod: str, key_id: str | None) -> AgentEndpoint:
        """The pod's stable DNS name; the pod is the instance (a user's next pod has another token)."""
        address = self.status_reader.address(pod)
        return AgentEndpoint(base_url=f"http://{address.host}:{address.gateway_port}", instance=pod, key_id=key_id)

    def _gateway(self, pod: str, key_id: str | None) -> Gateway:
        endpoint = self._endpoint(pod, key_id)
        return Gateway(endpoint.base_url, endpoint.token(self.keyring))

    async def _loader(self, pod: str, key_id: str | None, path: str, body: dict[str, Any]) -> dict[str, Any]:
        gateway = self._gateway(pod, key_id)
        address = self.status_reader.address(pod)
        url = f"http://{address.host}:{address.loader_port}{path}"
        response = await self._pods_http.post(url, headers=gateway.headers(), json=body)
        if response.status_code != 200:
            raise SpareFailed(f"loader of {pod} answered {response.status_code} to {path}: {response.text[:200]}")
        return response.json()

    # ---- the user's agent -------------------------------------------------------------------------

    def _lock(self, user_id: uuid.UUID) -> asyncio.Lock:
        return self._locks.setdefault(user_id, asyncio.Lock())

    async def _spec(self, user_id: uuid.UUID) -> AgentSpec:
        secret = await self.api.read("Secret", UserNames(user_id).spec)
        if secret is None:
            raise LookupError(f"no agent for user {user_id}")
        return AgentSpec.model_validate_json(base64.b64decode(secret.data["spec.json"]))

    def _agent_config(self, spec: AgentSpec, pod: str) -> dict[str, Any]:
        ident = agent_id(spec.user_id)
        workspace = f"{manifests.STATE_DIR}/agents/{ident}/workspace"
        config = with_agent(self._config(self.status_reader.address(pod)), spec.user_id, spec.agent_name, workspace)
        # Its MCP servers' headers are written into the pod's config: the pod is this user's alone.
        return with_mcp_servers(config, spec.mcp_servers)

    def _agent_files(self, spec: AgentSpec) -> dict[str, str]:
        return {"workspace/SOUL.md": personality_prompt(spec)}

    async def create(self, spec: AgentSpec) -> None:
        await self.api.apply(manifests.user_spec(spec.user_id, self.cluster, spec.model_dump_json()))
        await self.api.apply(manifests.user_policy(spec.user_id, self.cluster))

    async def apply(self, spec: AgentSpec) -> None:
        await self.create(spec)
        async with self._lock(spec.user_id):
            held = await self.claims.held_by(spec.user_id)
            if held is None or held.state is not PodState.SERVING:
                return  # the next wake loads it
            await self._loader(held.name, held.key_id, "/config", {
                "agent": agent_id(spec.user_id), "config": self._agent_config(spec, held.name),
                "files": self._agent_files(spec)})
            await wait_listed(self._gateway(held.name, held.key_id), agent_id(spec.user_id))

    async def wake(self, user_id: uuid.UUID) -> AgentEndpoint:
        async with self._lock(user_id):
            deadline = time.monotonic() + self.claim_timeout_s
            while True:
                held = await self.claims.held_by(user_id)
                if held is None:  # the spec is read only here: a wake from Idle is one database read and one GET
                    woken = await self._wake_on_spare(await self._spec(user_id), deadline)
                    if woken is not None:
                        return self._endpoint(woken.name, woken.key_id)
                elif held.state is PodState.SERVING:
                    endpoint = self._endpoint(held.name, held.key_id)
                    if await self._answers(endpoint):  # from Idle: no API round trip while it serves
                        return endpoint
                    ready = await self.status_reader.pod_ready(held.name)
                    if ready:
                        return endpoint
                    if ready is False:
                        log.warning("the pod %s of user %s is gone; waking the agent on another", held.name, user_id)
                        await self._remove(held.name)
                    elif time.monotonic() > deadline:
                        raise TimeoutError(f"the pod {held.name} of user {user_id} did not become ready again")
                    else:  # a container restarting: the user's state and config are on the pod's emptyDirs
                        await asyncio.sleep(0.2)
                elif _age(held) > self.load_timeout_s:  # loading, by a wake that died on the way
                    await self._remove(held.name)
                elif time.monotonic() > deadline:
                    raise TimeoutError(f"user {user_id}'s agent still loading on {held.name}")
                else:  # another wake (another worker's) is loading it: its pod will be ours too
                    await asyncio.sleep(0.05)

    async def _answers(self, endpoint: AgentEndpoint) -> bool:
        """Whether the user's gateway says it is ready, asked directly (what its readiness probe asks,
        without waiting for the kubelet to report it); anything else leaves it to the API's word."""
        try:
            response = await self._pods_http.get(f"{endpoint.base_url}/readyz", timeout=READY_PROBE_TIMEOUT_S)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def _wake_on_spare(self, spec: AgentSpec, deadline: float) -> Claim | None:
        """The user's agent on a spare; None if another wake claimed one for them meanwhile."""
        user_id = spec.user_id

        async def claim() -> Claim:
            while True:
                got = await self.claims.claim(user_id)
                if got is not None:
                    if not got.new:
                        raise _ClaimedElsewhere
                    return got
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no spare agent pod became ready in {self.claim_timeout_s:.0f} s")
                self._replenish_soon()  # nothing ready: make sure one is on its way
                await asyncio.sleep(0.2)

        async def load(got: Claim) -> None:
            # The labels (their NetworkPolicy) and the state's fetch go side by side: the spares'
            # policy allows what a user's does (k8s_manifests._policy, a test ties them), so the
            # order changes nothing the pod may reach, and the wake saves an API round trip. Nobody
            # reaches the agent before both are done (the wake has not returned it yet).
            labelled, result = await asyncio.gather(
                self.api.patch("Pod", got.name, manifests.claimed_labels(user_id)),
                self._loader(got.name, got.key_id, "/load", {
                    "agent": agent_id(user_id), "config": self._agent_config(spec, got.name),
                    "files": self._agent_files(spec), "state_url": self.urls.state_url(archive_key(user_id), upload=False)}),
                return_exceptions=True)
            if isinstance(result, BaseException):
                raise result
            if isinstance(labelled, BaseException):
                raise labelled
            if labelled is False:
                raise SpareFailed(f"pod {got.name} is gone")
            log.info("pod %s loaded user %s's state (%s bytes) in %s ms", got.name, user_id, result.get("bytes"),
                     result.get("state_ms"))

        wake = SpareWake(claim=claim, load=load, gateway=lambda got: self._gateway(got.name, got.key_id),
                         discard=lambda got: self._remove(got.name), warm_ups=self.warm_ups)
        try:
            woken = await wake.wake(user_id)
        except _ClaimedElsewhere:
            return None
        await self.claims.mark_serving(woken.name, user_id)
        self._replenish_soon()
        return woken

    async def _save(self, held: Claim, user_id: uuid.UUID, *, cleanup: bool = False) -> bool:
        """`cleanup`: OpenClaw's session retention first (at Sleep; off any wake's path)."""
        try:
            await self._loader(held.name, held.key_id, "/save", {
                "agent": agent_id(user_id), "url": self.urls.state_url(archive_key(user_id), upload=True),
                "cleanup": cleanup})
            return True
        except (SpareFailed, httpx.HTTPError) as error:
            log.warning("could not save user %s's state from %s (changes since the last save are lost): %s",
                        user_id, held.name, error)
            return False

    async def pause(self, user_id: uuid.UUID) -> None:
        """Pods cannot be frozen: a checkpoint of the state, and the pod runs on until Sleep."""
        async with self._lock(user_id):
            held = await self.claims.held_by(user_id)
            if held is not None and held.state is PodState.SERVING:
                await self._save(held, user_id)

    async def sleep(self, user_id: uuid.UUID) -> None:
        async with self._lock(user_id):
            held = await self.claims.held_by(user_id)
            if held is None:
                return
            if held.state is PodState.SERVING:
                await self._save(held, user_id, cleanup=True)
            await self._remove(held.name)

    async def archive(self, user_id: uuid.UUID, store: ArchiveStore) -> str:
        """The state is in the store already (saved at Sleep); an agent that never woke gets an empty one."""
        await self._spec(user_id)  # LookupError: no such agent
        await self.sleep(user_id)
        key = archive_key(user_id)
        if not await store.exists(key):
            with tempfile.TemporaryDirectory() as tmp:
                empty = Path(tmp) / "state.tar.gz"
                with tarfile.open(empty, "w:gz"):
                    pass
                await store.put(key, empty)
        await self.api.delete("NetworkPolicy", UserNames(user_id).base)
        await self.api.delete("Secret", UserNames(user_id).spec)
        return key

    async def restore(self, user_id: uuid.UUID, store: ArchiveStore, key: str) -> None:
        """The archive is where the next wake fetches it from; apply(spec) then recreates the user's objects."""
        if not await store.exists(key):
            raise FileNotFoundError(f"no archive {key!r}")
        if key != archive_key(user_id):
            with tempfile.TemporaryDirectory() as tmp:
                await store.get(key, Path(tmp) / "state.tar.gz")
                await store.put(archive_key(user_id), Path(tmp) / "state.tar.gz")

    async def export_memory(self, user_id: uuid.UUID, store: ArchiveStore) -> bool:
        """The state in the store is the export's source (whole_state); an awake agent's is saved first."""
        await self.pause(user_id)
        return False

    async def delete(self, user_id: uuid.UUID) -> None:
        async with self._lock(user_id):
            held = await self.claims.held_by(user_id)
            if held is not None:
                await self._remove(held.name)
        await self.api.delete("NetworkPolicy", UserNames(user_id).base)
        await self.api.delete("Secret", UserNames(user_id).spec)

    async def status(self, user_id: uuid.UUID) -> RuntimeState:
        held = await self.claims.held_by(user_id)
        if held is not None and held.state is PodState.SERVING:
            return RuntimeState.RUNNING  # an Idle pod runs on (it cannot be frozen)
        if await self.api.read("Secret", UserNames(user_id).spec) is not None:
            return RuntimeState.STOPPED
        return RuntimeState.ABSENT


class _ClaimedElsewhere(Exception):
    """Another wake took a spare for this user first."""


def _age(claim: Claim) -> float:
    return (datetime.now(UTC) - claim.claimed_at).total_seconds() if claim.claimed_at else 0.0
