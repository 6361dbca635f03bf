"""ExportMemoryWorkflow (`export-memory-<user id>-<request>`): the agent's memory files copied to
the archive store for the user's data export, by the worker that runs their agent (the API cannot
reach an agent's files; a workflow is how it asks the worker). Its result names where they are."""

from __future__ import annotations

import uuid
from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.runtime.activities import MemoryExport, RuntimeActivities
    from core.temporal import USER_ID


class ExportMemoryInput(BaseModel):
    user_id: uuid.UUID


def workflow_id(user_id: uuid.UUID) -> str:
    return f"export-memory-{user_id}-{uuid.uuid4().hex[:8]}"  # one per request: two exports never share one


@workflow.defn
class ExportMemoryWorkflow:
    @workflow.run
    async def run(self, input: ExportMemoryInput) -> MemoryExport:
        workflow.upsert_search_attributes([USER_ID.value_set(str(input.user_id))])
        return await workflow.execute_activity_method(
            RuntimeActivities.export_agent_memory, input.user_id, start_to_close_timeout=timedelta(minutes=2),
            heartbeat_timeout=timedelta(seconds=30), retry_policy=RetryPolicy(maximum_attempts=3))
