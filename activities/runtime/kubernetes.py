"""The Kubernetes AgentRuntime: per user, a StatefulSet scaled 1 (awake) or 0 (asleep) over its own PVC.

Sleep keeps the PVC; wake scales up and waits for readiness; archive tars the volume into the
archive bucket with a Job, then deletes workload and PVC; restore recreates the PVC and unpacks it.
Every call is idempotent under retries: 409 on create updates in place, 404 on delete is success.
Kubernetes cannot freeze a pod, so Idle (pause) keeps it running until Sleep.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from activities.runtime import k8s_manifests as manifests
from activities.runtime.k8s_manifests import AgentNames, ClusterSettings
from activities.runtime.openclaw_config import (
    GATEWAY_PORT,
    ModelProvider,
    hide_mcp_headers,
    render_config,
    with_agent,
    with_mcp_servers,
)
from core.ports import AgentEndpoint, AgentSpec, ArchiveStore, RuntimeState, archive_key, export_key
from core.tokens import Keyring

log = logging.getLogger(__name__)

PROVIDER_KEY_ENV = "DEEPCLAW_LLM_API_KEY"


class ClusterStatus(Protocol):
    """How the runtime learns what controllers did (pods ready, Jobs finished)."""

    async def workload_ready(self, names: AgentNames) -> bool: ...
    async def job_finished(self, names: AgentNames, action: str) -> bool | None: ...  # None: still running


class KubeApi:
    """The official client's blocking calls, run in threads, with Kubernetes' idempotency rules."""

    def __init__(self, api_client: k8s.ApiClient, namespace: str) -> None:
        self.api_client = api_client
        self.namespace = namespace
        self.core = k8s.CoreV1Api(api_client)
        self.apps = k8s.AppsV1Api(api_client)
        self.net = k8s.NetworkingV1Api(api_client)
        self.batch = k8s.BatchV1Api(api_client)

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    def _ops(self, kind: str) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
        table = {
            "Secret": (self.core.create_namespaced_secret, self.core.patch_namespaced_secret,
                       self.core.delete_namespaced_secret, self.core.read_namespaced_secret),
            "ConfigMap": (self.core.create_namespaced_config_map, self.core.patch_namespaced_config_map,
                          self.core.delete_namespaced_config_map, self.core.read_namespaced_config_map),
            "PersistentVolumeClaim": (self.core.create_namespaced_persistent_volume_claim, None,
                                      self.core.delete_namespaced_persistent_volume_claim,
                                      self.core.read_namespaced_persistent_volume_claim),
            "Service": (self.core.create_namespaced_service, self.core.patch_namespaced_service,
                        self.core.delete_namespaced_service, self.core.read_namespaced_service),
            "NetworkPolicy": (self.net.create_namespaced_network_policy, self.net.patch_namespaced_network_policy,
                              self.net.delete_namespaced_network_policy, self.net.read_namespaced_network_policy),
            "StatefulSet": (self.apps.create_namespaced_stateful_set, self.apps.patch_namespaced_stateful_set,
                            self.apps.delete_namespaced_stateful_set, self.apps.read_namespaced_stateful_set),
            "Job": (self.batch.create_namespaced_job, None, self.batch.delete_namespaced_job,
                    self.batch.read_namespaced_job),
            "Pod": (None, None, None, self.core.read_namespaced_pod),  # read only: where an agent runs
        }
        return table[kind]  # type: ignore[return-value]

    async def apply(self, manifest: dict[str, Any], *, replace: bool = True) -> None:
        """Create, or on 409 patch in place (PVCs and Jobs are immutable and stay as they are)."""
        create, update, _, _ = self._ops(manifest["kind"])
        try:
            await self.call(create, self.namespace, manifest)
        except ApiException as error:
            if error.status != 409:
                raise
            if replace and update is not None:
                await self.call(update, manifest["metadata"]["name"], self.namespace, manifest)

    async def delete(self, kind: str, name: str) -> None:
        _, _, delete, _ = self._ops(kind)
        try:
            await self.call(delete, name, self.namespace, propagation_policy="Background")
        except ApiException as error:
            if error.status != 404:
                raise

    async def read(self, kind: str, name: str) -> Any | None:
        _, _, _, read = self._ops(kind)
        try:
            return await self.call(read, name, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    async def scale(self, name: str, replicas: int) -> bool:
        """False if the StatefulSet does not exist."""
        try:
            await self.call(self.apps.patch_namespaced_stateful_set, name, self.namespace,
                            {"spec": {"replicas": replicas}})
            return True
        except ApiException as error:
            if error.status == 404:
                return False
            raise


class ApiStatus:
    """Reads the status that the StatefulSet and Job controllers write."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api

    async def workload_ready(self, names: AgentNames) -> bool:
        workload = await self.api.read("StatefulSet", names.base)
        return bool(workload and workload.status and (workload.status.ready_replicas or 0) >= 1)

    async def job_finished(self, names: AgentNames, action: str) -> bool | None:
        job = await self.api.read("Job", names.job(action))
        if job is None or job.status is None:
            return None
        if job.status.succeeded:
            return True
        if job.status.failed and job.status.failed > (job.spec.backoff_limit or 0):
            return False
        return None


class KubernetesAgentRuntime:
    def __init__(self, api_client: k8s.ApiClient, cluster: ClusterSettings, model: ModelProvider, *, keyring: Keyring,
                 status: ClusterStatus | None = None, poll_s: float = 1.0, ready_timeout_s: float = 300.0) -> None:
        self.keyring = keyring  # gateway tokens are derived from it (AgentEndpoint.token)
        self.api = KubeApi(api_client, cluster.namespace)
        self.cluster = cluster
        self.model = model
        self.status_reader = status or ApiStatus(self.api)
        self.poll_s = poll_s
        self.ready_timeout_s = ready_timeout_s

    async def start(self) -> None:
        pass

    def pool(self) -> dict[str, int]:
        return {}  # no warm spares yet: each wake scales the user's StatefulSet up

    async def close(self) -> None:
        await asyncio.to_thread(self.api.api_client.close)

    def _config(self, spec: AgentSpec) -> tuple[dict[str, Any], dict[str, str]]:
        """The rendered config, and the secret values it refers to by env var (kept in the Secret)."""
        config = render_config(port=GATEWAY_PORT, bind="lan", model=self.model, api_key_env=PROVIDER_KEY_ENV)
        config = with_agent(config, spec.user_id, spec.agent_name, f"{manifests.STATE_DIR}/workspace")
        config = with_mcp_servers(config, spec.mcp_servers)
        return config, hide_mcp_headers(config)

    def manifests(self, spec: AgentSpec, *, gateway_token: str, replicas: int = 0) -> list[dict[str, Any]]:
        names, cluster = AgentNames(spec.user_id), self.cluster
        config, hidden = self._config(spec)
        return [
            manifests.secret(names, cluster, gateway_token=gateway_token, provider_key=self.model.api_key,
                             extra_env=hidden),
            manifests.config_map(names, cluster, config),
            manifests.pvc(names, cluster),
            manifests.service(names, cluster),
            manifests.network_policy(names, cluster),
            manifests.stateful_set(names, cluster, replicas=replicas, extra_env=list(hidden)),
        ]

    def _endpoint(self, user_id: uuid.UUID) -> AgentEndpoint:
        """One gateway per user at a stable in-cluster URL; the user is the instance."""
        names = AgentNames(user_id)
        return AgentEndpoint(base_url=f"http://{names.base}.{self.cluster.namespace}.svc.cluster.local:{GATEWAY_PORT}",
                             instance=user_id.hex)

    async def create(self, spec: AgentSpec) -> None:
        names = AgentNames(spec.user_id)
        workload = await self.api.read("StatefulSet", names.base)
        replicas = workload.spec.replicas if workload and workload.spec else 0
        # The token is derived, so it is the same on every retry and settings change.
        token = self._endpoint(spec.user_id).token(self.keyring)
        for manifest in self.manifests(spec, gateway_token=token, replicas=replicas):
            await self.api.apply(manifest, replace=True)

    async def apply(self, spec: AgentSpec) -> None:
        await self.create(spec)  # ConfigMap replaced in place; OpenClaw hot-reloads it

    async def _wait(self, check: Callable[[], Any], what: str) -> Any:
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            result = await check()
            if result is not None and result is not False:
                return result
            if result is False and what.startswith("job"):
                raise RuntimeError(f"{what} failed")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not done after {self.ready_timeout_s:.0f}s")
            await asyncio.sleep(self.poll_s)

    async def wake(self, user_id: uuid.UUID) -> AgentEndpoint:
        names = AgentNames(user_id)
        if not await self.api.scale(names.base, 1):
            raise LookupError(f"no agent workload for user {user_id}")
        await self._wait(lambda: self._ready_or_none(names), f"agent {names.base} readiness")
        return self._endpoint(user_id)

    async def _ready_or_none(self, names: AgentNames) -> bool | None:
        return True if await self.status_reader.workload_ready(names) else None

    async def pause(self, user_id: uuid.UUID) -> None:
        """Kubernetes cannot freeze a pod; an Idle agent keeps running until it sleeps."""

    async def sleep(self, user_id: uuid.UUID) -> None:
        await self.api.scale(AgentNames(user_id).base, 0)

    async def _run_job(self, names: AgentNames, action: str, key: str, node: str | None = None) -> None:
        await self.api.apply(manifests.archive_job(names, self.cluster, action=action, key=key, node=node),
                             replace=False)
        await self._wait(lambda: self.status_reader.job_finished(names, action), f"job {names.job(action)}")
        await self.api.delete("Job", names.job(action))

    async def archive(self, user_id: uuid.UUID, store: ArchiveStore) -> str:
        """The Job writes straight to the archive bucket, at the key the S3 ArchiveStore reads."""
        names = AgentNames(user_id)
        if await self.api.read("PersistentVolumeClaim", names.pvc) is None:
            raise LookupError(f"no agent volume for user {user_id}")
        key = archive_key(user_id)
        await self.api.delete("StatefulSet", names.base)  # the volume must be free for the Job
        await self._run_job(names, "archive", key)
        for kind, name in (("Service", names.base), ("NetworkPolicy", names.base), ("ConfigMap", names.config),
                           ("PersistentVolumeClaim", names.pvc)):
            await self.api.delete(kind, name)
        return key

    async def restore(self, user_id: uuid.UUID, store: ArchiveStore, key: str) -> None:
        """Recreates the volume and unpacks the archive; apply(spec) then recreates the workload."""
        if not await store.exists(key):
            raise FileNotFoundError(f"no archive {key!r}")
        names = AgentNames(user_id)
        await self.api.apply(manifests.pvc(names, self.cluster), replace=False)
        await self._run_job(names, "restore", key)

    async def export_memory(self, user_id: uuid.UUID, store: ArchiveStore) -> bool:
        """A Job copies the workspace from the user's volume to the bucket, at the key the S3
        ArchiveStore reads; while the agent runs, on its pod's node (the volume is attached there)."""
        names = AgentNames(user_id)
        if await self.api.read("PersistentVolumeClaim", names.pvc) is None:
            return False  # archived (its archive holds the files) or gone
        pod = await self.api.read("Pod", names.pod)
        node = pod.spec.node_name if pod is not None and pod.spec is not None else None
        await self._run_job(names, "export", export_key(user_id), node)
        return True

    async def delete(self, user_id: uuid.UUID) -> None:
        names = AgentNames(user_id)
        for kind, name in (("StatefulSet", names.base), ("Service", names.base), ("NetworkPolicy", names.base),
                           ("ConfigMap", names.config), ("Secret", names.secret), ("PersistentVolumeClaim", names.pvc)):
            await self.api.delete(kind, name)

    async def status(self, user_id: uuid.UUID) -> RuntimeState:
        workload = await self.api.read("StatefulSet", AgentNames(user_id).base)
        if workload is None:
            return RuntimeState.ABSENT
        return RuntimeState.RUNNING if (workload.spec.replicas or 0) > 0 else RuntimeState.STOPPED
