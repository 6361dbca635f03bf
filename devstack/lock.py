"""`make lock`: regenerates requirements.lock and requirements-dev.lock from pyproject.toml.

The runtime set is resolved alone in a fresh virtual environment (so nothing of the dev tools leaks
into what production installs); the dev extra is then resolved on top of it, constrained to the
runtime pins, and only what it adds goes into requirements-dev.lock. Needs the package registry.

    python -m devstack.lock            # rewrites both locks in the checkout
    python -m devstack.lock --out DIR  # writes them to DIR instead (to compare)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).parents[1]
RUNTIME_HEADER = ("# The platform's runtime packages, their whole tree pinned: what the production image installs.\n"
                  "# Regenerate with `make lock` (devstack/lock.py); never edit by hand.\n")
DEV_HEADER = ("# Test and development packages (embedded servers, stand-ins, test tools), on top of requirements.lock.\n"
              "# Never in the production image. Regenerate with `make lock` (devstack/lock.py).\n")
NOT_PINNED = {"pip", "setuptools", "wheel", "deepclaw"}


def _name(line: str) -> str:
    return re.split(r"[=<>\[;\s]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _frozen(python: Path) -> dict[str, str]:
    listed = subprocess.run([str(python), "-m", "pip", "freeze", "--all"], check=True, capture_output=True,
                            text=True).stdout
    return {_name(line): line for line in listed.splitlines() if "==" in line and _name(line) not in NOT_PINNED}


def _install(python: Path, *args: str) -> None:
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args], check=True)


def lock(out: Path) -> tuple[int, int]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    with tempfile.TemporaryDirectory(prefix="deepclaw-lock-") as tmp:
        venv.create(tmp, with_pip=True)
        python = Path(tmp) / "bin" / "python"
        _install(python, *project["dependencies"])
        runtime = _frozen(python)
        constraints = Path(tmp) / "runtime.txt"
        constraints.write_text("\n".join(runtime.values()) + "\n")
        _install(python, "-c", str(constraints), *project["optional-dependencies"]["dev"])
        dev = {name: line for name, line in _frozen(python).items() if name not in runtime}
    out.mkdir(parents=True, exist_ok=True)
    (out / "requirements.lock").write_text(RUNTIME_HEADER + "\n".join(sorted(runtime.values(), key=str.lower)) + "\n")
    (out / "requirements-dev.lock").write_text(DEV_HEADER + "\n".join(sorted(dev.values(), key=str.lower)) + "\n")
    return len(runtime), len(dev)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT, help="where to write the locks (default: the checkout)")
    args = parser.parse_args()
    runtime, dev = lock(args.out)
    print(f"requirements.lock: {runtime} packages; requirements-dev.lock: {dev} more ({args.out})")  # noqa: T201


if __name__ == "__main__":
    sys.exit(main())
