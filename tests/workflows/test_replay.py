"""Every workflow type's recorded histories (tests/histories.py) replay on today's code: a change
that would break a workflow already running in production fails here, before it is deployed.
Such a change goes behind `workflow.patched` and its new shape is recorded as the next version."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from tests import histories
from tests.conftest import PLATFORM_CONVERTER, WORKFLOW_TYPES
from workers.registry import WORKFLOWS

RECORDED = sorted(path for paths in histories.recorded().values() for path in paths)


def test_every_workflow_type_has_a_recorded_history() -> None:
    missing = sorted(set(WORKFLOW_TYPES) - histories.recorded().keys())
    assert not missing, f"record with DEEPCLAW_RECORD_HISTORIES=1 (tests/histories.py): {missing}"


@pytest.mark.parametrize("path", RECORDED, ids=[path.name for path in RECORDED])
async def test_a_recorded_history_replays(path: Path) -> None:
    recorded = json.loads(path.read_text())
    history = WorkflowHistory.from_json(recorded["workflow_id"], recorded["history"])
    assert len(history.events) > 2, "a history with something in it"
    result = await Replayer(workflows=WORKFLOWS, data_converter=PLATFORM_CONVERTER).replay_workflow(
        history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
