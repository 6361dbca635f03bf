"""deploy/kubernetes, rendered (kustomize where it is installed, deploy/render.py otherwise) and checked
offline: every object valid for Kubernetes 1.37 (strict: no unknown field), custom resources against
the schemas in deploy/kubernetes/schemas, and the invariants a reviewer would check by hand."""

import importlib.util
import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from activities.runtime.k8s_manifests import LOADER, LOADER_PORT, ClusterSettings, spare_pod, user_policy
from activities.runtime.openclaw_config import GATEWAY_PORT
from core.settings import Settings

DEPLOY = Path(__file__).parents[1] / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
OVERLAYS = [KUBERNETES / "base", KUBERNETES / "overlays" / "digitalocean"]
SCHEMAS = {path.name.rsplit(".", 2)[0]: json.loads(path.read_text()) for path in (KUBERNETES / "schemas").glob("*.json")}
# The agent runtime's settings for the objects it renders per user (activities/runtime/k8s_manifests.py).
CLUSTER = ClusterSettings(namespace="users", platform_namespace="deepclaw", image="agent")
SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|API_KEY|ENCRYPTION_KEYS|DATABASE_URL")


def _renderer() -> Any:
    spec = importlib.util.spec_from_file_location("deploy_render", DEPLOY / "render.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rendered(folder: Path) -> list[dict[str, Any]]:
    if shutil.which("kubectl"):
        output = subprocess.run(["kubectl", "kustomize", str(folder)], check=True, capture_output=True, text=True).stdout
        return [d for d in yaml.safe_load_all(output) if d]
    return _renderer().render(folder)


def _sorted(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(objects, key=lambda o: (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]))


@pytest.fixture(scope="module", params=OVERLAYS, ids=lambda p: p.name)
def objects(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return rendered(request.param)


def _pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(o["metadata"]["name"], o["spec"]["template"]["spec"]) for o in objects if o["kind"] in ("Deployment", "Job")]


def _one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kustomize (kubectl) is not installed: nothing to compare")
@pytest.mark.parametrize("folder", OVERLAYS, ids=lambda p: p.name)
def test_the_own_renderer_renders_what_kustomize_does(folder: Path) -> None:
    assert _sorted(_renderer().render(folder)) == _sorted(rendered(folder))


def test_every_object_is_valid_and_custom_resources_match_their_schemas(objects: list[dict[str, Any]]) -> None:
    kinds = {o["kind"] for o in objects}
    assert kinds >= {"Namespace", "Deployment", "Job", "Service", "Role", "RoleBinding", "ServiceAccount",
                     "NetworkPolicy", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ConfigMap"}
    for obj in objects:
        group = obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else ""
        if group.endswith(".io") and group not in ("rbac.authorization.k8s.io", "networking.k8s.io"):
            schema = SCHEMAS.get(f"{obj['kind'].lower()}.{group}")
            assert schema is not None, f"no schema in deploy/kubernetes/schemas for {obj['kind']} ({group})"
            jsonschema.validate(obj, schema)
        else:
            kubernetes_validate.validate(obj, "1.37.0", strict=True)


def test_the_digitalocean_overlay_has_tls_certificates_and_secrets_from_outside() -> None:
    objects = rendered(OVERLAYS[1])
    ingress = _one(objects, "Ingress", "deepclaw")
    hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
    assert hosts == set(ingress["spec"]["tls"][0]["hosts"]), "every host has TLS"
    issuer = ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"]
    assert _one(objects, "ClusterIssuer", issuer)["spec"]["acme"]["solvers"][0]["http01"]["ingress"][
        "ingressClassName"] == ingress["spec"]["ingressClassName"]
    external = _one(objects, "ExternalSecret", "deepclaw-secrets")
    referenced = {ref["secretRef"]["name"] for _, spec in _pod_specs(objects)
                  for c in spec["containers"] + spec.get("initContainers", []) for ref in c.get("envFrom", [])
                  if "secretRef" in ref}
    assert referenced == {external["spec"]["target"]["name"]}, "the workloads' Secret is the one the operator makes"
    config = _one(objects, "ConfigMap", "deepclaw-settings")["data"]
    media = config["DEEPCLAW_MEDIA_PUBLIC_URL"]
    assert media.startswith("wss://") and any(
        rule["host"] in media and any(p["path"] in media and p["backend"]["service"]["port"]["name"] == "media"
                                      for p in rule["http"]["paths"]) for rule in ingress["spec"]["rules"]), \
        "Media Streams reach the bridge's media port through the ingress"
    for image in {c["image"] for _, spec in _pod_specs(objects) for c in spec["containers"]}:
        assert re.fullmatch(r"registry\.digitalocean\.com/[\w/-]+@sha256:[0-9a-f]{64}", image), image


def test_no_container_runs_unbounded_privileged_or_as_root(objects: list[dict[str, Any]]) -> None:
    for name, spec in _pod_specs(objects):
        pod = spec.get("securityContext", {})
        assert pod.get("runAsNonRoot") is True and pod.get("runAsUser", 0) != 0, name
        assert pod.get("seccompProfile") == {"type": "RuntimeDefault"}, name
        for container in spec["containers"] + spec.get("initContainers", []):
            where = f"{name}/{container['name']}"
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                assert set(resources.get(bound, {})) >= {"cpu", "memory"}, f"{where}: {bound}"
            context = container.get("securityContext", {})
            assert not context.get("privileged") and context.get("allowPrivilegeEscalation") is False, where
            assert context.get("readOnlyRootFilesystem") is True and context.get("capabilities") == {"drop": ["ALL"]}, where
            assert context.get("runAsUser", 1) != 0, where


def test_deployments_have_probes_and_wait_for_their_schema(objects: list[dict[str, Any]]) -> None:
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} == {"deepclaw-api", "deepclaw-voice", "deepclaw-worker"}
    for deployment in deployments:
        spec = deployment["spec"]["template"]["spec"]
        for container in spec["containers"]:
            assert container.get("readinessProbe") and container.get("livenessProbe"), deployment["metadata"]["name"]
        assert [c["args"][:2] for c in spec["initContainers"]] == [["migrate", "--wait"]], \
            "a new version serves only once the migration Job brought the schema to its head"
    assert _one(objects, "Job", "deepclaw-migrate")["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]


def test_only_the_worker_manages_the_users_namespace(objects: list[dict[str, Any]]) -> None:
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    roles = [o for o in objects if o["kind"] in ("Role", "RoleBinding")]
    assert roles and all(o["metadata"]["namespace"] == "users" for o in roles)
    subjects = [s for o in roles if o["kind"] == "RoleBinding" for s in o["subjects"]]
    assert subjects == [{"kind": "ServiceAccount", "name": "deepclaw-worker", "namespace": "deepclaw"}]
    # Exactly the kinds the runtime's client manages (activities/runtime/kubernetes.py, KubeApi).
    from activities.runtime.kubernetes import KubeApi

    granted = {r for o in roles if o["kind"] == "Role" for rule in o["rules"] for r in rule["resources"]}
    managed = {f"{kind.lower()}s".replace("policys", "policies") for kind in KubeApi.KINDS}
    assert granted == managed
    for name, spec in _pod_specs(objects):
        if spec.get("serviceAccountName") != "deepclaw-worker":
            account = _one(objects, "ServiceAccount", spec["serviceAccountName"])
            assert account.get("automountServiceAccountToken") is False, f"{name} holds no API token"


def test_every_namespace_denies_by_default_and_the_allows_fit_the_agents(objects: list[dict[str, Any]]) -> None:
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    for namespace in (o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"):
        assert any(p["metadata"]["namespace"] == namespace and p["spec"]["podSelector"] == {}
                   and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
                   and not p["spec"].get("ingress") and not p["spec"].get("egress") for p in policies), namespace
    # What the platform may send to an agent is what the runtime's policy for each agent lets in.
    # What the platform sends to an agent's ports is what the runtime's policy for the agent lets in
    # (the gateway's port from api, voice and worker; the loader's from the worker alone).
    agent = user_policy(uuid.uuid4(), CLUSTER)
    let_in = {rule["ports"][0]["port"]: set(rule["from"][0]["podSelector"]["matchExpressions"][0]["values"])
              for rule in agent["spec"]["ingress"]}
    assert let_in == {GATEWAY_PORT: {"api", "voice", "worker"}, LOADER_PORT: {"worker"}}
    sent: dict[int, set[str]] = {}
    for policy in policies:
        for rule in policy["spec"].get("egress", []):
            if any(peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") == "users"
                   for peer in rule.get("to", [])):
                selector = policy["spec"]["podSelector"]
                senders = (set(selector["matchExpressions"][0]["values"]) if "matchExpressions" in selector
                           else {selector["matchLabels"]["app.kubernetes.io/component"]})
                for port in rule["ports"]:
                    sent.setdefault(port["port"], set()).update(senders)
    assert sent == let_in


def test_no_secret_is_written_in_the_manifests(objects: list[dict[str, Any]]) -> None:
    assert not [o for o in objects if o["kind"] == "Secret"], "Secrets come from an operator or an ExternalSecret"
    config = _one(objects, "ConfigMap", "deepclaw-settings")["data"]
    assert not [key for key in config if SECRET_NAME.search(key)]
    for name, spec in _pod_specs(objects):
        for container in spec["containers"] + spec.get("initContainers", []):
            literal = [e["name"] for e in container.get("env", []) if "value" in e and SECRET_NAME.search(e["name"])]
            assert literal == [], f"{name}: {literal}"


def test_the_voice_bridge_drains_within_its_grace_and_scales_on_calls(objects: list[dict[str, Any]]) -> None:
    import core.metrics

    voice = _one(objects, "Deployment", "deepclaw-voice")
    drain = float(_one(objects, "ConfigMap", "deepclaw-settings")["data"].get("DEEPCLAW_VOICE_DRAIN_S",
                                                                               Settings(_env_file=None).voice_drain_s))
    assert voice["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= drain + 15
    labels = voice["spec"]["template"]["metadata"]["labels"]
    budget = _one(objects, "PodDisruptionBudget", "deepclaw-voice")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    autoscaler = _one(objects, "HorizontalPodAutoscaler", "deepclaw-voice")
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == "deepclaw-voice"
    calls = [m["pods"]["metric"]["name"] for m in autoscaler["spec"]["metrics"] if m["type"] == "Pods"]
    assert calls == [core.metrics.ACTIVE_CALLS._name], "scaled on the gauge the bridge exports"  # noqa: SLF001
    assert autoscaler["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= drain


def test_the_production_settings_start_only_with_their_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The overlay's settings and the Secrets the base's comment lists are what a process needs:
    without the platform secret it refuses to start, naming it."""
    listed = set(re.findall(r"DEEPCLAW_[A-Z_]+", (KUBERNETES / "base" / "settings.yaml").read_text().split("apiVersion", 1)[0]))
    assert {"DEEPCLAW_PLATFORM_SECRET", "DEEPCLAW_TWILIO_AUTH_TOKEN", "DEEPCLAW_DATABASE_URL",
            "DEEPCLAW_ENCRYPTION_KEYS"} <= listed
    for key, value in _one(rendered(OVERLAYS[1]), "ConfigMap", "deepclaw-settings")["data"].items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DEEPCLAW_TWILIO_AUTH_TOKEN", "t" * 32)
    monkeypatch.setenv("DEEPCLAW_DATABASE_URL", "postgresql+asyncpg://app:a-long-db-password@db:25060/deepclaw")
    with pytest.raises(SystemExit, match="DEEPCLAW_PLATFORM_SECRET"):
        Settings(_env_file=None).require_deployable()
    monkeypatch.setenv("DEEPCLAW_PLATFORM_SECRET", "s" * 48)
    with pytest.raises(SystemExit, match="DEEPCLAW_ENCRYPTION_KEYS"):
        Settings(_env_file=None).require_deployable()
    monkeypatch.setenv("DEEPCLAW_ENCRYPTION_KEYS", "k1:" + "A" * 43)
    settings = Settings(_env_file=None)
    settings.require_deployable()
    # The worker's agent runtime can be built from them: the agent image by digest, state in Spaces.
    from kubernetes.config.config_exception import ConfigException

    from core import composition

    with pytest.raises(ConfigException, match="Service host/port"):  # no cluster here: only that is missing
        composition.agent_runtime(settings, None)  # type: ignore[arg-type]


MONITORING = DEPLOY / "monitoring"
# The Temporal SDK's metrics the rules and the dashboard use (docs.temporal.io/references/sdk-metrics,
# with the worker's counters_total_suffix).
TEMPORAL_SDK_METRICS = {"temporal_workflow_task_execution_failed_total", "temporal_worker_task_slots_available"}
HISTOGRAM_SUFFIXES = ("", "_bucket", "_count", "_sum")


def _exported_metric_names() -> set[str]:
    import core.metrics  # noqa: F401 (defines them)
    from prometheus_client import REGISTRY

    from core.temporal import METRIC_BUCKETS

    names = set(TEMPORAL_SDK_METRICS)
    for family in REGISTRY.collect():
        names |= {family.name + suffix for suffix in (*HISTOGRAM_SUFFIXES, "_total")}
    for workflow_metric in METRIC_BUCKETS:  # recorded by workflows through the SDK's meter
        names |= {workflow_metric + suffix for suffix in HISTOGRAM_SUFFIXES}
    return names


def test_alerts_and_the_dashboard_use_only_metrics_the_platform_exports() -> None:
    exported = _exported_metric_names()
    rules = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    alerts = [rule for group in rules["spec"]["groups"] for rule in group["rules"]]
    assert len(alerts) >= 8 and all(rule["annotations"]["summary"] and rule["labels"]["severity"] for rule in alerts)
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids are unique"
    expressions = [rule["expr"] for rule in alerts] + [t["expr"] for p in panels for t in p["targets"]]
    used = {name for expr in expressions for name in re.findall(r"\b(?:deepclaw|temporal)_[a-z_]+", expr)}
    assert used - exported == set(), "every metric named is one the platform exports"
    wanted = {"deepclaw_active_calls", "deepclaw_frame_added_seconds_bucket", "deepclaw_think_seconds_bucket",
              "deepclaw_agent_wake_seconds_bucket", "deepclaw_number_pool_available", "deepclaw_sms_reply_seconds_bucket",
              "deepclaw_webhook_rejections_total", "temporal_workflow_task_execution_failed_total"}
    assert wanted <= used, f"the dashboard or the rules miss {wanted - used}"
    for expr in expressions:  # balanced, at least (no promtool here)
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr


def test_temporal_gets_its_namespace_and_the_search_attributes_the_platform_uses() -> None:
    from core.temporal import SEARCH_ATTRIBUTES

    [job] = [d for d in yaml.safe_load_all((DEPLOY / "temporal" / "setup-job.yaml").read_text()) if d]
    kubernetes_validate.validate(job, "1.37.0", strict=True)
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    namespace = Settings(_env_file=None).temporal_namespace
    assert f"namespace create --namespace {namespace}" in script
    named = set(re.search(r"for name in ([\w ]+); do", script).group(1).split())  # type: ignore[union-attr]
    assert named == {key.name for key in SEARCH_ATTRIBUTES}
    assert "--type Keyword" in script and all(key.indexed_value_type.name == "KEYWORD" for key in SEARCH_ATTRIBUTES)
    values = yaml.safe_load((DEPLOY / "temporal" / "values.yaml").read_text())
    for store in values["server"]["config"]["persistence"].values():
        assert store["sql"]["tls"]["enabled"] is True and store["sql"]["existingSecret"], "managed PostgreSQL over TLS"


def test_the_agent_image_pins_openclaw_and_runs_it_unprivileged_behind_an_init() -> None:
    """deploy/agent cannot be built here (no registry): its contents are checked against what the
    runtime's pods expect."""
    from activities.runtime.k8s_manifests import CONFIG_DIR, STATE_DIR
    from activities.runtime.tools import NODE_VERSION, OPENCLAW_VERSION

    folder = DEPLOY / "agent"
    package = json.loads((folder / "package.json").read_text())
    lock = json.loads((folder / "package-lock.json").read_text())
    assert package["dependencies"] == {"openclaw": OPENCLAW_VERSION}, "exactly the version the platform runs"
    assert lock["packages"][""]["dependencies"] == package["dependencies"], "npm ci needs them in sync"
    # Bundled packages come inside their parent's tarball, under its hash.
    installed = {path: entry for path, entry in lock["packages"].items()
                 if path and not entry.get("link") and not entry.get("inBundle")}
    assert installed["node_modules/openclaw"]["version"] == OPENCLAW_VERSION
    assert all(entry["integrity"].startswith("sha512-") for entry in installed.values()), "every tarball's hash"

    lines = [line.strip() for line in (folder / "Containerfile").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    instructions = {line.split()[0]: line.split(None, 1)[1] for line in lines if line.split()[0].isupper()}
    assert instructions["FROM"].startswith(f"node:{NODE_VERSION}-"), "the Node the local runtime runs"
    assert any("npm ci" in line for line in lines) and not any("npm install" in line for line in lines)
    user = instructions["USER"].split(":")
    pod = spare_pod("agent-0123456789ab", CLUSTER)["spec"]
    container, loader = pod["containers"]
    assert int(user[0]) == container["securityContext"]["runAsUser"] == loader["securityContext"]["runAsUser"] != 0
    entrypoint, command = json.loads(instructions["ENTRYPOINT"]), json.loads(instructions["CMD"])
    assert entrypoint[:2] == ["/usr/bin/tini", "--"], "an init forwards signals to the gateway"
    assert command == container["args"] and instructions["EXPOSE"].split() == [str(GATEWAY_PORT), str(LOADER_PORT)]
    assert all(folder in instructions["VOLUME"] for folder in (STATE_DIR, CONFIG_DIR, "/tmp"))
    # The loader sidecar runs the repository's loader.mjs, put where its container's command looks.
    assert f"COPY deploy/agent/loader.mjs {LOADER}" in lines
    assert loader["command"][-2:] == ["node", LOADER] and loader["command"][:2] == entrypoint[:2]
    # What the image cannot carry, the runtime's pod does.
    assert pod["automountServiceAccountToken"] is False and pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {STATE_DIR, "/tmp"}
    assert set(container["resources"]["requests"]) == set(container["resources"]["limits"]) == {"cpu", "memory"}
    assert container["readinessProbe"]["httpGet"]["port"] == GATEWAY_PORT
