"""The capacity model: it runs on the recorded benchmark lines and the dated price list, and every
input it used can be traced to the line, price or named assumption it came from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _capacity(*args: str) -> tuple[dict, str]:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "capacity.py"), *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stdout


def test_the_model_prints_its_figures_for_each_scale() -> None:
    summary, printed = _capacity()
    assert set(summary) == {"users", "cost_per_user_month", "cost_per_user_month_1m", "first_limit", "inputs"}
    assert summary["users"] == [10_000, 100_000, 1_000_000]
    assert len(summary["cost_per_user_month"]) == len(summary["first_limit"]) == 3
    assert all(cost > 0 for cost in summary["cost_per_user_month"])
    assert summary["cost_per_user_month_1m"] == summary["cost_per_user_month"][-1]
    for users in ("10,000", "100,000", "1,000,000"):  # node counts by pool, Temporal, PostgreSQL, for each
        block = printed.split(f"== {users} users")[1].split("\n==")[0]
        assert all(part in block for part in ("pool agents", "pool voice", "pool platform", "history shards",
                                              "PostgreSQL (platform)", "PostgreSQL (temporal)", "first limit"))
    assert "Twilio $" in printed and "Deepgram $" in printed, "per-use prices are shown apart"


def test_every_input_names_where_it_came_from() -> None:
    summary, _ = _capacity()
    prices = tomllib.loads((ROOT / "bench" / "prices.toml").read_text())
    kinds = set()
    for name, used in summary["inputs"].items():
        source = used["from"]
        if source.startswith("bench/results/"):  # the recorded line holds the value
            path, key = source.split(" ", 1)[0].rstrip(":"), source.split(": ", 1)[1].split(" (")[0]
            value = json.loads((ROOT / path).read_text())["line"]
            for step in key.split(".", 1):
                value = value[step]
            assert abs(float(value) - used["value"]) <= 1e-3 * max(1.0, abs(float(value))), name
            kinds.add("bench")
        elif source.startswith("bench/prices.toml"):
            entry = prices
            for step in source.split(" ")[1].split("."):
                entry = entry[step]
            assert (entry["usd"] if isinstance(entry, dict) else entry) == used["value"], name
            kinds.add("price")
        else:
            assert source.startswith(("assumption: ", "usage profile")), (name, source)
            kinds.add("other")
    assert kinds == {"bench", "price", "other"}
    for file in ("usage_day", "voice_bridge", "wake_local", "wake_kubernetes_sim"):
        assert any(f"bench/results/{file}.json" in used["from"] for used in summary["inputs"].values()), file


def test_a_price_changed_in_the_list_changes_the_cost(tmp_path: Path) -> None:
    cheaper = (ROOT / "bench" / "prices.toml").read_text().replace('"m-8vcpu-64gb" = { usd = 336.0',
                                                                   '"m-8vcpu-64gb" = { usd = 33.6')
    assert cheaper != (ROOT / "bench" / "prices.toml").read_text()
    (tmp_path / "prices.toml").write_text(cheaper)
    listed, _ = _capacity()
    changed, _ = _capacity("--prices", str(tmp_path / "prices.toml"))
    assert changed["cost_per_user_month_1m"] < listed["cost_per_user_month_1m"]


def test_record_keeps_a_benchmarks_last_line_with_its_command(tmp_path: Path) -> None:
    line = {"figure": 1.5}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "record.py"), "tiny", "--", sys.executable, "-c",
                           f"print('warming up'); print({json.dumps(json.dumps(line))})"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "BENCH_RESULTS": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert "warming up" in done.stdout, "the benchmark's own output is shown"
    recorded = json.loads((tmp_path / "tiny.json").read_text())
    assert recorded["line"] == line and recorded["command"].startswith("python")
    assert recorded["date"] and "GB" in recorded["machine"]
    failed = subprocess.run([sys.executable, str(ROOT / "bench" / "record.py"), "broken", "--", sys.executable, "-c",
                             "print('{}'); raise SystemExit(3)"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "BENCH_RESULTS": str(tmp_path)})
    assert failed.returncode == 3 and not (tmp_path / "broken.json").exists()
