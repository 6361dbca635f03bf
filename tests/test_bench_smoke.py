"""The benchmarks stay runnable: a tiny run of the voice bridge's, with the figures its issue names."""

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
