"""HotlineSetupWorkflow (`hotline-setup`): at every worker start, the hotline number's webhooks are
pointed at the platform (an idempotent activity), so a deployment never depends on a hand-set
console field, and operators see when it last ran and what it did."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.numbers.pool import NumberPoolActivities

WORKFLOW_ID = "hotline-setup"


@workflow.defn
class HotlineSetupWorkflow:
    @workflow.run
    async def run(self, hotline_number: str) -> bool:
        """True if the webhooks were changed, False if they were right already."""
        return await workflow.execute_activity_method(
            NumberPoolActivities.configure_hotline, hotline_number, start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=1), maximum_attempts=20,
                                     non_retryable_error_types=["HotlineNotOwned"]))
