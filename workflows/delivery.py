"""DeliveryWorkflow (`delivery-<id>`): one text or call to a user, durably. A reminder's occurrence,
or the agent's send_sms / call_me. An opted-out user gets nothing (the reason is recorded); a call
in the user's quiet hours is a text; a placed call that is not answered, is busy, fails or reaches
voicemail becomes a text. The outcome is recorded on the delivery's row."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.delivery import (
        CallProgress,
        DeliveryActivities,
        DeliveryEnd,
        DeliveryRequest,
        delivery_workflow_id,
        fallback_for,
    )
    from core.models import Channel, DeliveryOutcome, FallbackReason
    from core.temporal import USER_ID

SEND = {"start_to_close_timeout": timedelta(seconds=30),
        "retry_policy": RetryPolicy(maximum_attempts=5, non_retryable_error_types=["NoNumber", "OptedOut"])}
RECORD = {"start_to_close_timeout": timedelta(seconds=30)}
# A call's final status comes by callback; without one, ask the provider this often.
CALL_POLL = timedelta(seconds=60)

workflow_id = delivery_workflow_id


@workflow.defn
class DeliveryWorkflow:
    def __init__(self) -> None:
        self.call = CallProgress()

    @workflow.signal
    def call_progress(self, progress: CallProgress) -> None:
        """From the call status callback (final status) and the TwiML request (a machine answered)."""
        self.call = CallProgress(status=progress.status or self.call.status,
                                 answered_by=progress.answered_by or self.call.answered_by)

    @workflow.run
    async def run(self, request: DeliveryRequest) -> DeliveryEnd:
        workflow.upsert_search_attributes([USER_ID.value_set(str(request.user_id))])
        plan = await workflow.execute_activity_method(DeliveryActivities.open_delivery,
                                                      args=[request, workflow.now()], **RECORD)
        if plan.finished is not None:
            return DeliveryEnd(delivery_id=request.delivery_id, outcome=plan.finished, detail=plan.refused)
        if plan.refused is not None:
            return await self._finish(DeliveryEnd(delivery_id=request.delivery_id, outcome=DeliveryOutcome.REFUSED,
                                                  detail=plan.refused))
        fallback = plan.fallback_reason
        if plan.channel == Channel.CALL:
            try:
                fallback = await self._call(request)
            except ActivityError as error:
                workflow.logger.warning("call for delivery %s not placed: %s", request.delivery_id, error.cause or error)
                fallback = FallbackReason.CALL_FAILED
            if fallback is None:
                return await self._finish(DeliveryEnd(delivery_id=request.delivery_id, outcome=DeliveryOutcome.CALLED,
                                                      channel=Channel.CALL))
        try:
            await workflow.execute_activity_method(DeliveryActivities.send_delivery_text, request, **SEND)
        except ActivityError as error:
            reason = str(getattr(error.cause, "message", None) or error.cause or error)
            outcome = DeliveryOutcome.REFUSED if getattr(error.cause, "type", "") == "OptedOut" else DeliveryOutcome.FAILED
            return await self._finish(DeliveryEnd(delivery_id=request.delivery_id, outcome=outcome,
                                                  fallback_reason=fallback, detail=reason))
        return await self._finish(DeliveryEnd(delivery_id=request.delivery_id, outcome=DeliveryOutcome.TEXTED,
                                              channel=Channel.SMS, fallback_reason=fallback))

    async def _call(self, request: DeliveryRequest) -> FallbackReason | None:
        sid = await workflow.execute_activity_method(DeliveryActivities.place_delivery_call, request, **SEND)
        workflow.set_current_details(f"calling ({sid})")
        while self.call.status is None:
            try:
                await workflow.wait_condition(lambda: self.call.status is not None, timeout=CALL_POLL)
            except TimeoutError:
                self.call_progress(await workflow.execute_activity_method(
                    DeliveryActivities.call_state, sid, **SEND))
        return fallback_for(self.call)

    async def _finish(self, end: DeliveryEnd) -> DeliveryEnd:
        await workflow.execute_activity_method(DeliveryActivities.finish_delivery, end, **RECORD)
        workflow.set_current_details(f"{end.outcome}" + (f" ({end.fallback_reason})" if end.fallback_reason else ""))
        return end
