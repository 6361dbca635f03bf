"""ReminderWorkflow (`reminder-<id>`): a durable timer until the reminder is due, in the user's time
zone, then one delivery (workflows/delivery.py: a text, or a call that falls back to a text).
`lead` before it is due the agent is woken to phrase it (a plain text if it cannot in time). A
repeating reminder continues as new for each occurrence. `reschedule` and `cancel` are Updates
that answer whether they took effect: until the reminder is being delivered, they do."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.delivery import DeliveryEnd, DeliveryRequest
    from activities.reminders import PhraseRequest, ReminderActivities, ReminderRow
    from core.models import Channel, DeliveryOutcome
    from core.recurrence import next_occurrence
    from core.temporal import USER_ID
    from core.texts import plain_reminder
    from workflows.delivery import DeliveryWorkflow
    from workflows.delivery import workflow_id as delivery_workflow_id


class ReminderState(StrEnum):
    SCHEDULED = "scheduled"
    FIRED = "fired"
    CANCELLED = "cancelled"
    FAILED = "failed"


class ReminderInput(BaseModel):
    reminder_id: uuid.UUID
    user_id: uuid.UUID
    text: str
    channel: Channel = Channel.SMS
    due_at: datetime  # this occurrence
    agent_name: str = "your assistant"
    time_zone: str = "UTC"
    recurrence: str | None = None  # an RRULE (core.recurrence)
    first_due_at: datetime | None = None  # what the rule counts from (the first occurrence)
    occurrence: int = 0  # this occurrence's number, from 0
    lead_s: float = 60.0  # wake the agent to phrase it this long before


class Reschedule(BaseModel):
    due_at: datetime


class ReminderChange(BaseModel):
    took_effect: bool
    state: ReminderState
    due_at: datetime
    reason: str | None = None


def workflow_id(reminder_id: uuid.UUID) -> str:
    return f"reminder-{reminder_id}"


def occurrence_delivery_id(reminder_id: uuid.UUID, occurrence: int) -> uuid.UUID:
    """The same id for an occurrence whatever happens: it is delivered at most once."""
    return uuid.uuid5(reminder_id, f"occurrence-{occurrence}")


RECORD = {"start_to_close_timeout": timedelta(seconds=30)}


@workflow.defn
class ReminderWorkflow:
    @workflow.init
    def __init__(self, input: ReminderInput) -> None:
        # From the input, before any handler runs: an Update can arrive in the very first workflow task.
        self.state = ReminderState.SCHEDULED
        self.due: datetime = input.due_at
        self.delivering = False
        self.changed = False
        self.reminder_id: uuid.UUID = input.reminder_id

    @workflow.update
    async def reschedule(self, change: Reschedule) -> ReminderChange:
        if refused := self._unchangeable():
            return refused
        self.due, self.changed = change.due_at, True
        await workflow.execute_activity_method(ReminderActivities.update_reminder, ReminderRow(
            reminder_id=self.reminder_id, due_at=change.due_at), **RECORD)
        return self._answer(True)

    @workflow.update
    async def cancel(self) -> ReminderChange:
        if refused := self._unchangeable():
            return refused
        self.state, self.changed = ReminderState.CANCELLED, True
        return self._answer(True)

    @workflow.query
    def current_state(self) -> str:
        return self.state

    def _unchangeable(self) -> ReminderChange | None:
        if self.state != ReminderState.SCHEDULED:
            return self._answer(False, f"it has already {self.state}")
        if self.delivering:
            return self._answer(False, "it is being delivered right now")
        return None

    def _answer(self, took_effect: bool, reason: str | None = None) -> ReminderChange:
        return ReminderChange(took_effect=took_effect, state=self.state, due_at=self.due, reason=reason)

    @workflow.run
    async def run(self, input: ReminderInput) -> str:
        workflow.upsert_search_attributes([USER_ID.value_set(str(input.user_id))])
        lead = timedelta(seconds=input.lead_s)
        end: DeliveryEnd | None = None
        while self.state == ReminderState.SCHEDULED:
            workflow.set_current_details(f"due {self.due.isoformat()} ({input.time_zone})")
            if await self._changed_before(self.due - lead):
                continue
            due = self.due
            phrasing = workflow.start_activity_method(
                ReminderActivities.phrase_reminder,
                PhraseRequest(user_id=input.user_id, text=input.text, channel=input.channel),
                start_to_close_timeout=lead + timedelta(seconds=30), heartbeat_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=3))
            if await self._changed_before(due):
                phrasing.cancel()
                continue
            self.delivering = True
            end = await self._deliver(input, await self._words(phrasing, input))
            break
        await workflow.wait_condition(workflow.all_handlers_finished)
        if end is not None:
            following = next_occurrence(input.recurrence, input.first_due_at or input.due_at, input.due_at,
                                        input.time_zone) if input.recurrence else None
            if following is not None:
                await workflow.execute_activity_method(ReminderActivities.update_reminder, ReminderRow(
                    reminder_id=input.reminder_id, due_at=following, occurrences=input.occurrence + 1), **RECORD)
                workflow.continue_as_new(input.model_copy(update={
                    "due_at": following, "first_due_at": input.first_due_at or input.due_at,
                    "occurrence": input.occurrence + 1}))
            reached = end.outcome in (DeliveryOutcome.CALLED, DeliveryOutcome.TEXTED)
            self.state = ReminderState.FIRED if reached else ReminderState.FAILED
        await workflow.execute_activity_method(ReminderActivities.update_reminder, ReminderRow(
            reminder_id=input.reminder_id, state=self.state,
            occurrences=input.occurrence + 1 if end is not None else None), **RECORD)
        return self.state

    async def _changed_before(self, moment: datetime) -> bool:
        """Waits until `moment`; True if the reminder was rescheduled or cancelled meanwhile."""
        self.changed = False
        wait = moment - workflow.now()
        if wait > timedelta(0):
            try:
                await workflow.wait_condition(lambda: self.changed, timeout=wait)
            except TimeoutError:
                pass
        return self.changed

    async def _words(self, phrasing: workflow.ActivityHandle[str], input: ReminderInput) -> str:
        if phrasing.done():
            try:
                return phrasing.result()
            except ActivityError as error:
                workflow.logger.warning("reminder %s: the agent could not phrase it: %s", input.reminder_id,
                                        error.cause or error)
        else:
            phrasing.cancel()
            workflow.logger.warning("reminder %s: the agent was not ready in time; sent plain", input.reminder_id)
        return plain_reminder(input.text, agent_name=input.agent_name, by_call=input.channel == Channel.CALL)

    async def _deliver(self, input: ReminderInput, words: str) -> DeliveryEnd:
        delivery_id = occurrence_delivery_id(input.reminder_id, input.occurrence)
        by_call = input.channel == Channel.CALL
        request = DeliveryRequest(
            delivery_id=delivery_id, user_id=input.user_id, channel=input.channel, reminder_id=input.reminder_id,
            occurrence=input.occurrence, text=words if not by_call else f"{words} (I tried to call.)",
            greeting=words if by_call else None,
            purpose=f"to remind them: {input.text}. Help with anything it needs." if by_call else None)
        return await workflow.execute_child_workflow(DeliveryWorkflow.run, request,
                                                     id=delivery_workflow_id(delivery_id))
