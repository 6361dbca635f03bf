"""A real OpenClaw gateway as a local child process (the local runtime's building block)."""

from __future__ import annotations

import json
import os
import resource
from pathlib import Path
from typing import Any

import httpx

from activities.runtime.agent_users import AgentUser
from activities.runtime.openclaw_config import SLIM_ENV, WARMTH_PRELOAD, node_options
from core.process import ChildProcess
from activities.runtime.tools import Tools


# Per gateway: a fork bomb in the agent's code execution stops here (threads count too).
MAX_PROCESSES = 2048


class GatewayProcess:
    def __init__(self, tools: Tools, home: Path, *, port: int, token: str, config: dict[str, Any],
                 user: AgentUser | None = None, instance: str = "", key_id: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.tools = tools.require()
        self.home = home
        self.port = port
        self.token = token
        self.instance = instance  # tells this gateway from earlier ones on the same port
        self.key_id = key_id  # which platform secret its token was derived from
        self.config = config
        self.user = user  # the Unix user it runs as (None: ours)
        self.child: ChildProcess | None = None
        self.extra_env = dict(env or {})  # e.g. what its config names as ${VAR} (a pod's Secret env)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def state_dir(self) -> Path:
        return self.home / ".openclaw"

    @property
    def config_path(self) -> Path:
        return self.state_dir / "openclaw.json"

    @property
    def preload_path(self) -> Path:
        # Beside node in the tools directory, which every gateway's Unix user can already read.
        return self.tools.root / WARMTH_PRELOAD.name

    def environment(self) -> dict[str, str]:
        return {
            "PATH": f"{self.tools.node.parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(self.home),
            "OPENCLAW_STATE_DIR": str(self.state_dir),
            "OPENCLAW_CONFIG_PATH": str(self.config_path),
            "OPENCLAW_GATEWAY_TOKEN": self.token,
            "NODE_OPTIONS": node_options(str(self.preload_path)),
            # Node's compile cache lives under TMPDIR: keep it across restarts (one per Unix user).
            "TMPDIR": str(self.user.scratch if self.user else self.tools.root / "tmp"),
            **SLIM_ENV,
            **self.extra_env,
        }

    def write_config(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.tools.root / "tmp").mkdir(exist_ok=True)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.config, indent=2))
        self.own(tmp)
        tmp.replace(self.config_path)

    def write_preload(self) -> None:
        text = WARMTH_PRELOAD.read_text()
        if self.preload_path.exists() and self.preload_path.read_text() == text:
            return
        tmp = self.preload_path.with_suffix(f".{os.getpid()}.{self.port}.tmp")  # gateways start side by side
        tmp.write_text(text)
        tmp.chmod(0o644)
        tmp.replace(self.preload_path)

    def own(self, path: Path) -> None:
        """What the platform creates for the gateway belongs to the gateway's Unix user."""
        if self.user:
            os.chown(path, *self.user.ids)

    async def start(self, log_path: Path | None = None, *, nice: int = 0) -> None:
        self.write_config()
        for path in (self.home, self.state_dir):  # its home is its own, and no one else's
            path.chmod(0o700)
            self.own(path)
        self.child = self.command(f"openclaw:{self.port}", ["gateway", "run"], log_path or self.home / "gateway.log",
                                  nice=nice)
        await self.child.start()

    def command(self, name: str, args: list[str], log_path: Path, *, nice: int = 0) -> ChildProcess:
        """`openclaw <args>` with this gateway's environment, as its Unix user and within its limits."""
        self.write_preload()  # its NODE_OPTIONS name it
        return ChildProcess(
            name,
            [str(self.tools.node), str(self.tools.openclaw), *args],
            env=self.environment(),
            cwd=str(self.home),
            log_path=str(log_path),
            nice=nice,
            user=self.user.name if self.user else None,
            extra_groups=self.user.groups if self.user else (),
            limits={resource.RLIMIT_NPROC: MAX_PROCESSES, resource.RLIMIT_CORE: 0} if self.user else None,
        )

    async def wait_ready(self, timeout: float = 60.0) -> float:
        """Seconds until /readyz answered 200."""
        async def ready() -> bool:
            async with httpx.AsyncClient(timeout=2.0) as http:
                return (await http.get(f"{self.base_url}/readyz")).status_code == 200

        assert self.child is not None
        return await self.child.wait_until(ready, what=f"OpenClaw on :{self.port}", timeout=timeout, interval=0.2)

    def set_priority(self, nice: int) -> None:
        """Renice the gateway and its children (e.g. a spare becoming a user's agent)."""
        if self.child:
            self.child.set_priority(nice)

    async def stop(self) -> None:
        if self.child:
            await self.child.stop(timeout=5.0)
