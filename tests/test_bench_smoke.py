"""The benchmarks stay runnable: tiny runs of the voice bridge's and the load bench, with the figures
their issues name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_voice_bridge_bench_prints_its_figures() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "voice_bridge.py"), "--calls", "3", "--seconds", "1"],
                          capture_output=True, text=True, timeout=180, cwd=ROOT,
                          env={**os.environ, "BENCH_STEER_RX": "0"})  # a test leaves the kernel's settings alone
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(summary) == {"calls", "p99_added_ms_in", "p99_added_ms_out", "cpu_s_per_call_minute", "rss_mb_per_call"}
    assert summary["calls"] == 3
    level = json.loads(done.stdout.strip().splitlines()[-2])
    assert level["frames"] == level["frames_back"] == 3 * 50, "every frame went through the bridge and back"


def test_load_bench_prints_its_figures_with_nothing_lost() -> None:
    """One owner's call (three spoken turns) and two texts through the whole platform as `make run`
    starts it (the agent an OpenClaw-protocol stand-in: no gateway boots)."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "load.py"), "--calls", "1", "--sms", "2",
                           "--onboardings", "0", "--real-agents", "0", "--text-spread", "3"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(summary) == {"calls", "sms", "onboardings", "real_agents", "p50_turn_ms", "p99_turn_ms",
                            "p99_sms_reply_s", "p99_onboarding_step_ms", "lost", "duplicated"}
    assert (summary["calls"], summary["sms"], summary["real_agents"]) == (1, 2, 0)
    assert summary["lost"] == 0 and summary["duplicated"] == 0, summary
    assert summary["p50_turn_ms"] > 0 and summary["p99_sms_reply_s"] > 0, "every turn and text was answered and timed"
    assert summary["p99_onboarding_step_ms"] is None, "no onboarding, no figure (JSON null)"
