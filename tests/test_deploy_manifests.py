"""deploy/kubernetes manifests are valid Kubernetes 1.37 objects (strict: no unknown fields)."""

from pathlib import Path

import kubernetes_validate
import yaml

DEPLOY = Path(__file__).parents[1] / "deploy" / "kubernetes"


def test_platform_manifests_validate() -> None:
    documents = [doc for path in sorted(DEPLOY.glob("*.yaml")) if path.name != "kustomization.yaml"
                 for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert {d["kind"] for d in documents} >= {"Namespace", "Deployment", "Job", "Role", "RoleBinding", "ServiceAccount"}
    for document in documents:
        kubernetes_validate.validate(document, "1.37.0", strict=True)
    worker = next(d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "deepclaw-worker")
    assert worker["spec"]["template"]["spec"]["serviceAccountName"] == "deepclaw-worker"
