"""ReminderWorkflow (`reminder-<id>`): a durable timer until the reminder is due, then a text or a
call from the user's own number. `cancel` (the agent's cancel_reminder) ends it quietly."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.reminders import ReminderActivities, ReminderState
    from core.temporal import USER_ID


class ReminderInput(BaseModel):
    reminder_id: uuid.UUID
    user_id: uuid.UUID
    due_at: datetime


def workflow_id(reminder_id: uuid.UUID) -> str:
    return f"reminder-{reminder_id}"


DELIVER = {"start_to_close_timeout": timedelta(seconds=30),
           "retry_policy": RetryPolicy(maximum_attempts=5,
                                       non_retryable_error_types=["ReminderMissing", "NoNumber", "OptedOut"])}
RECORD = {"start_to_close_timeout": timedelta(seconds=30)}


@workflow.defn
class ReminderWorkflow:
    def __init__(self) -> None:
        self.state = "scheduled"

    @workflow.signal
    def cancel(self) -> None:
        if self.state == "scheduled":
            self.state = "cancelled"

    @workflow.query
    def current_state(self) -> str:
        return self.state

    @workflow.run
    async def run(self, input: ReminderInput) -> str:
        workflow.upsert_search_attributes([USER_ID.value_set(str(input.user_id))])
        workflow.set_current_details(f"due {input.due_at.isoformat()}")
        wait = max(timedelta(0), input.due_at - workflow.now())
        try:
            await workflow.wait_condition(lambda: self.state != "scheduled", timeout=wait)
        except TimeoutError:
            try:
                await workflow.execute_activity_method(ReminderActivities.deliver_reminder, input.reminder_id, **DELIVER)
                self.state = "fired"
            except ActivityError as error:
                workflow.logger.error("reminder %s not delivered: %s", input.reminder_id, error.cause or error)
                self.state = "failed"
        await workflow.execute_activity_method(
            ReminderActivities.set_reminder_state, ReminderState(reminder_id=input.reminder_id, state=self.state),
            **RECORD)
        return self.state
