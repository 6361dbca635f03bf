"""RetentionWorkflow: removes what is past its retention period (activities/retention.py), one
kind after another. Started daily by the Temporal Schedule `retention`; can be run by hand."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.retention import Purge, RetentionActivities

SCHEDULE_ID = "retention"
CRON = "30 3 * * *"  # daily, 03:30 UTC
PURGE = {"start_to_close_timeout": timedelta(hours=2), "heartbeat_timeout": timedelta(minutes=2),
         "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=10))}


@workflow.defn
class RetentionWorkflow:
    @workflow.run
    async def run(self) -> dict[str, int]:
        removed: dict[str, int] = {}
        for purge in Purge:
            workflow.set_current_details(f"removing {purge.value} past retention")
            removed[purge.value] = await workflow.execute_activity_method(RetentionActivities.purge, purge, **PURGE)
        return removed
