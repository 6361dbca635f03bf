"""core.process.ChildProcess: pausing a process group, and stopping one that is paused (an Idle
agent's gateway is frozen; deleting that user stops it)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import psutil

from core.process import ChildProcess

# Counts in a file every 20 ms (with a second thread, idle); on SIGTERM writes "stopped" and exits 0.
COUNTER = """
import signal, sys, threading, time
threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
path = sys.argv[1]
def stop(*_):
    open(path, "a").write("stopped\\n"); sys.exit(0)
signal.signal(signal.SIGTERM, stop)
n = 0
while True:
    n += 1
    open(path, "w").write(str(n))
    time.sleep(0.02)
"""


def _count(path: Path) -> int:
    text = path.read_text() if path.exists() else ""
    return int(text) if text.strip().isdigit() else 0


async def _until_count_above(path: Path, value: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while (now := _count(path)) <= value:
        if time.monotonic() > deadline:
            raise AssertionError(f"the process did not count past {value} in {timeout:.0f} s")
        await asyncio.sleep(0.02)
    return now


async def test_a_paused_process_makes_no_progress_and_a_paused_one_still_stops_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "count"
    child = ChildProcess("counter", [sys.executable, "-c", COUNTER, str(path)], log_path=str(tmp_path / "log"))
    await child.start()
    try:
        running = await _until_count_above(path, 2)
        child.pause()
        paused_at = await _until_count_above(path, running - 1)  # whatever it wrote before the signal landed
        await asyncio.sleep(0.3)  # fifteen of its ticks: a frozen process writes none
        assert _count(path) == paused_at, "a paused process went on running"
        child.resume()
        await _until_count_above(path, paused_at)

        child.pause()
        started = time.monotonic()
        await child.stop(timeout=5)
        assert time.monotonic() - started < 3, "a paused process waited out the stop timeout"
        assert child.proc is not None and child.proc.returncode == 0, "it handled SIGTERM (not killed)"
        assert path.read_text().endswith("stopped\n")
    finally:
        await child.stop()


def _group_nice(pid: int) -> int | None:
    """The nice value of the process's autogroup ("/autogroup-42 nice 15"); None without autogroup."""
    try:
        return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])
    except OSError:
        return None


async def test_a_low_priority_child_is_low_priority_in_its_scheduling_group_too(tmp_path: Path) -> None:
    # Each child runs in a session of its own; with autogroup scheduling a nice value alone would only
    # weigh inside that session, and a niced spare gateway took an equal share of the CPU.
    path = tmp_path / "count"
    child = ChildProcess("counter", [sys.executable, "-c", COUNTER, str(path)], log_path=str(tmp_path / "log"),
                         nice=15)
    await child.start()
    try:
        assert child.pid is not None
        await _until_count_above(path, 2)  # running, its second thread started (at nice 15 too)
        assert psutil.Process(child.pid).nice() == 15
        autogroup = Path("/proc/sys/kernel/sched_autogroup_enabled")
        if autogroup.exists() and autogroup.read_text().strip() == "1":
            assert _group_nice(child.pid) == 15, "its session's scheduling group kept the default priority"
        child.set_priority(0)  # a spare becoming someone's agent
        assert psutil.Process(child.pid).nice() == 0
        threads = [thread.id for thread in psutil.Process(child.pid).threads()]
        assert len(threads) > 1 and {os.getpriority(os.PRIO_PROCESS, t) for t in threads} == {0}, \
            "every thread is reniced, not just the main one"
        assert _group_nice(child.pid) in (0, None)
    finally:
        await child.stop()
