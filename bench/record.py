"""Runs a benchmark and records its last JSON line for bench/capacity.py, with what produced it.

    python bench/record.py NAME -- python bench/wake.py --rounds 3

prints the benchmark's output as it comes and writes bench/results/NAME.json (BENCH_RESULTS: another folder):
{"command", "date", "machine", "line"}; a run that fails or prints no JSON line records nothing.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(os.environ.get("BENCH_RESULTS") or Path(__file__).resolve().parent / "results")


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} x {cpu}, {memory_gb:.0f} GB, {platform.system()} {platform.release()}"


def main(name: str, command: list[str]) -> int:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    last = ""
    assert process.stdout is not None
    for line in process.stdout:
        print(line, end="", flush=True)
        if line.strip():
            last = line.strip()
    if process.wait() != 0:
        print(f"record: {command[0]} failed (exit {process.returncode}); nothing recorded", file=sys.stderr)
        return process.returncode or 1
    try:
        figures = json.loads(last)
    except json.JSONDecodeError:
        print("record: the last line is not JSON; nothing recorded", file=sys.stderr)
        return 1
    RESULTS.mkdir(exist_ok=True)
    # The interpreter by name: the line says what ran, not where this machine keeps it.
    shown = " ".join(Path(part).name if index == 0 and Path(part).name.startswith("python") else part
                     for index, part in enumerate(command))
    record = {"command": shown, "date": datetime.now(UTC).strftime("%Y-%m-%d"), "machine": machine(), "line": figures}
    (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"record: {RESULTS / f'{name}.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        raise SystemExit(__doc__)
    raise SystemExit(main(sys.argv[1], sys.argv[3:]))
