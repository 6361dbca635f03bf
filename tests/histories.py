"""Recorded workflow histories (tests/histories/<WorkflowType>.v<N>.json), replayed on every run by
tests/workflows/test_replay.py so that a change which would break workflows already running in
production fails the suite. A change of that kind goes behind `workflow.patched`, and its new
shape is recorded as the next version, the old file kept.

Recording: `DEEPCLAW_RECORD_HISTORIES=1 make test` (or a subset of the suite that runs the types
wanted); at the end of the session, for each workflow type without a history yet, the longest
history the session's Temporal dev server holds is written. After a patched change, name the types
instead of 1 (`DEEPCLAW_RECORD_HISTORIES=SmsConversationWorkflow`, comma-separated) and run, in one
process (`-p no:xdist`), the tests that take the new path: each named type gets its next version,
once. Payloads are encrypted with the test settings' key (the development key every test derives),
which the replay uses too."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from typing import Any

from temporalio.client import Client, Interceptor, OutboundInterceptor, StartWorkflowInput, WorkflowHandle
from temporalio.service import RPCError

FOLDER = Path(__file__).parent / "histories"
_ASKED = os.environ.get("DEEPCLAW_RECORD_HISTORIES", "").strip()
RECORD = _ASKED not in ("", "0")
# The types whose next version is recorded (after a patched change); "1" asks for missing ones only.
NEXT_VERSIONS = frozenset() if _ASKED in ("", "0", "1") else frozenset(t.strip() for t in _ASKED.split(",") if t.strip())
_written: set[str] = set()  # types given a version by this process: one new version per session
_FILE = re.compile(r"^(?P<type>[A-Za-z]+)\.v(?P<version>\d+)\.json$")


def recorded() -> dict[str, list[Path]]:
    """Each workflow type's recorded histories, oldest version first."""
    found: dict[str, list[tuple[int, Path]]] = {}
    for path in FOLDER.glob("*.json"):
        if match := _FILE.match(path.name):
            found.setdefault(match["type"], []).append((int(match["version"]), path))
    return {kind: [path for _, path in sorted(paths)] for kind, paths in found.items()}


def workflow_id_of(path: Path) -> str:
    return json.loads(path.read_text())["workflow_id"]


class StartedWorkflows(Interceptor):
    """What a client started, by type: the time-skipping test server cannot list its workflows."""

    def __init__(self) -> None:
        self.ids: dict[str, set[str]] = {}

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        started = self

        class Outbound(OutboundInterceptor):
            async def start_workflow(self, input: StartWorkflowInput) -> WorkflowHandle[Any, Any]:
                started.ids.setdefault(input.workflow, set()).add(input.id)
                return await super().start_workflow(input)

        return Outbound(next)


async def _workflow_ids(client: Client, kind: str, started: StartedWorkflows | None) -> list[str]:
    try:
        return [execution.id async for execution in client.list_workflows(f"WorkflowType = '{kind}'")]
    except RPCError:  # the time-skipping server has no visibility: what its client started
        return sorted(started.ids.get(kind, ())) if started else []


async def record_missing(client: Client, workflow_types: list[str], started: StartedWorkflows | None = None
                         ) -> list[Path]:
    """Writes version 1 of every type in `workflow_types` that has none, and the next version of the
    types in NEXT_VERSIONS, from the server's longest history of the type."""
    have = recorded()
    written = []
    for kind in workflow_types:
        if kind in _written or (kind in have and kind not in NEXT_VERSIONS):
            continue
        best: tuple[int, str, str] | None = None
        for workflow_id in await _workflow_ids(client, kind, started):
            history = await client.get_workflow_handle(workflow_id).fetch_history()
            if best is None or len(history.events) > best[0]:
                best = (len(history.events), workflow_id, history.to_json())
        if best is None:
            continue
        FOLDER.mkdir(exist_ok=True)
        versions = [int(_FILE.match(p.name)["version"]) for p in have.get(kind, [])]  # type: ignore[index]
        path = FOLDER / f"{kind}.v{max(versions, default=0) + 1}.json"
        path.write_text(json.dumps({"workflow_id": best[1], "history": json.loads(best[2])}, indent=1) + "\n")
        written.append(path)
        _written.add(kind)
    return written
