"""SmsConversationWorkflow (`sms-<user id>`): the user's texts to their agent, answered in the order
they arrived; texts that came in while the agent was answering are read together, in one turn (as
a person reads several texts at once), so a burst never builds a queue of turns, and texts that
come in before the agent is asked join the turn being prepared. The SMS webhook signals it with
signal-with-start; a retried webhook's MessageSid is dropped here, and the database (each MessageSid
recorded once, each reply part sent once) makes that hold across runs too. An answer that takes
longer than WORKING_ON_IT_AFTER gets one short "working on it" text first, never a second answer.
Quiet for IDLE_END, the workflow ends; the next text starts it again."""

from __future__ import annotations

import uuid
from collections import deque
from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.texts import (
        AgentQuestion,
        InboundText,
        OutgoingText,
        Recorded,
        TextActivities,
        sms_session_key,
    )
    from core.temporal import SMS_REPLY_SECONDS, USER_ID
    from core.texts import split_reply
    from workflows.agent_lifecycle import AgentLifecycleWorkflow
    from workflows.agent_lifecycle import workflow_id as lifecycle_id

WORKING_ON_IT_AFTER = timedelta(seconds=10)
WORKING_ON_IT = "Working on it, I'll text you back shortly."
NO_ANSWER = "Sorry, I couldn't answer that just now. Please try again in a few minutes."
EMPTY_ANSWER = "Sorry, I have no answer to that."
IDLE_END = timedelta(hours=1)
SEEN_KEPT = 200  # MessageSids remembered across continue-as-new (the database keeps them all)
TEXTS_PER_RUN = 100  # then continue-as-new, so history stays short
MAX_TOGETHER = 10  # texts read in one turn at most
# A turn's texts are recorded, and marked answered, in one activity each (not one per text: each
# costs a round trip through Temporal, ~0.1 s under load). Runs begun before replay the old way.
RECORDED_TOGETHER = "texts-recorded-together"
# Texts that come in while a turn's texts are recorded (a pair sent back to back, a photo and its
# caption) join that turn before the agent is asked: one answer, no wait for a turn of their own.
LATE_TEXTS_JOIN = "late-texts-join-the-turn"

RECORD = {"start_to_close_timeout": timedelta(seconds=30)}
SEND = {"start_to_close_timeout": timedelta(seconds=30),
        "retry_policy": RetryPolicy(maximum_attempts=5, maximum_interval=timedelta(seconds=10))}
# Waking an agent takes seconds to a minute; a long task minutes. Retried once (e.g. a worker restart).
ASK = {"start_to_close_timeout": timedelta(minutes=11), "heartbeat_timeout": timedelta(seconds=30),
       "retry_policy": RetryPolicy(maximum_attempts=2)}


class SmsConversationInput(BaseModel):
    user_id: uuid.UUID
    pending: list[InboundText] = []  # carried over continue-as-new
    seen: list[str] = []


def workflow_id(user_id: uuid.UUID) -> str:
    return f"sms-{user_id}"


@workflow.defn
class SmsConversationWorkflow:
    def __init__(self) -> None:
        self.queue: deque[InboundText] = deque()
        self.seen: deque[str] = deque(maxlen=SEEN_KEPT)
        self.answering: str | None = None

    @workflow.signal
    def text_received(self, text: InboundText) -> None:
        if text.message_sid in self.seen:
            return  # a retried webhook
        self.seen.append(text.message_sid)
        self.queue.append(text)

    @workflow.query
    def waiting(self) -> int:
        return len(self.queue)

    @workflow.run
    async def run(self, input: SmsConversationInput) -> None:
        workflow.upsert_search_attributes([USER_ID.value_set(str(input.user_id))])
        self.seen.extend(input.seen)
        for text in input.pending:
            self.text_received(text)
        answered = 0
        while True:
            try:
                await workflow.wait_condition(lambda: bool(self.queue), timeout=IDLE_END)
            except TimeoutError:
                if not self.queue:
                    return
            texts = [self.queue.popleft() for _ in range(min(len(self.queue), MAX_TOGETHER))]
            self.answering = texts[-1].message_sid
            answered += await self._answer(texts)
            self.answering = None
            if answered >= TEXTS_PER_RUN or workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(SmsConversationInput(user_id=input.user_id, pending=list(self.queue),
                                                              seen=list(self.seen)))

    async def _record(self, texts: list[InboundText], together: bool) -> list[tuple[InboundText, Recorded]]:
        """Records `texts`; those not answered already, with their records."""
        if together:
            recorded = await workflow.execute_activity_method(TextActivities.record_inbound_texts, texts, **RECORD)
        else:
            recorded = [await workflow.execute_activity_method(TextActivities.record_inbound, text, **RECORD)
                        for text in texts]
        return [(text, record) for text, record in zip(texts, recorded, strict=True) if not record.answered]

    async def _answer(self, texts: list[InboundText]) -> int:
        """One answer to `texts` (the ones not answered already), as a reply to the last of them;
        how many texts it took (late ones join)."""
        together = workflow.patched(RECORDED_TOGETHER)
        fresh = await self._record(texts, together)
        if not fresh:
            return len(texts)
        await self._keep_agent_busy(fresh[-1][0].user_id)
        if workflow.patched(LATE_TEXTS_JOIN):
            while self.queue and len(texts) < MAX_TOGETHER:
                late = [self.queue.popleft() for _ in range(min(len(self.queue), MAX_TOGETHER - len(texts)))]
                texts = [*texts, *late]
                self.answering = late[-1].message_sid
                fresh += await self._record(late, together)
        last, last_record = fresh[-1]

        def reply(part: int, body: str) -> OutgoingText:
            return OutgoingText(reply_to=last_record.message_id, conversation_id=last_record.conversation_id, part=part,
                                to=last.from_, from_=last.to, body=body)

        question = AgentQuestion(user_id=last.user_id, conversation_id=last_record.conversation_id,
                                 text="\n".join(text.body for text, _ in fresh),
                                 media=[url for text, _ in fresh for url in text.media],
                                 session_key=sms_session_key(last.received_at))
        asking = workflow.start_activity_method(TextActivities.ask_agent, question, **ASK)
        done, _ = await workflow.wait([asking], timeout=WORKING_ON_IT_AFTER.total_seconds())
        if not done:
            await workflow.execute_activity_method(TextActivities.send_text, reply(0, WORKING_ON_IT), **SEND)
        try:
            answer = await asking
        except ActivityError as error:
            workflow.logger.error("the agent of %s did not answer a text: %s", last.user_id, error.cause or error)
            answer = NO_ANSWER
        for number, part in enumerate(split_reply(answer) or [EMPTY_ANSWER], start=1):
            await workflow.execute_activity_method(TextActivities.send_text, reply(number, part), **SEND)
            if number == 1:  # the answer reached the user: how long after their text (not recorded on replay)
                workflow.metric_meter().create_histogram_float(
                    SMS_REPLY_SECONDS, "From a text reaching the platform to the first part of its answer sent.", "s",
                ).record((workflow.now() - last.received_at).total_seconds())
        if together:
            await workflow.execute_activity_method(TextActivities.mark_texts_answered,
                                                   [record.message_id for _, record in fresh], **RECORD)
        else:
            for _, record in fresh:
                await workflow.execute_activity_method(TextActivities.mark_answered, record.message_id, **RECORD)
        return len(texts)

    async def _keep_agent_busy(self, user_id: uuid.UUID) -> None:
        """A text is activity: the agent's idle timers start again (its wake is ask_agent's)."""
        try:
            await workflow.get_external_workflow_handle(lifecycle_id(user_id)).signal(AgentLifecycleWorkflow.touch)
        except Exception as error:  # no lifecycle (removed user): ask_agent reports it
            workflow.logger.warning("could not touch the agent of %s: %s", user_id, error)
