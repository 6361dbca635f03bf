"""deploy/kubernetes manifests are valid Kubernetes 1.37 objects (strict: no unknown fields)."""

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
