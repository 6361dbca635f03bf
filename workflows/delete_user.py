"""DeleteUserWorkflow (`delete-user-<id>`): an account closed for good, durably, from the dashboard
(the user, after confirming) or by an operator.

Closed first (nothing reaches or leaves it, signed out everywhere, the agent's tokens revoked), then
its reminders cancelled, its agent deleted everywhere (gateway, state, archive) by its lifecycle,
its number taken away but kept out of use, then its rows deleted (the deletion recorded). The
number returns to the pool only after `quarantine_days`, so old callers never reach a new user.
Every step is idempotent and retried until done: a deletion, once asked for, happens.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.accounts import AccountActivities, Deletion
    from core.temporal import USER_ID

STEP = {"start_to_close_timeout": timedelta(seconds=60), "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=1))}
AGENT_REMOVAL = {"start_to_close_timeout": timedelta(minutes=10), "heartbeat_timeout": timedelta(seconds=30),
                 "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=1))}


class DeleteUserInput(BaseModel):
    user_id: uuid.UUID
    requested_by: str  # "user", or the operator's address
    quarantine_days: float


class DeleteUserResult(BaseModel):
    deleted: bool
    reminders_cancelled: int
    number: str | None
    number_returned: bool


def workflow_id(user_id: uuid.UUID) -> str:
    return f"delete-user-{user_id}"


@workflow.defn
class DeleteUserWorkflow:
    @workflow.run
    async def run(self, input: DeleteUserInput) -> DeleteUserResult:
        workflow.upsert_search_attributes([USER_ID.value_set(str(input.user_id))])
        workflow.set_current_details("closing the account")
        await workflow.execute_activity_method(AccountActivities.close_account, input.user_id, **STEP)
        cancelled = await workflow.execute_activity_method(AccountActivities.cancel_reminders, input.user_id, **STEP)
        workflow.set_current_details("deleting the agent")
        await workflow.execute_activity_method(AccountActivities.remove_agent, input.user_id, **AGENT_REMOVAL)
        if workflow.patched("revoke-integrations"):  # deletions begun before integrations skip it on replay
            workflow.set_current_details("revoking calendar and mail access")
            await workflow.execute_activity_method(AccountActivities.revoke_integrations, input.user_id, **STEP)
        number = await workflow.execute_activity_method(AccountActivities.quarantine_number, input.user_id, **STEP)
        deleted = await workflow.execute_activity_method(
            AccountActivities.delete_user, Deletion(user_id=input.user_id, requested_by=input.requested_by), **STEP)
        returned = False
        if number is not None:
            workflow.set_current_details(f"keeping {number.e164} out of use for {input.quarantine_days:g} days")
            await workflow.sleep(timedelta(days=input.quarantine_days))
            returned = await workflow.execute_activity_method(AccountActivities.return_quarantined_number, number,
                                                              **STEP)
        workflow.set_current_details("done")
        return DeleteUserResult(deleted=deleted, reminders_cancelled=cancelled, number=number.e164 if number else None,
                                number_returned=returned)
