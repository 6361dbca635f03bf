"""CloseMonthWorkflow: the month just ended closed for every user (statements to billing). Started
by the Temporal Schedule `close-month` on the 1st of each month at 14:00 UTC, when the month has
ended in every time zone (UTC-12 is the last); a month can also be closed by hand."""

from __future__ import annotations

from datetime import date, timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.statements import StatementActivities

SCHEDULE_ID = "close-month"
CRON = "0 14 1 * *"
CLOSE = {"start_to_close_timeout": timedelta(hours=1), "heartbeat_timeout": timedelta(minutes=2),
         "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=10))}


class CloseMonthInput(BaseModel):
    month: date | None = None  # its first day; None: the month before today's (UTC)


def previous_month(today: date) -> date:
    return date(today.year - (today.month == 1), 12 if today.month == 1 else today.month - 1, 1)


@workflow.defn
class CloseMonthWorkflow:
    @workflow.run
    async def run(self, input: CloseMonthInput) -> int:
        month = input.month or previous_month(workflow.now().date())
        workflow.set_current_details(f"closing {month:%Y-%m}")
        return await workflow.execute_activity_method(StatementActivities.close_month, month, **CLOSE)
