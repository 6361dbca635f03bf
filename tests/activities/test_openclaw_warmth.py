"""The warmth preload is installed in a real gateway (on Kubernetes: test_kubernetes_runtime). What it
buys is measured by bench/first_answer.py's after_idle_60s_ms (a minute of silence costs no rebuild
of OpenClaw's session-history worker) and bench/sms.py (no answer a minute waits for one, and a text
after a minute of silence finds the agent's database open)."""

import asyncio
import time

from activities.runtime.gateway import GatewayProcess
from activities.runtime.openclaw_config import WARMTH_PRELOAD
from activities.runtime.wake import Gateway, warm_up

INSTALLED = "deepclaw warmth: keeping worker threads warm"
STRETCHED = "deepclaw warmth: worker-placement sweep every 1800 s"
KEPT_OPEN = "deepclaw warmth: idle agent database kept open 300 s"  # said after the first run


async def test_the_local_gateway_runs_with_the_preload(openclaw_gateway: GatewayProcess) -> None:
    # A changed OpenClaw (other module names, shapes or timers) would say "left alone (...)" here
    # instead, or leave a line out.
    await warm_up(Gateway(openclaw_gateway.base_url, openclaw_gateway.token))
    log = openclaw_gateway.home / "gateway.log"
    deadline = time.monotonic() + 30
    for line in (INSTALLED, STRETCHED, KEPT_OPEN):
        while line not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline, f"no {line!r} in {log}:\n{log.read_text(errors='replace')[-2000:]}"
            await asyncio.sleep(0.2)
    assert openclaw_gateway.preload_path.read_text() == WARMTH_PRELOAD.read_text()
    assert f"--import {openclaw_gateway.preload_path.as_uri()}" in openclaw_gateway.environment()["NODE_OPTIONS"]
