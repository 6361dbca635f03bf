"""SmsConversationWorkflow changed how it records a turn's texts (one activity for all, behind the
`texts-recorded-together` patch): a run begun by the code before replays without a
nondeterminism error. The history was recorded from that code (3 texts read in one turn, each
recorded and marked answered by an activity of its own)."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.sms_conversation import SmsConversationWorkflow

HISTORY = Path(__file__).parent / "histories" / "sms_conversation_one_activity_per_text.json"


async def test_a_run_begun_before_texts_were_recorded_together_replays() -> None:
    history = WorkflowHistory.from_json("sms-00000000-0000-0000-0000-00000000002a", HISTORY.read_text())
    scheduled = [e.activity_task_scheduled_event_attributes.activity_type.name for e in history.events
                 if e.HasField("activity_task_scheduled_event_attributes")]
    assert scheduled.count("record_inbound") == 3 and scheduled.count("mark_answered") == 3, scheduled
    result = await Replayer(workflows=[SmsConversationWorkflow], data_converter=pydantic_data_converter
                            ).replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
