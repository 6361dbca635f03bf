"""FollowUpWorkflow (`follow-up-<call sid>-<n>`): the user hung up before hearing the agent's answer
(a long task, a search). The answer, or if it was cut off the agent's finished work, reaches them
as a text through the durable delivery; the agent may instead call them back (call_me) if asked."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.delivery import DeliveryRequest
    from activities.follow_ups import FollowUpActivities, UnheardAnswer
    from core.models import Channel
    from core.temporal import USER_ID
    from core.texts import FOLLOW_UP_DONE, split_reply
    from workflows.delivery import DeliveryWorkflow
    from workflows.delivery import workflow_id as delivery_workflow_id

FINISH = {"start_to_close_timeout": timedelta(minutes=15), "heartbeat_timeout": timedelta(seconds=60),
          "retry_policy": RetryPolicy(maximum_attempts=3)}


def workflow_id(unheard: UnheardAnswer) -> str:
    """One per unheard question of a call (a retried hand-off starts nothing new)."""
    digest = hashlib.sha256(unheard.question.encode()).hexdigest()[:10]
    return f"follow-up-{unheard.call_sid}-{digest}"


@workflow.defn
class FollowUpWorkflow:
    @workflow.run
    async def run(self, unheard: UnheardAnswer) -> str:
        workflow.upsert_search_attributes([USER_ID.value_set(str(unheard.user_id))])
        answer = unheard.answer
        if not answer:
            workflow.set_current_details("the agent is finishing the task")
            answer = await workflow.execute_activity_method(FollowUpActivities.finish_task, unheard, **FINISH)
        parts = split_reply(answer, max_parts=1)
        if not parts or parts[0].strip().rstrip(".").upper() == FOLLOW_UP_DONE:
            return "nothing to text (the agent called, or had nothing to say)"
        delivery_id = workflow.uuid4()
        end = await workflow.execute_child_workflow(DeliveryWorkflow.run, DeliveryRequest(
            delivery_id=delivery_id, user_id=unheard.user_id, channel=Channel.SMS, text=parts[0]),
            id=delivery_workflow_id(delivery_id))
        return str(end.outcome)
