"""`python -m devstack`: the development commands, apart from the platform's own CLI (core/cli.py),
so that no production module imports devstack: `run` starts the whole platform locally (what
`make run` does), `tools` installs the pinned Node and OpenClaw."""

from __future__ import annotations

import argparse
import asyncio
import logging

from core import cli
from core.settings import get_settings

log = logging.getLogger("deepclaw")


def _run(_: argparse.Namespace) -> int:
    from devstack.supervisor import run_dev

    return asyncio.run(run_dev(get_settings()))


def _tools(_: argparse.Namespace) -> None:
    from devstack.tools import install

    tools = install(get_settings().tools_dir)
    log.info("node %s, openclaw %s", tools.node, tools.openclaw)


COMMANDS: dict[str, cli.Command] = {
    "run": (_run, "run the whole platform locally (what `make run` does)"),
    "tools": (_tools, "install the pinned Node and OpenClaw (once; quick when present)"),
}


def main(argv: list[str] | None = None) -> None:
    cli.main(argv, commands=COMMANDS, prog="python -m devstack", description=__doc__)


if __name__ == "__main__":
    main()
