"""Where the pinned Node 24 and OpenClaw are (the local agent runtime runs them from there).
`python -m devstack tools` (devstack/tools.py) installs them; nothing here fetches anything."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

NODE_VERSION = "24.21.0"
OPENCLAW_VERSION = "2026.9.6"


@dataclass(frozen=True)
class Tools:
    root: Path

    @property
    def node_dir(self) -> Path:
        return self.root / f"node-{NODE_VERSION}"

    @property
    def node(self) -> Path:
        return self.node_dir / "bin" / "node"

    @property
    def openclaw_dir(self) -> Path:
        return self.root / f"openclaw-{OPENCLAW_VERSION}"

    @property
    def openclaw(self) -> Path:
        """OpenClaw's CLI entry script, run as `node <openclaw> gateway run`."""
        return self.openclaw_dir / "node_modules" / "openclaw" / "openclaw.mjs"

    def installed(self) -> bool:
        return self.node.exists() and (self.openclaw_dir / ".complete").exists()

    def require(self) -> Tools:
        if not self.installed():
            raise FileNotFoundError(
                f"Node {NODE_VERSION} / OpenClaw {OPENCLAW_VERSION} are not installed in {self.root}: run `python -m devstack tools`"
            )
        return self
