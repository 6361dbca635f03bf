"""Kubernetes objects of the agent runtime, as plain dicts (validated against the 1.37 schemas in tests).

In the `users` namespace:
- shared by all agents: a headless Service `agents` (each pod's stable DNS name,
  <pod>.agents.<namespace>.svc), the base ConfigMap (OpenClaw's config with no user, the warmth
  preload), the provider key's Secret, and the spares' NetworkPolicy;
- per warm pod: the Pod (an init container copies the base config into a writable folder; the
  `openclaw` container runs the gateway; the `loader` sidecar loads and saves the user's state,
  deploy/agent/loader.mjs) and a Secret with its gateway token, owned by the Pod;
- per user: a Secret with their agent's spec (it names their MCP servers' headers) and their
  NetworkPolicy, which selects pods labelled as theirs: a claimed pod is relabelled to it.
Pods keep their state on emptyDir: a sleeping user holds no pod and no volume.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from typing import Any

from activities.runtime.openclaw_config import GATEWAY_PORT, SLIM_ENV, WARMTH_PRELOAD, node_options

LOADER_PORT = 18790
STATE_DIR = "/home/node/.openclaw"
CONFIG_DIR = "/etc/openclaw"  # an emptyDir: the loader writes the user's config there
BASE_DIR = "/etc/deepclaw-base"  # the base ConfigMap, read by the init container only
LOADER = "/opt/deepclaw/loader.mjs"  # deploy/agent/Containerfile puts it there
PRIVATE_RANGES = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16"]
PROVIDER_KEY_ENV = "DEEPCLAW_LLM_API_KEY"

SERVICE = "agents"
BASE_CONFIG = "agent-base"
PROVIDER_SECRET = "agent-provider"
SPARES_POLICY = "agent-spares"
ROLE = "deepclaw.io/role"
POOL = "deepclaw.io/pool"
USER = "deepclaw.io/user"
COMMON = {"app.kubernetes.io/name": "openclaw", "app.kubernetes.io/part-of": "deepclaw"}


@dataclass(frozen=True)
class ClusterSettings:
    namespace: str
    platform_namespace: str
    image: str
    pool: str = "agents"  # the node pool spares run on (DOKS labels nodes doks.digitalocean.com/node-pool)
    spares: int = 2  # warm pods kept in that pool
    node_selector: bool = True  # False where nodes carry no pool label (a test cluster)


@dataclass(frozen=True)
class UserNames:
    user_id: uuid.UUID

    @property
    def base(self) -> str:
        return f"agent-{self.user_id.hex[:20]}"

    @property
    def spec(self) -> str:
        return f"{self.base}-spec"


def token_secret_name(pod: str) -> str:
    return f"{pod}-token"


def pod_host(pod: str, cluster: ClusterSettings) -> str:
    """A pod's DNS name through the headless Service: known before the pod runs (its token derives from it)."""
    return f"{pod}.{SERVICE}.{cluster.namespace}.svc.cluster.local"


def _encode(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def _meta(name: str, cluster: ClusterSettings, **labels: str) -> dict[str, Any]:
    return {"name": name, "namespace": cluster.namespace, "labels": {**COMMON, **labels}}


# ---- shared by every agent -------------------------------------------------------------------

def service(cluster: ClusterSettings) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(SERVICE, cluster),
            "spec": {"clusterIP": "None", "selector": dict(COMMON),
                     "ports": [{"name": "gateway", "port": GATEWAY_PORT, "targetPort": GATEWAY_PORT, "protocol": "TCP"},
                               {"name": "loader", "port": LOADER_PORT, "targetPort": LOADER_PORT, "protocol": "TCP"}]}}


def base_config(cluster: ClusterSettings, config: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(BASE_CONFIG, cluster),
            "data": {"openclaw.json": json.dumps(config, indent=2), WARMTH_PRELOAD.name: WARMTH_PRELOAD.read_text()}}


def provider_secret(cluster: ClusterSettings, provider_key: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(PROVIDER_SECRET, cluster), "type": "Opaque",
            "data": {"provider-key": _encode(provider_key)}}


def _policy(name: str, cluster: ClusterSettings, selector: dict[str, str], **labels: str) -> dict[str, Any]:
    """In: the gateway from api, voice and worker (think turns, warm-ups), the loader from the
    worker only. Out: DNS, then the internet (model, store, users' MCP servers) but no private range."""
    platform = lambda *components: {  # noqa: E731
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": cluster.platform_namespace}},
        "podSelector": {"matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "In",
                                              "values": list(components)}]}}
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": _meta(name, cluster, **labels),
        "spec": {
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [platform("api", "voice", "worker")], "ports": [{"protocol": "TCP", "port": GATEWAY_PORT}]},
                        {"from": [platform("worker")], "ports": [{"protocol": "TCP", "port": LOADER_PORT}]}],
            "egress": [
                {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                         "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                 "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": PRIVATE_RANGES}}]},
            ],
        },
    }


def spares_policy(cluster: ClusterSettings) -> dict[str, Any]:
    return _policy(SPARES_POLICY, cluster, {ROLE: "spare"})


def shared_objects(cluster: ClusterSettings, config: dict[str, Any], provider_key: str) -> list[dict[str, Any]]:
    return [service(cluster), base_config(cluster, config), provider_secret(cluster, provider_key), spares_policy(cluster)]


# ---- per user ----------------------------------------------------------------------------------

def user_policy(user_id: uuid.UUID, cluster: ClusterSettings) -> dict[str, Any]:
    """Applies to the user's pod once it is labelled theirs (and to nothing while they sleep)."""
    return _policy(UserNames(user_id).base, cluster, {USER: user_id.hex}, **{USER: user_id.hex})


def user_spec(user_id: uuid.UUID, cluster: ClusterSettings, spec_json: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(UserNames(user_id).spec, cluster, **{USER: user_id.hex}),
            "type": "Opaque", "data": {"spec.json": _encode(spec_json)}}


def claimed_labels(user_id: uuid.UUID) -> dict[str, Any]:
    """The patch that makes a spare the user's: their NetworkPolicy selects it, the spares' no longer does."""
    return {"metadata": {"labels": {ROLE: "agent", USER: user_id.hex}}}


# ---- per warm pod --------------------------------------------------------------------------------

def token_secret(pod: str, cluster: ClusterSettings, token: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(token_secret_name(pod), cluster, **{POOL: cluster.pool}),
            "type": "Opaque", "data": {"gateway-token": _encode(token)}}


def owned_by(pod: str, uid: str) -> dict[str, Any]:
    """The patch that lets the garbage collector delete a pod's Secret with it."""
    return {"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid}]}}


_HARDENED = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "readOnlyRootFilesystem": True,
             "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def _probe(path: str, port: int, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": period, "failureThreshold": failures,
            "timeoutSeconds": 3}


def _container(name: str, cluster: ClusterSettings, resources: tuple[str, str, str, str],
               mounts: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """A container of the agent image, hardened; `resources`: cpu and memory requested, then limits."""
    cpu, memory, cpu_limit, memory_limit = resources
    return {"name": name, "image": cluster.image, "imagePullPolicy": "IfNotPresent", **fields,
            "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu_limit, "memory": memory_limit}},
            "securityContext": _HARDENED, "volumeMounts": mounts}


def spare_pod(pod: str, cluster: ClusterSettings) -> dict[str, Any]:
    token = {"name": "OPENCLAW_GATEWAY_TOKEN", "valueFrom": {"secretKeyRef": {"name": token_secret_name(pod),
                                                                               "key": "gateway-token"}}}
    provider_key = {"name": PROVIDER_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": PROVIDER_SECRET, "key": "provider-key"}}}
    paths = [{"name": "OPENCLAW_STATE_DIR", "value": STATE_DIR},
             {"name": "OPENCLAW_CONFIG_PATH", "value": f"{CONFIG_DIR}/openclaw.json"}]
    mounts = [{"name": "state", "mountPath": STATE_DIR}, {"name": "config", "mountPath": CONFIG_DIR},
              {"name": "tmp", "mountPath": "/tmp"}]
    # Requested as measured: an awake gateway holds ~1.1 GiB of its own (USS; bench/wake.py's
    # rss_mb_per_agent, ~1.3 GB, counts shared pages too) plus headroom for its sessions; a smaller
    # request would let the scheduler pack more agents on a node than its memory holds.
    gateway = _container(
        "openclaw", cluster, ("250m", "1536Mi", "1", "2Gi"), mounts,
        args=["gateway", "run"],
        ports=[{"name": "gateway", "containerPort": GATEWAY_PORT, "protocol": "TCP"}],
        env=[{"name": k, "value": v} for k, v in SLIM_ENV.items()] + paths + [
            {"name": "NODE_OPTIONS",
             "value": node_options(f"{CONFIG_DIR}/{WARMTH_PRELOAD.name}", "--max-old-space-size=1536")},
            {"name": "TMPDIR", "value": "/tmp"},
            token,
            provider_key,
        ],
        startupProbe=_probe("/startupz", GATEWAY_PORT, 2, 60),
        livenessProbe=_probe("/healthz", GATEWAY_PORT, 15, 4),
        readinessProbe=_probe("/readyz", GATEWAY_PORT, 2, 3))
    loader = _container(
        "loader", cluster, ("50m", "64Mi", "500m", "256Mi"), mounts,
        command=["/usr/bin/tini", "--", "node", LOADER],
        ports=[{"name": "loader", "containerPort": LOADER_PORT, "protocol": "TCP"}],
        # The provider key too: OpenClaw's CLI (session cleanup before a save) loads the same config.
        env=[*paths, {"name": "DEEPCLAW_LOADER_PORT", "value": str(LOADER_PORT)}, token, provider_key],
        livenessProbe=_probe("/healthz", LOADER_PORT, 15, 4),
        readinessProbe=_probe("/healthz", LOADER_PORT, 2, 3))
    copy_base = _container(
        "base-config", cluster, ("10m", "16Mi", "100m", "64Mi"),
        [{"name": "base", "mountPath": BASE_DIR, "readOnly": True}, {"name": "config", "mountPath": CONFIG_DIR}],
        command=["cp", f"{BASE_DIR}/openclaw.json", f"{BASE_DIR}/{WARMTH_PRELOAD.name}", CONFIG_DIR])
    placement = {"nodeSelector": {"doks.digitalocean.com/node-pool": cluster.pool}} if cluster.node_selector else {}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": _meta(pod, cluster, **{ROLE: "spare", POOL: cluster.pool}),
        "spec": {
            "hostname": pod,
            "subdomain": SERVICE,
            **placement,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": {"fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "terminationGracePeriodSeconds": 20,
            "initContainers": [copy_base],
            "containers": [gateway, loader],
            "volumes": [{"name": "state", "emptyDir": {"sizeLimit": "2Gi"}},
                        {"name": "config", "emptyDir": {"sizeLimit": "1Mi"}},
                        {"name": "base", "configMap": {"name": BASE_CONFIG}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
        },
    }
