"""Structured logs carry the ids in scope; the audit activity runs under real Temporal (time-skipping)."""

import json
import logging
import uuid
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.store import AuditEventInput, StoreActivities
from api.app import create_app
from core.logs import ContextFilter, JsonFormatter, TextFormatter, log_context
from core.models import AuditEvent, User
from core.settings import Settings


def _record(message: str) -> logging.LogRecord:
    record = logging.LogRecord("deepclaw.test", logging.INFO, __file__, 1, message, None, None)
    ContextFilter().filter(record)
    return record


def test_json_and_text_logs_carry_user_call_and_workflow_ids() -> None:
    with log_context(user_id="u-1", call_id="CA123", workflow_id="agent-u-1"):
        record = _record("woke agent")
    entry = json.loads(JsonFormatter().format(record))
    assert entry["msg"] == "woke agent" and entry["level"] == "info"
    assert (entry["user_id"], entry["call_id"], entry["workflow_id"]) == ("u-1", "CA123", "agent-u-1")
    assert "[user_id=u-1 call_id=CA123 workflow_id=agent-u-1]" in TextFormatter("api").format(record)
    assert "user_id" not in json.loads(JsonFormatter().format(_record("outside")))


def test_log_lines_name_the_trace_of_the_span_in_scope() -> None:
    from core.tracing import setup_tracing, tracer

    setup_tracing(Settings(_env_file=None), "deepclaw-tests")
    with tracer().start_as_current_span("a call") as span:
        record = _record("answered")
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert json.loads(JsonFormatter().format(record))["trace_id"] == trace_id
    assert f"trace_id={trace_id}" in TextFormatter("voice").format(record)
    assert "trace_id" not in json.loads(JsonFormatter().format(_record("outside any span")))


@workflow.defn(sandboxed=False)
class AuditAfterADay:
    @workflow.run
    async def run(self, user_id: str) -> int:
        await workflow.sleep(timedelta(days=1))
        return await workflow.execute_activity(
            "record_audit_event",
            AuditEventInput(actor="test", action="a-day-later", user_id=uuid.UUID(user_id),
                            workflow_id=workflow.info().workflow_id),
            start_to_close_timeout=timedelta(seconds=10),
            result_type=int,
        )


async def test_audit_activity_under_time_skipping(
    time_skipping_env: WorkflowEnvironment, sessions: async_sessionmaker[AsyncSession]
) -> None:
    user = User(phone_e164=f"+1555{uuid.uuid4().int % 10**7:07d}")
    async with sessions() as session, session.begin():
        session.add(user)
    store = StoreActivities(sessions)
    async with Worker(time_skipping_env.client, task_queue="audit-test", workflows=[AuditAfterADay],
                      activities=[store.record_audit_event]):
        row_id = await time_skipping_env.client.execute_workflow(
            AuditAfterADay.run, str(user.id), id=f"audit-{user.id}", task_queue="audit-test")
    async with sessions() as session:
        event = (await session.execute(select(AuditEvent).where(AuditEvent.id == row_id))).scalar_one()
    assert (event.action, event.user_id, event.workflow_id) == ("a-day-later", user.id, f"audit-{user.id}")


def test_making_the_api_leaves_the_processs_logging_alone() -> None:
    """The MCP SDK configures the root logger when a server is made (a Rich handler when rich is
    installed, whose tracebacks once stalled a worker's failing activity): logging is core.logs' to set."""
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    create_app(Settings(_env_file=None))
    assert (list(root.handlers), root.level) == before
