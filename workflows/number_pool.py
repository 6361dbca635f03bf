"""NumberPoolWorkflow (`number-pool`): keeps at least `target` numbers available, on a timer and on
demand. Each purchase carries a key derived from workflow state, so a retried or replayed purchase
is the same purchase."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.numbers.pool import BuyRequest, NumberPoolActivities

WORKFLOW_ID = "number-pool"


class PoolInput(BaseModel):
    target: int = 5
    area_codes: list[str] = []  # keep `target` in each; none: `target` in total
    check_every: timedelta = timedelta(minutes=10)
    generation: int = 0  # carried across continue-as-new, so purchase keys stay unique


@workflow.defn
class NumberPoolWorkflow:
    @workflow.init
    def __init__(self, input: PoolInput) -> None:
        self.input = input
        self.generation = input.generation
        self.requested = False
        self.bought = 0

    @workflow.signal
    def replenish(self) -> None:
        self.requested = True

    @workflow.query
    def numbers_bought(self) -> int:
        return self.bought

    def _key(self, area_code: str | None, slot: int) -> str:
        # Unique per pool chain (a fresh start gets a new first run id), stable across retries.
        return f"pool-{workflow.info().first_execution_run_id[:12]}-{self.generation}-{area_code or 'any'}-{slot}"

    async def _top_up(self, target: int, area_code: str | None) -> None:
        available = await workflow.execute_activity_method(
            NumberPoolActivities.count_available_numbers, area_code, start_to_close_timeout=timedelta(seconds=30))
        for slot in range(max(0, target - available)):
            await workflow.execute_activity_method(
                NumberPoolActivities.buy_pool_number,
                BuyRequest(purchase_key=self._key(area_code, slot), area_code=area_code),
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=5)))
            self.bought += 1

    @workflow.run
    async def run(self, input: PoolInput) -> None:
        for _ in range(50):  # then continue as new, keeping history short
            self.requested = False
            self.generation += 1
            for area_code in input.area_codes or [None]:
                await self._top_up(input.target, area_code)
            try:
                await workflow.wait_condition(lambda: self.requested, timeout=input.check_every)
            except TimeoutError:
                pass
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(input.model_copy(update={"generation": self.generation}))
