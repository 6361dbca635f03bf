"""deploy/kubernetes manifests are valid Kubernetes 1.37 objects (strict: no unknown fields)."""

import json
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from core.settings import Settings

DEPLOY = Path(__file__).parents[1] / "deploy" / "kubernetes"


def test_platform_manifests_validate() -> None:
    documents = [doc for path in sorted(DEPLOY.glob("*.yaml")) if path.name != "kustomization.yaml"
                 for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert {d["kind"] for d in documents} >= {"Namespace", "Deployment", "Job", "Role", "RoleBinding", "ServiceAccount"}
    for document in documents:
        kubernetes_validate.validate(document, "1.37.0", strict=True)
    worker = next(d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "deepclaw-worker")
    assert worker["spec"]["template"]["spec"]["serviceAccountName"] == "deepclaw-worker"


def test_the_production_settings_start_only_with_their_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ConfigMap's settings and the Secrets its comment lists are what a process needs: without the
    platform secret it refuses to start, naming it."""
    platform = (DEPLOY / "platform.yaml").read_text()
    config = next(d for d in yaml.safe_load_all(platform) if d and d["kind"] == "ConfigMap")["data"]
    listed = set(re.findall(r"DEEPCLAW_[A-Z_]+", platform.split("apiVersion", 1)[0]))
    assert {"DEEPCLAW_PLATFORM_SECRET", "DEEPCLAW_TWILIO_AUTH_TOKEN", "DEEPCLAW_DATABASE_URL",
            "DEEPCLAW_ENCRYPTION_KEYS"} <= listed
    for key, value in config.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DEEPCLAW_TWILIO_AUTH_TOKEN", "t" * 32)
    monkeypatch.setenv("DEEPCLAW_DATABASE_URL", "postgresql+asyncpg://app:a-long-db-password@db:25060/deepclaw")
    with pytest.raises(SystemExit, match="DEEPCLAW_PLATFORM_SECRET"):
        Settings(_env_file=None).require_deployable()
    monkeypatch.setenv("DEEPCLAW_PLATFORM_SECRET", "s" * 48)
    with pytest.raises(SystemExit, match="DEEPCLAW_ENCRYPTION_KEYS"):
        Settings(_env_file=None).require_deployable()
    monkeypatch.setenv("DEEPCLAW_ENCRYPTION_KEYS", "k1:" + "A" * 43)
    Settings(_env_file=None).require_deployable()


MONITORING = Path(__file__).parents[1] / "deploy" / "monitoring"
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
