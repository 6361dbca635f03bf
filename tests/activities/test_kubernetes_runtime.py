"""The Kubernetes runtime: the real `kubernetes` client against a Kubernetes API emulator on loopback
(kmock), and every manifest checked against the Kubernetes 1.37 schemas (kubernetes-validate, strict)."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from kubernetes import client as k8s

from activities.archive.stores import FolderArchiveStore
from activities.runtime import k8s_manifests as manifests
from activities.runtime.k8s_manifests import AgentNames, ClusterSettings
from activities.runtime.kubernetes import KubeApi, KubernetesAgentRuntime
from activities.runtime.openclaw_config import WARMTH_PRELOAD, ModelProvider, agent_id
from core.ports import AgentSpec, McpServerSpec, RuntimeState, export_key
from core.tokens import Keyring

IMAGE = "ghcr.io/openclaw/openclaw@sha256:" + "a" * 64
ARCHIVER = "amazon/aws-cli@sha256:" + "b" * 64
CLUSTER = ClusterSettings(namespace="users", platform_namespace="deepclaw", image=IMAGE, archiver_image=ARCHIVER,
                          storage_class="do-block-storage", storage_size="2Gi", archive_secret="archive-credentials",
                          archive_bucket="deepclaw-archive", archive_endpoint="https://nyc3.digitaloceanspaces.com")
KEYRING = Keyring.of("test-platform-secret")
MODEL = ModelProvider(base_url="https://api.openai.com/v1", api_key="sk-secret", model="gpt-4.1-mini")


class SimulatedControllers:
    """What the StatefulSet and Job controllers would report: kmock stores objects but runs no controller."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api
        self.jobs: list[str] = []

    async def workload_ready(self, names: AgentNames) -> bool:
        workload = await self.api.read("StatefulSet", names.base)
        return bool(workload and workload.spec.replicas)

    async def job_finished(self, names: AgentNames, action: str) -> bool | None:
        job = await self.api.read("Job", names.job(action))
        if job is not None:
            self.jobs.append(job.metadata.name)
        return True if job is not None else None


@pytest.fixture
async def runtime(kmock: Any) -> KubernetesAgentRuntime:
    configuration = k8s.Configuration(host=str(kmock.url).rstrip("/"))
    api_client = k8s.ApiClient(configuration)
    runtime = KubernetesAgentRuntime(api_client, CLUSTER, MODEL, keyring=KEYRING, poll_s=0.01, ready_timeout_s=5)
    runtime.status_reader = SimulatedControllers(runtime.api)
    return runtime


def test_every_manifest_is_valid_and_hardened() -> None:
    platform = McpServerSpec(name="deepclaw", url="https://deepclaw.example.com/mcp",
                             headers={"Authorization": "Bearer mcp-secret-token"})
    spec = AgentSpec(user_id=uuid.uuid4(), agent_name="Nova", mcp_servers=[platform])
    names = AgentNames(spec.user_id)
    runtime = KubernetesAgentRuntime(k8s.ApiClient(k8s.Configuration(host="http://127.0.0.1:1")), CLUSTER, MODEL, keyring=KEYRING)
    rendered = runtime.manifests(spec, gateway_token="t0k", replicas=1)
    rendered += [manifests.archive_job(names, CLUSTER, action=a, key="agents/x/state.tar.gz") for a in ("archive", "restore")]
    rendered.append(manifests.archive_job(names, CLUSTER, action="export", key=export_key(spec.user_id), node="pool-a-1"))
    for manifest in rendered:
        kubernetes_validate.validate(manifest, "1.37.0", strict=True)
    by_kind = {m["kind"]: m for m in rendered}
    pod = by_kind["StatefulSet"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == IMAGE and "@sha256:" in container["image"]
    assert container["securityContext"]["runAsNonRoot"] and container["securityContext"]["readOnlyRootFilesystem"]
    assert container["resources"]["limits"]["memory"] == "2Gi"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"name": "state", "mountPath": "/home/node/.openclaw"} in container["volumeMounts"]
    # The warmth preload travels in the ConfigMap, and NODE_OPTIONS loads it from there.
    assert by_kind["ConfigMap"]["data"][WARMTH_PRELOAD.name] == WARMTH_PRELOAD.read_text()
    node_options = next(e["value"] for e in container["env"] if e["name"] == "NODE_OPTIONS")
    assert node_options.endswith(f"--import file://{manifests.CONFIG_DIR}/{WARMTH_PRELOAD.name}")
    config = json.loads(by_kind["ConfigMap"]["data"]["openclaw.json"])
    assert config["models"]["providers"]["deepclaw"]["apiKey"] == "${DEEPCLAW_LLM_API_KEY}", "no key in the ConfigMap"
    assert agent_id(spec.user_id) in config["agents"]["entries"] and config["gateway"]["bind"] == "lan"
    assert "sk-secret" not in json.dumps([by_kind["ConfigMap"], by_kind["StatefulSet"]])
    # MCP bearer tokens live in the Secret; the config names them by env var.
    mcp = config["mcp"]["servers"]["deepclaw"]
    assert mcp["url"] == platform.url and mcp["headers"]["Authorization"] == "${DEEPCLAW_MCP_HEADER_0}"
    assert "mcp-secret-token" not in json.dumps([by_kind["ConfigMap"], by_kind["StatefulSet"]])
    stored = base64.b64decode(by_kind["Secret"]["data"]["deepclaw-mcp-header-0"]).decode()
    assert stored == "Bearer mcp-secret-token"
    assert {"name": "DEEPCLAW_MCP_HEADER_0", "valueFrom": {"secretKeyRef": {
        "name": names.secret, "key": "deepclaw-mcp-header-0"}}} in container["env"]
    policy = by_kind["NetworkPolicy"]["spec"]
    assert policy["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "deepclaw"}
    internet = policy["egress"][1]["to"][0]["ipBlock"]
    assert internet["cidr"] == "0.0.0.0/0" and "10.0.0.0/8" in internet["except"]
    # The memory export reads the volume only, on the node where the running agent has it attached.
    export = rendered[-1]["spec"]["template"]["spec"]
    assert export["nodeName"] == "pool-a-1" and export["containers"][0]["volumeMounts"][0]["readOnly"] is True
    assert "tar -C /data/workspace" in export["containers"][0]["command"][2]
    assert export_key(spec.user_id) in export["containers"][0]["command"][2]


async def test_create_wake_sleep_archive_restore_delete(runtime: KubernetesAgentRuntime, tmp_path: Path) -> None:
    spec = AgentSpec(user_id=uuid.uuid4(), agent_name="Nova")
    names = AgentNames(spec.user_id)
    api = runtime.api
    await runtime.create(spec)
    await runtime.create(spec)  # a retried activity: 409s are updates, nothing breaks
    assert await runtime.status(spec.user_id) == RuntimeState.STOPPED
    for kind, name in (("Secret", names.secret), ("ConfigMap", names.config), ("PersistentVolumeClaim", names.pvc),
                       ("Service", names.base), ("NetworkPolicy", names.base), ("StatefulSet", names.base)):
        assert await api.read(kind, name) is not None, kind
    token = base64.b64decode((await api.read("Secret", names.secret)).data["gateway-token"]).decode()

    endpoint = await runtime.wake(spec.user_id)
    assert endpoint.token(KEYRING) == token, "the Secret holds the derived gateway token"
    assert token not in endpoint.model_dump_json(), "the endpoint (kept in workflow history) does not carry it"
    assert endpoint.base_url == f"http://{names.base}.users.svc.cluster.local:18789"
    assert (await api.read("StatefulSet", names.base)).spec.replicas == 1
    await runtime.pause(spec.user_id)
    assert await runtime.status(spec.user_id) == RuntimeState.RUNNING

    await runtime.apply(AgentSpec(user_id=spec.user_id, agent_name="Orion"))
    config = json.loads((await api.read("ConfigMap", names.config)).data["openclaw.json"])
    assert config["agents"]["entries"][agent_id(spec.user_id)]["name"] == "Orion"
    assert (await api.read("StatefulSet", names.base)).spec.replicas == 1, "settings don't put it to sleep"

    await runtime.sleep(spec.user_id)
    assert await runtime.status(spec.user_id) == RuntimeState.STOPPED
    assert await api.read("PersistentVolumeClaim", names.pvc) is not None, "sleep keeps the volume"
    # A data export: a Job copies the workspace from the volume, and is gone once it finished.
    assert await runtime.export_memory(spec.user_id, FolderArchiveStore(tmp_path))
    assert runtime.status_reader.jobs == [names.job("export")]  # type: ignore[attr-defined]
    assert await api.read("Job", names.job("export")) is None
    runtime.status_reader.jobs.clear()  # type: ignore[attr-defined]

    store = FolderArchiveStore(tmp_path)
    key = await runtime.archive(spec.user_id, store)
    assert key == f"agents/{spec.user_id.hex}/state.tar.gz"
    assert runtime.status_reader.jobs == [names.job("archive")]  # type: ignore[attr-defined]
    assert await api.read("PersistentVolumeClaim", names.pvc) is None and await api.read("Job", names.job("archive")) is None
    assert await runtime.status(spec.user_id) == RuntimeState.ABSENT
    assert not await runtime.export_memory(spec.user_id, store), "archived: the archive holds the files"

    with pytest.raises(FileNotFoundError):
        await runtime.restore(spec.user_id, store, key)  # nothing was uploaded in this emulated cluster
    (tmp_path / key).parent.mkdir(parents=True)
    (tmp_path / key).write_bytes(b"archive")
    await runtime.restore(spec.user_id, store, key)
    assert await api.read("PersistentVolumeClaim", names.pvc) is not None
    await runtime.apply(spec)
    assert (await runtime.wake(spec.user_id)).token(KEYRING) == token

    await runtime.delete(spec.user_id)
    await runtime.delete(spec.user_id)  # 404s are success
    assert await runtime.status(spec.user_id) == RuntimeState.ABSENT
    with pytest.raises(LookupError):
        await runtime.wake(spec.user_id)
