"""ProvisionUserWorkflow (`provision-<user id>`): a saga that turns a verified caller into a user
with a number and a running agent. Each step that succeeds registers its undo; a failure later
runs the undos in reverse, so no number stays claimed by a user who does not exist. Every step is
idempotent, so running the workflow twice for one user changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError, FailureError, WorkflowAlreadyStartedError
from temporalio.workflow import ChildWorkflowHandle, ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.numbers.pool import ClaimRequest, NumberPoolActivities, PoolNumber
    from activities.runtime.activities import RuntimeActivities
    from activities.users import NewUser, UserActivities
    from core.ports import AgentSpec
    from core.temporal import USER_ID, USER_PHONE
    from workflows.agent_lifecycle import AgentLifecycleInput, AgentLifecycleWorkflow, Thresholds
    from workflows.agent_lifecycle import workflow_id as lifecycle_id
    from workflows.number_pool import WORKFLOW_ID as POOL_ID
    from workflows.number_pool import NumberPoolWorkflow


class ProvisionInput(BaseModel):
    user: NewUser
    area_code: str | None = None  # preferred: near the caller
    runtime: str = "local"
    pool_workflow_id: str = POOL_ID
    claim_timeout: timedelta = timedelta(minutes=10)  # how long to wait for the pool to refill
    claim_retry_every: timedelta = timedelta(seconds=2)
    step_attempts: int = 10  # per step, before the saga gives up and undoes
    step_timeout: timedelta = timedelta(seconds=30)  # per attempt: a worker that died mid-step is noticed after it
    thresholds: Thresholds = Thresholds()  # for the agent's lifecycle
    archived_numbers: str = "pool"


class Provisioned(BaseModel):
    user_id: uuid.UUID
    number: str


def workflow_id(user_id: uuid.UUID) -> str:
    return f"provision-{user_id}"


# An undo must happen: it retries until it does (each one is idempotent).
UNDO = {"start_to_close_timeout": timedelta(minutes=2),
        "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=1))}


def _step(attempts: int, timeout: timedelta) -> dict[str, object]:
    return {"start_to_close_timeout": timeout, "retry_policy": RetryPolicy(
        maximum_attempts=attempts, maximum_interval=timedelta(seconds=30), non_retryable_error_types=["PhoneTaken"])}


@workflow.defn
class ProvisionUserWorkflow:
    def __init__(self) -> None:
        self.options: dict[str, object] = {}
        self.undo: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        self.step = "starting"

    @workflow.query
    def current_step(self) -> str:
        return self.step

    @workflow.run
    async def run(self, input: ProvisionInput) -> Provisioned:
        user = input.user
        self.options = _step(input.step_attempts, input.step_timeout)
        workflow.upsert_search_attributes([USER_ID.value_set(str(user.user_id)), USER_PHONE.value_set(user.phone)])
        try:
            self.step = "create user"
            if await workflow.execute_activity_method(UserActivities.create_user, user, **self.options):
                self._on_failure("remove user", lambda: workflow.execute_activity_method(
                    UserActivities.remove_user, user.user_id, **UNDO))
            self.step = "claim number"
            number = await self._claim(input)
            if number.newly_claimed:
                self._on_failure("return number", lambda: workflow.execute_activity_method(
                    NumberPoolActivities.return_number, user.user_id, **UNDO))
            await self._replenish_pool(input.pool_workflow_id)
            self.step = "start agent"
            await self._start_agent(input, number)
            self.step = "point number at platform"
            await workflow.execute_activity_method(NumberPoolActivities.point_number_at_platform, number, **self.options)
        except Exception as failure:
            await self._compensate(str(failure))
            raise
        self.step = "done"
        return Provisioned(user_id=user.user_id, number=number.e164)

    def _on_failure(self, name: str, undo: Callable[[], Awaitable[None]]) -> None:
        self.undo.append((name, undo))

    async def _compensate(self, reason: str) -> None:
        workflow.logger.warning("provisioning failed (%s); undoing %s", reason, [name for name, _ in self.undo])
        for name, undo in reversed(self.undo):
            self.step = f"undo: {name}"
            await undo()
        self.step = "compensated"

    async def _claim(self, input: ProvisionInput) -> PoolNumber:
        """A number from the warm pool; while it is empty, ask it to refill and try again."""
        deadline = workflow.now() + input.claim_timeout
        while True:
            number = await workflow.execute_activity_method(
                NumberPoolActivities.claim_number, ClaimRequest(user_id=input.user.user_id, area_code=input.area_code),
                **self.options)
            if number is not None:
                return number
            if workflow.now() >= deadline:
                raise ApplicationError("the number pool stayed empty", type="PoolEmpty", non_retryable=True)
            await self._replenish_pool(input.pool_workflow_id)
            await workflow.sleep(input.claim_retry_every)

    async def _replenish_pool(self, pool_id: str) -> None:
        try:
            await workflow.get_external_workflow_handle(pool_id).signal(NumberPoolWorkflow.replenish)
        except Exception as error:  # no pool running (a test, or an operator stopped it): the claim retries
            workflow.logger.warning("could not signal the number pool: %s", error)

    async def _start_agent(self, input: ProvisionInput, number: PoolNumber) -> None:
        user = input.user
        spec = AgentSpec(user_id=user.user_id, agent_name=user.agent_name, personality=user.personality)
        try:
            # The agent's workflow lives for the user's whole life, far beyond this one.
            agent = await workflow.start_child_workflow(
                AgentLifecycleWorkflow.run,
                AgentLifecycleInput(spec=spec, user_phone=user.phone, agent_number=number.e164, runtime=input.runtime,
                                    thresholds=input.thresholds, archived_numbers=input.archived_numbers),
                id=lifecycle_id(user.user_id), parent_close_policy=ParentClosePolicy.ABANDON)
        except WorkflowAlreadyStartedError:
            # A returning user (or an earlier run of this one): their agent's workflow lives on, not ours
            # to undo. It learns the new number and brings the agent back (restored from its archive).
            existing = workflow.get_external_workflow_handle(lifecycle_id(user.user_id))
            await existing.signal(AgentLifecycleWorkflow.set_agent_number, number.e164)
            await existing.signal(AgentLifecycleWorkflow.wake)
            return
        self._on_failure("delete agent", lambda: self._delete_agent(agent, user.user_id))

    async def _delete_agent(self, agent: ChildWorkflowHandle, user_id: uuid.UUID) -> None:
        """The agent's workflow deletes what it made, after the step it has in flight, and ends."""
        try:
            await agent.signal(AgentLifecycleWorkflow.remove)
            await agent
        except FailureError as error:  # it had ended already (an operator?)
            workflow.logger.warning("the agent's workflow of %s had ended (%s); deleting here", user_id, error)
            await workflow.execute_activity_method(RuntimeActivities.delete_agent, user_id, **UNDO)
