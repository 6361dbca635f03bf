"""The suite in two processes (pytest-xdist: `make test` runs `pytest -n 2`): the machine has two
cores, and one process alone left a third of them idle, waiting on calls, timers and OpenClaw.

Each process starts its own PostgreSQL, Temporal dev server and model stand-in (seconds), but a
voice platform with its warm OpenClaws, or the session's OpenClaw, costs a gateway boot (~25 s of a
core) per process that starts it. So work goes out by module, and every module that uses one of
those shared fixtures goes to one process together (SHARED_MODULES); a test of any other module
that uses one fails at its setup (`runtest_setup`), so a new test cannot quietly start a second copy.

xdist's own `loadgroup` marks do not work with pytest 9 (they rewrite a node id pytest no longer
reads), hence this scheduler, whatever `--dist` says: xdist's module-wise one, with SHARED_MODULES as
one unit, handed out first.
"""

from __future__ import annotations

from typing import Any

import pytest

# Fixtures that start something costly once per process, and the modules that may use them.
SHARED_FIXTURES = ("openclaw_gateway", "shared_platform", "hotline_platform")
SHARED_MODULES = ("tests/voice/", "tests/emulators/test_llm.py", "tests/activities/test_openclaw_warmth.py")
SHARED_UNIT = "shared-platforms"


def _unit(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0]
    return SHARED_UNIT if module.startswith(SHARED_MODULES) else module


def runtest_setup(item: pytest.Item) -> None:
    """A test outside SHARED_MODULES that uses a shared fixture fails: it would start that fixture
    again in the other process."""
    if _unit(item.nodeid) != SHARED_UNIT and (used := set(SHARED_FIXTURES) & set(getattr(item, "fixturenames", ()))):
        pytest.fail(f"{sorted(used)} are shared by the modules in SHARED_MODULES (tests/parallel.py), which run in "
                    f"one process: add {item.nodeid.split('::', 1)[0]} there", pytrace=False)


def collection_modifyitems(items: list[pytest.Item]) -> None:
    """The shared unit first (it is the longest: nothing should wait behind it); stable otherwise."""
    items.sort(key=lambda item: _unit(item.nodeid) != SHARED_UNIT)


def make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class SharedPlatformScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid)

    config.option.loadscopereorder = False  # units in the collection's order: the shared one first
    return SharedPlatformScheduling(config, log)
