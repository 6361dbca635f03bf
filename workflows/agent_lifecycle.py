"""AgentLifecycleWorkflow (`agent-<user id>`): the entity that owns one user's agent for life.

Provisioning -> Running -> Idle -> Sleeping -> Archived, and back to Running whenever someone
needs the agent (`ensure_awake`). Timers count from the last activity (`touch`). The main loop
is the only place that changes state, so concurrent callers of `ensure_awake` share one wake.
`remove` deletes the agent once the step in flight has finished (cancelling the workflow instead
could leave an activity running that recreates what was just deleted).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from activities.numbers.pool import NumberPoolActivities, NumberRelease
    from activities.runtime.activities import (
        AgentStateChange,
        RestoreInput,
        RuntimeActivities,
    )
    from core.ports import AgentEndpoint, AgentSpec
    from core.temporal import AGENT_NUMBER, LIFECYCLE_STATE, USER_ID, USER_PHONE, WAKE_SECONDS


class LifecycleState(StrEnum):
    PROVISIONING = "Provisioning"
    RUNNING = "Running"
    IDLE = "Idle"
    SLEEPING = "Sleeping"
    ARCHIVED = "Archived"


class _RemovalRequested(Exception):
    """Ends any wait of the main loop once `remove` has been signalled."""


class Thresholds(BaseModel):
    """Measured from the last activity."""

    idle_after: timedelta = timedelta(minutes=10)
    sleep_after: timedelta = timedelta(hours=2)
    archive_after: timedelta = timedelta(days=30)
    release_number_after: timedelta = timedelta(days=90)  # measured from the archive


class AgentLifecycleInput(BaseModel):
    spec: AgentSpec
    user_phone: str
    agent_number: str | None = None
    runtime: str = "local"
    thresholds: Thresholds = Thresholds()
    archived_numbers: str = "pool"  # what happens to the number of a long-archived agent: pool | release
    max_history_events: int = 2000
    # Carried across continue-as-new:
    state: LifecycleState = LifecycleState.PROVISIONING
    archive_key: str | None = None
    touched: bool = False
    wake_requested: bool = False
    removing: bool = False
    held_until: datetime | None = None


def workflow_id(user_id: uuid.UUID) -> str:
    return f"agent-{user_id}"


# Patch ids (workflow.patched): histories recorded before a change replay as they ran.
RENDER_ON_WAKE = "render-config-on-wake"

QUICK = dict(start_to_close_timeout=timedelta(seconds=30),
             retry_policy=RetryPolicy(maximum_attempts=5, non_retryable_error_types=["AgentNotFound"]))
FOREVER = dict(start_to_close_timeout=timedelta(minutes=2), heartbeat_timeout=timedelta(seconds=20),
               retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=1)))  # a removal must happen
LONG = dict(start_to_close_timeout=timedelta(minutes=10), heartbeat_timeout=timedelta(seconds=20),
            retry_policy=RetryPolicy(maximum_attempts=5, non_retryable_error_types=["AgentNotFound", "ArchiveMissing"]))


@workflow.defn
class AgentLifecycleWorkflow:
    @workflow.init
    def __init__(self, input: AgentLifecycleInput) -> None:
        self.input = input
        self.spec = input.spec
        self.state = input.state
        self.archive_key = input.archive_key
        self.endpoint: AgentEndpoint | None = None
        self.touched = input.touched
        self.wake_requested = input.wake_requested
        self.wakes_done = 0
        self.wake_failures = 0
        self.last_wake_error = ""
        self.removing = input.removing
        self.held_until = input.held_until  # someone is waiting on the agent's answer until then

    # ---- handlers -------------------------------------------------------------------------

    @workflow.signal
    def touch(self) -> None:
        self.touched = True

    @workflow.signal
    def hold(self, seconds: float) -> None:
        """Someone waits on an answer (a text, a reminder's phrasing): not Idle (paused, which would
        freeze the answer) for `seconds` more, however long the answer takes; renewed while they
        wait, released when it came (or lapsing, if they are gone)."""
        self.touched = True
        until = workflow.now() + timedelta(seconds=seconds)
        self.held_until = max(self.held_until, until) if self.held_until else until

    @workflow.signal
    def release(self) -> None:
        """The answer came: Idle after the usual quiet from now (an asker still waiting renews)."""
        self.touched = True
        self.held_until = None

    @workflow.signal
    def set_agent_number(self, number: str) -> None:
        self.input.agent_number = number
        workflow.upsert_search_attributes([AGENT_NUMBER.value_set(number)])

    @workflow.signal
    def wake(self) -> None:
        """Bring the agent up now, nobody waiting (a returning user got a number: restore it)."""
        self.touched = True
        self.wake_requested = True

    @workflow.signal
    def remove(self) -> None:
        """The user is gone (provisioning undone, account closed): delete the agent and end."""
        self.removing = True

    @workflow.query
    def current_state(self) -> LifecycleState:
        return self.state

    @workflow.update
    async def ensure_awake(self) -> AgentEndpoint:
        """The ready endpoint, waking or restoring the agent as needed."""
        self.touched = True
        self.wake_requested = True
        done, failures = self.wakes_done, self.wake_failures
        await workflow.wait_condition(
            lambda: self.wakes_done > done or self.wake_failures > failures or self.removing)
        if self.removing:
            raise ApplicationError("the agent has been removed", type="AgentRemoved", non_retryable=True)
        if self.wakes_done == done or self.endpoint is None:
            raise ApplicationError(f"the agent could not be woken: {self.last_wake_error}", type="WakeFailed")
        return self.endpoint

    @workflow.update
    async def apply_settings(self, spec: AgentSpec) -> None:
        if spec.user_id != self.spec.user_id:
            raise ApplicationError("settings are for another user", type="WrongUser", non_retryable=True)
        self.spec = spec
        if self.state != LifecycleState.ARCHIVED:  # an archived agent gets them when restored
            await workflow.execute_activity_method(RuntimeActivities.apply_agent_settings, spec, **QUICK)

    # ---- main loop ------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: AgentLifecycleInput) -> None:
        workflow.upsert_search_attributes([
            USER_ID.value_set(str(self.spec.user_id)),
            USER_PHONE.value_set(input.user_phone),
            *([AGENT_NUMBER.value_set(input.agent_number)] if input.agent_number else []),
            LIFECYCLE_STATE.value_set(self.state.value),
        ])
        try:
            await self._live(input.thresholds)
        except _RemovalRequested:
            pass
        await workflow.wait_condition(workflow.all_handlers_finished)  # e.g. settings being applied
        await workflow.execute_activity_method(RuntimeActivities.delete_agent, self.spec.user_id, **FOREVER)
        workflow.upsert_search_attributes([LIFECYCLE_STATE.value_set("Deleted")])

    async def _live(self, thresholds: Thresholds) -> None:
        if self.state == LifecycleState.PROVISIONING:
            await self._record(LifecycleState.PROVISIONING)
            await workflow.execute_activity_method(RuntimeActivities.create_agent, self.spec, **QUICK)
            await self._wake()  # a new user is about to talk to their agent
            if self.state == LifecycleState.PROVISIONING:  # created, but could not start: it sleeps
                await self._record(LifecycleState.SLEEPING, {"reason": self.last_wake_error[:200]})
        while True:
            if self.removing:
                raise _RemovalRequested
            if self._history_is_long():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(self._carry_over())
            if self.state == LifecycleState.RUNNING:
                self.touched = False
                if await self._until(lambda: self.touched or self.wake_requested, thresholds.idle_after):
                    if self.wake_requested:
                        await self._wake()  # idempotent: re-checks the gateway, returns its endpoint
                    continue
                if self.held_until and workflow.now() < self.held_until:  # pausing would freeze an answer
                    await self._until(lambda: self.touched or self.wake_requested, self.held_until - workflow.now())
                    continue
                await self._go(LifecycleState.IDLE, RuntimeActivities.pause_agent)
            elif self.state == LifecycleState.IDLE:
                if await self._until(lambda: self.wake_requested, thresholds.sleep_after - thresholds.idle_after):
                    await self._wake()
                else:
                    await self._go(LifecycleState.SLEEPING, RuntimeActivities.sleep_agent, long=True)
            elif self.state == LifecycleState.SLEEPING:
                if await self._until(lambda: self.wake_requested, thresholds.archive_after - thresholds.sleep_after):
                    await self._wake()
                else:
                    self.archive_key = await workflow.execute_activity_method(
                        RuntimeActivities.archive_agent, self.spec.user_id, **LONG)
                    await self._record(LifecycleState.ARCHIVED, {"archive_key": self.archive_key})
            elif self.state == LifecycleState.ARCHIVED:
                if self.input.agent_number and not await self._until(
                        lambda: self.wake_requested, thresholds.release_number_after):
                    await self._release_number()
                    continue
                await self._until(lambda: self.wake_requested)
                await self._wake()

    async def _until(self, ready: Callable[[], bool], timeout: timedelta | None = None) -> bool:
        """Whether `ready` came true within `timeout`; a removal ends the wait."""
        try:
            await workflow.wait_condition(lambda: ready() or self.removing, timeout=timeout)
        except TimeoutError:
            return False
        if self.removing:
            raise _RemovalRequested
        return True

    async def _wake(self) -> None:
        self.wake_requested = False
        from_state, started = self.state, workflow.now()
        try:
            if self.state == LifecycleState.ARCHIVED and self.archive_key:
                await self._restore(self.archive_key)  # which renders its config again
            elif self.state == LifecycleState.SLEEPING and workflow.patched(RENDER_ON_WAKE):
                # Its config rendered again as today's platform renders it (the platform MCP server and
                # its token, the model, the tools), so no agent runs on a configuration from its creation.
                await workflow.execute_activity_method(RuntimeActivities.apply_agent_settings, self.spec, **QUICK)
            self.endpoint = await workflow.execute_activity_method(
                RuntimeActivities.wake_agent, self.spec.user_id, **LONG)
        except ActivityError as error:
            if isinstance(error.cause, CancelledError):
                raise  # the workflow is being cancelled (provisioning undone): not a failed wake
            self.wake_failures += 1
            self.last_wake_error = str(error.cause or error)
            workflow.logger.error("wake failed for %s: %s", self.spec.user_id, self.last_wake_error)
            return
        # Callers who asked while this wake was in flight are served by it: no second wake.
        self.wake_requested = False
        # Operators see how long waking takes from each state (not recorded on replay).
        workflow.metric_meter().create_histogram_float(WAKE_SECONDS, "Time to wake an agent, by its state before.", "s") \
            .with_additional_attributes({"from_state": from_state.value}).record((workflow.now() - started).total_seconds())
        if self.state != LifecycleState.RUNNING:
            self.archive_key = None if self.state == LifecycleState.ARCHIVED else self.archive_key
            await self._record(LifecycleState.RUNNING, {"endpoint": self.endpoint.base_url})
        self.wakes_done += 1

    async def _restore(self, key: str) -> None:
        """The archived agent back on its runtime; if its archive is gone, a fresh agent instead."""
        try:
            await workflow.execute_activity_method(
                RuntimeActivities.restore_agent, RestoreInput(user_id=self.spec.user_id, key=key), **LONG)
        except ActivityError as error:
            if not (isinstance(error.cause, ApplicationError) and error.cause.type == "ArchiveMissing"):
                raise
            workflow.logger.warning("archive %s of %s is gone; creating a fresh agent", key, self.spec.user_id)
            await workflow.execute_activity_method(RuntimeActivities.create_agent, self.spec, **QUICK)
            return
        await workflow.execute_activity_method(RuntimeActivities.apply_agent_settings, self.spec, **QUICK)

    async def _release_number(self) -> None:
        released = await workflow.execute_activity_method(
            NumberPoolActivities.release_user_number,
            NumberRelease(user_id=self.spec.user_id, to_pool=self.input.archived_numbers == "pool"), **QUICK)
        workflow.logger.info("number %s of archived user %s released", released, self.spec.user_id)
        self.input.agent_number = None
        workflow.upsert_search_attributes([AGENT_NUMBER.value_unset()])

    async def _go(self, state: LifecycleState, step: object, *, long: bool = False) -> None:
        await workflow.execute_activity_method(step, self.spec.user_id, **(LONG if long else QUICK))  # type: ignore[call-overload]
        if state == LifecycleState.SLEEPING:
            self.endpoint = None
        await self._record(state)

    async def _record(self, state: LifecycleState, detail: dict[str, str] | None = None) -> None:
        previous = None if state == self.state == LifecycleState.PROVISIONING else self.state
        self.state = state
        workflow.upsert_search_attributes([LIFECYCLE_STATE.value_set(state.value)])
        await workflow.execute_activity_method(
            RuntimeActivities.record_agent_state,
            AgentStateChange(user_id=self.spec.user_id, from_state=previous.value if previous else None, to_state=state.value,
                             runtime=self.input.runtime,
                             endpoint=self.endpoint.base_url if self.endpoint and state == LifecycleState.RUNNING else None,
                             detail=detail or {}, at=workflow.now()),
            **QUICK)

    def _history_is_long(self) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() > self.input.max_history_events

    def _carry_over(self) -> AgentLifecycleInput:
        return self.input.model_copy(update={
            "spec": self.spec, "state": self.state, "archive_key": self.archive_key,
            "touched": self.touched, "wake_requested": self.wake_requested,
            "removing": self.removing, "held_until": self.held_until,
        })
