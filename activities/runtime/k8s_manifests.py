"""Kubernetes manifests for one user's agent, as plain dicts (validated against the 1.37 schemas in tests).

Per user, in the `users` namespace: a StatefulSet (1 replica when awake, 0 asleep), its PVC for
/home/node/.openclaw, a Secret (gateway token, provider key), a ConfigMap (rendered openclaw.json),
a headless Service and a NetworkPolicy (ingress only from the platform's api/voice pods; egress to
the internet but not to cluster-internal ranges).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from activities.runtime.openclaw_config import GATEWAY_PORT, SLIM_ENV, WARMTH_PRELOAD, node_options

STATE_DIR = "/home/node/.openclaw"
CONFIG_DIR = "/etc/openclaw"
PRIVATE_RANGES = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16"]


@dataclass(frozen=True)
class AgentNames:
    user_id: uuid.UUID

    @property
    def base(self) -> str:
        return f"agent-{self.user_id.hex[:20]}"

    @property
    def pvc(self) -> str:
        return f"{self.base}-state"

    @property
    def pod(self) -> str:
        return f"{self.base}-0"  # the StatefulSet's one replica

    @property
    def secret(self) -> str:
        return f"{self.base}-secrets"

    @property
    def config(self) -> str:
        return f"{self.base}-config"

    def job(self, action: str) -> str:
        return f"{self.base}-{action}"


@dataclass(frozen=True)
class ClusterSettings:
    namespace: str
    platform_namespace: str
    image: str
    archiver_image: str | None
    storage_class: str | None
    storage_size: str
    archive_secret: str
    archive_bucket: str
    archive_endpoint: str | None


def _labels(names: AgentNames) -> dict[str, str]:
    return {"app.kubernetes.io/name": "openclaw", "app.kubernetes.io/part-of": "deepclaw",
            "deepclaw.io/user": names.user_id.hex}


def _meta(name: str, names: AgentNames, cluster: ClusterSettings) -> dict[str, Any]:
    return {"name": name, "namespace": cluster.namespace, "labels": _labels(names)}


def secret_key(env_name: str) -> str:
    """The Secret key an env var's value is kept under (DEEPCLAW_MCP_HEADER_0 -> deepclaw-mcp-header-0)."""
    return env_name.lower().replace("_", "-")


def secret(names: AgentNames, cluster: ClusterSettings, *, gateway_token: str, provider_key: str,
           extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """`extra_env`: more values the container gets as env vars (OpenClaw substitutes ${VAR} in its config)."""
    encode = lambda value: base64.b64encode(value.encode()).decode()  # noqa: E731
    data = {"gateway-token": encode(gateway_token), "provider-key": encode(provider_key)}
    data |= {secret_key(name): encode(value) for name, value in (extra_env or {}).items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(names.secret, names, cluster), "type": "Opaque",
            "data": data}


def config_map(names: AgentNames, cluster: ClusterSettings, config: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(names.config, names, cluster),
            "data": {"openclaw.json": json.dumps(config, indent=2), WARMTH_PRELOAD.name: WARMTH_PRELOAD.read_text()}}


def pvc(names: AgentNames, cluster: ClusterSettings) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": cluster.storage_size}}}
    if cluster.storage_class:
        spec["storageClassName"] = cluster.storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": _meta(names.pvc, names, cluster), "spec": spec}


def service(names: AgentNames, cluster: ClusterSettings) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(names.base, names, cluster),
            "spec": {"clusterIP": "None", "selector": _labels(names),
                     "ports": [{"name": "gateway", "port": GATEWAY_PORT, "targetPort": GATEWAY_PORT, "protocol": "TCP"}]}}


def network_policy(names: AgentNames, cluster: ClusterSettings) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": _meta(names.base, names, cluster),
        "spec": {
            "podSelector": {"matchLabels": _labels(names)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{
                "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": cluster.platform_namespace}},
                          "podSelector": {"matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "In",
                                                                "values": ["api", "voice"]}]}}],
                "ports": [{"protocol": "TCP", "port": GATEWAY_PORT}],
            }],
            "egress": [
                # DNS from the cluster resolver, then the internet but no cluster-internal range.
                {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                         "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                 "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": PRIVATE_RANGES}}]},
            ],
        },
    }


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": GATEWAY_PORT}, "periodSeconds": period, "failureThreshold": failures,
            "timeoutSeconds": 3}


def stateful_set(names: AgentNames, cluster: ClusterSettings, *, replicas: int,
                 extra_env: Sequence[str] = ()) -> dict[str, Any]:
    secret_env = lambda key: {"secretKeyRef": {"name": names.secret, "key": key}}  # noqa: E731
    env = [{"name": k, "value": v} for k, v in SLIM_ENV.items()] + [
        {"name": "OPENCLAW_STATE_DIR", "value": STATE_DIR},
        {"name": "OPENCLAW_CONFIG_PATH", "value": f"{CONFIG_DIR}/openclaw.json"},
        {"name": "NODE_OPTIONS",
         "value": node_options(f"{CONFIG_DIR}/{WARMTH_PRELOAD.name}", "--max-old-space-size=1536")},
        {"name": "TMPDIR", "value": "/tmp"},
        {"name": "OPENCLAW_GATEWAY_TOKEN", "valueFrom": secret_env("gateway-token")},
        {"name": "DEEPCLAW_LLM_API_KEY", "valueFrom": secret_env("provider-key")},
        *({"name": name, "valueFrom": secret_env(secret_key(name))} for name in extra_env),
    ]
    container = {
        "name": "openclaw",
        "image": cluster.image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["gateway", "run"],
        "ports": [{"name": "gateway", "containerPort": GATEWAY_PORT, "protocol": "TCP"}],
        "env": env,
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "2Gi"}},
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
                            "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}},
        "startupProbe": _probe("/startupz", 2, 60),
        "livenessProbe": _probe("/healthz", 15, 4),
        "readinessProbe": _probe("/readyz", 2, 3),
        "volumeMounts": [{"name": "state", "mountPath": STATE_DIR}, {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": _meta(names.base, names, cluster),
        "spec": {
            "replicas": replicas,
            "serviceName": names.base,
            "selector": {"matchLabels": _labels(names)},
            "template": {
                "metadata": {"labels": _labels(names)},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {"fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
                    "terminationGracePeriodSeconds": 20,
                    "containers": [container],
                    "volumes": [{"name": "state", "persistentVolumeClaim": {"claimName": names.pvc}},
                                {"name": "config", "configMap": {"name": names.config}},
                                {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
                },
            },
        },
    }


def archive_job(names: AgentNames, cluster: ClusterSettings, *, action: str, key: str,
                node: str | None = None) -> dict[str, Any]:
    """A Job that tars the PVC into the archive bucket (archive) or unpacks it back (restore), or
    copies the agent's workspace there for a data export (export: read-only, and on `node`, where a
    running agent's ReadWriteOnce volume is attached, which pods on that node may share)."""
    if not cluster.archiver_image:
        raise ValueError("kubernetes_archiver_image must be set to archive or restore agents")
    url = f"s3://{cluster.archive_bucket}/{key}"
    endpoint = f" --endpoint-url {cluster.archive_endpoint}" if cluster.archive_endpoint else ""
    script = {
        "archive": f"set -eu; tar -C /data -czf - . | aws s3 cp - {url}{endpoint}",
        "restore": f"set -eu; aws s3 cp {url} -{endpoint} | tar -C /data -xzf -",
        "export": f"set -eu; tar -C /data/workspace -czf - . | aws s3 cp - {url}{endpoint}",
    }[action]
    placement = {"nodeName": node} if node else {}
    secret_env = lambda key_name: {"secretKeyRef": {"name": cluster.archive_secret, "key": key_name}}  # noqa: E731
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": _meta(names.job(action), names, cluster),
        "spec": {
            "backoffLimit": 3,
            "ttlSecondsAfterFinished": 600,
            "template": {
                "metadata": {"labels": _labels(names)},
                "spec": {
                    "restartPolicy": "Never",
                    **placement,
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": action, "image": cluster.archiver_image, "command": ["sh", "-c", script],
                        "env": [{"name": "AWS_ACCESS_KEY_ID", "valueFrom": secret_env("access-key")},
                                {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": secret_env("secret-key")},
                                {"name": "HOME", "value": "/tmp"}],
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
                        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                        "volumeMounts": [{"name": "state", "mountPath": "/data", "readOnly": action == "export"}],
                    }],
                    "volumes": [{"name": "state", "persistentVolumeClaim": {"claimName": names.pvc}}],
                },
            },
        },
    }
