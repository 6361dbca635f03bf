"""The warmth preload is installed in a real gateway (on Kubernetes: test_kubernetes_runtime). What it
buys is measured by bench/first_answer.py's after_idle_60s_ms (a minute of silence costs no rebuild
of OpenClaw's session-history worker), bench/sms.py (no answer a minute waits for one, and a text
after a minute of silence finds the agent's database open) and bench/wake.py (a woken agent's
database opens in a thread that has its modules loaded, and its config reloads without waiting out
fixed delays). A woken agent's database served by a kept thread and checked by a process forked
ahead: test_local_runtime."""

import asyncio
import time

import psutil

from activities.runtime.gateway import GatewayProcess
from activities.runtime.openclaw_config import WARMTH_PRELOAD
from activities.runtime.wake import Gateway, warm_up
from tests.polling import until

INSTALLED = "deepclaw warmth: keeping worker threads warm"
STRETCHED = "deepclaw warmth: worker-placement sweep every 1800 s"
WATCHER = "deepclaw warmth: config watcher waits 0.02 s for a write to settle"
KEPT_OPEN = "deepclaw warmth: idle agent database kept open 300 s"  # said after the first run
CHECK_LATER = "deepclaw warmth: agent database quick check after 30 s"  # from the second database opened on
DEBOUNCE = "deepclaw warmth: config reload debounce 0.01 s"  # once the config is written
REUSED = "deepclaw warmth: a database worker thread kept from closed databases serves the next"
FORKED_AHEAD = "deepclaw warmth: an integrity check process forked ahead serves the next check"
INTEGRITY_CHILD = "sqlite-integrity.worker.js"


async def test_the_local_gateway_runs_with_the_preload(openclaw_gateway: GatewayProcess) -> None:
    # A changed OpenClaw (other module names, shapes or timers) would say "left alone (...)" here
    # instead, or leave a line out.
    await warm_up(Gateway(openclaw_gateway.base_url, openclaw_gateway.token))
    openclaw_gateway.write_config()  # unchanged: the watcher still sees a write
    log = openclaw_gateway.home / "gateway.log"
    deadline = time.monotonic() + 30
    for line in (INSTALLED, STRETCHED, WATCHER, KEPT_OPEN, DEBOUNCE):
        while line not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline, f"no {line!r} in {log}:\n{log.read_text(errors='replace')[-2000:]}"
            await asyncio.sleep(0.2)
    assert openclaw_gateway.preload_path.read_text() == WARMTH_PRELOAD.read_text()
    assert f"--import {openclaw_gateway.preload_path.as_uri()}" in openclaw_gateway.environment()["NODE_OPTIONS"]


def integrity_checks_ahead(gateway_pid: int) -> list[psutil.Process]:
    """The gateway's integrity-check processes forked ahead (idle until OpenClaw asks for a check)."""
    return [p for p in psutil.Process(gateway_pid).children(recursive=True)
            if any(part.endswith(INTEGRITY_CHILD) for part in p.cmdline())]


async def test_an_integrity_check_process_waits_forked_ahead(openclaw_gateway: GatewayProcess) -> None:
    assert openclaw_gateway.child is not None and openclaw_gateway.child.pid is not None
    pid = openclaw_gateway.child.pid

    async def forked() -> bool:
        return len(integrity_checks_ahead(pid)) == 1

    await until(forked, "an integrity check process forked ahead", timeout=60, every=0.5)
