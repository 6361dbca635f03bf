"""The worker process (`deepclaw worker`): polls the task queue and keeps its heartbeat fresh."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import uuid
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    SchedulePolicy,
    ScheduleSpec,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.worker import PollerBehaviorAutoscaling, Worker

from core import heartbeat
from core.db import DATABASE_DOWN, create_engine, sessionmaker
from core.metrics import metrics_endpoint
from core.ports import AgentRuntime
from core.process import free_port
from core.serve import serving
from core.settings import Settings
from core.temporal import connect, metrics_runtime
from core.tracing import setup_tracing
from workers import registry
from workflows.close_month import CRON as CLOSE_MONTH_CRON
from workflows.close_month import SCHEDULE_ID as CLOSE_MONTH_SCHEDULE
from workflows.close_month import CloseMonthInput, CloseMonthWorkflow
from workflows.retention import CRON as RETENTION_CRON
from workflows.retention import SCHEDULE_ID as RETENTION_SCHEDULE
from workflows.retention import RetentionWorkflow
from workflows.hotline_setup import WORKFLOW_ID as HOTLINE_SETUP_ID
from workflows.hotline_setup import HotlineSetupWorkflow
from workflows.number_pool import WORKFLOW_ID as POOL_WORKFLOW_ID
from workflows.number_pool import NumberPoolWorkflow, PoolInput

log = logging.getLogger(__name__)


async def run_worker(settings: Settings, stop: asyncio.Event | None = None, *,
                     runtime: AgentRuntime | None = None) -> None:
    """Run until `stop` is set (or SIGINT/SIGTERM when no event is given). `runtime`: agents from
    this instead of the configured adapter (the load bench mixes real gateways with stand-ins)."""
    setup_tracing(settings, "deepclaw-worker")
    engine = create_engine(settings.database_url)
    sessions = sessionmaker(engine)
    sdk_metrics = f"127.0.0.1:{free_port()}"  # the SDK's exporter: read through our /metrics only
    client = await connect(settings, runtime=metrics_runtime(sdk_metrics))
    instance = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    polling: list[asyncio.Task[None]] = []  # the worker's run, once it polls

    async def healthz(_: Request) -> JSONResponse:
        """For Kubernetes' probes: up while the worker polls its task queue."""
        up = bool(polling) and not polling[0].done()
        return JSONResponse({"state": "up" if up else "starting"}, status_code=200 if up else 503)

    metrics_app = Starlette(routes=[Route("/metrics", metrics_endpoint(settings, extra_from=f"http://{sdk_metrics}/metrics")),
                                    Route("/healthz", healthz)])
    async with registry.activities(settings, sessions, runtime=runtime) as parts, serving(
            metrics_app, settings.worker_metrics_host, settings.worker_metrics_port):
        worker = Worker(
            client,
            task_queue=settings.temporal_task_queue,
            workflows=list(registry.WORKFLOWS),
            activities=parts.activities,
            identity=instance,
            graceful_shutdown_timeout=timedelta(seconds=3),
            # Temporal's recommended poller setting (server 1.28+): polls scale with the task queue's
            # backlog instead of a fixed 5. bench/load.py prints the tasks' waits to be picked up.
            workflow_task_poller_behavior=PollerBehaviorAutoscaling(),
            activity_task_poller_behavior=PollerBehaviorAutoscaling(),
        )
        await ensure_number_pool(client, settings)
        await configure_hotline(client, settings)
        await ensure_statement_schedule(client, settings)
        await ensure_retention_schedule(client, settings)
        await _serve(worker, settings, sessions, instance, stop, parts.runtime, polling)
    await engine.dispose()


async def ensure_number_pool(client: Client, settings: Settings) -> None:
    """The pool is a singleton workflow: start it unless it already runs."""
    if settings.number_pool_target <= 0:
        return
    try:
        await client.start_workflow(
            NumberPoolWorkflow.run,
            PoolInput(target=settings.number_pool_target, area_codes=settings.number_pool_area_codes),
            id=POOL_WORKFLOW_ID, task_queue=settings.temporal_task_queue)
        log.info("started the number pool (target %d)", settings.number_pool_target)
    except WorkflowAlreadyStartedError:
        pass


async def ensure_statement_schedule(client: Client, settings: Settings) -> None:
    """Each month is closed (statements to billing) by a Temporal Schedule; created once, kept."""
    try:
        await client.create_schedule(CLOSE_MONTH_SCHEDULE, Schedule(
            action=ScheduleActionStartWorkflow(CloseMonthWorkflow.run, CloseMonthInput(), id="close-month-run",
                                               task_queue=settings.temporal_task_queue),
            spec=ScheduleSpec(cron_expressions=[CLOSE_MONTH_CRON]),
            policy=SchedulePolicy(catchup_window=timedelta(days=27))))  # a worker down over the 1st still closes it
        log.info("created the schedule %s (%s UTC)", CLOSE_MONTH_SCHEDULE, CLOSE_MONTH_CRON)
    except ScheduleAlreadyRunningError:
        pass


async def ensure_retention_schedule(client: Client, settings: Settings) -> None:
    """What is past its retention period is removed daily by a Temporal Schedule; created once, kept."""
    try:
        await client.create_schedule(RETENTION_SCHEDULE, Schedule(
            action=ScheduleActionStartWorkflow(RetentionWorkflow.run, id="retention-run",
                                               task_queue=settings.temporal_task_queue),
            spec=ScheduleSpec(cron_expressions=[RETENTION_CRON]),
            policy=SchedulePolicy(catchup_window=timedelta(days=1))))
        log.info("created the schedule %s (%s UTC)", RETENTION_SCHEDULE, RETENTION_CRON)
    except ScheduleAlreadyRunningError:
        pass


async def configure_hotline(client: Client, settings: Settings) -> None:
    """Points the hotline's webhooks at the platform (HotlineSetupWorkflow); the worker does not wait."""
    await client.start_workflow(HotlineSetupWorkflow.run, settings.hotline_number, id=HOTLINE_SETUP_ID,
                                task_queue=settings.temporal_task_queue,
                                id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING)  # the newest start wins


async def _serve(worker: Worker, settings: Settings, sessions: async_sessionmaker[AsyncSession], instance: str,
                 stop: asyncio.Event | None, runtime: AgentRuntime, polling: list[asyncio.Task[None]]) -> None:
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

    async def keep_heartbeat() -> None:
        while True:
            try:
                await heartbeat.beat(sessions, instance=instance, service="worker",
                                     task_queue=settings.temporal_task_queue, detail={"agent_pool": runtime.pool()})
            except DATABASE_DOWN as error:  # it beats again once the database is back
                log.warning("worker heartbeat failed, the database is unreachable: %s", error)
            except Exception:
                log.exception("worker heartbeat failed")
            await asyncio.sleep(settings.worker_heartbeat_interval_s)

    log.info("worker %s polling task queue %r on %s", instance, settings.temporal_task_queue, settings.temporal_address)
    worker_task = asyncio.create_task(worker.run())
    polling.append(worker_task)
    beat_task = asyncio.create_task(keep_heartbeat())
    stop_task = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({worker_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        beat_task.cancel()
        stop_task.cancel()
        try:
            await heartbeat.forget(sessions, instance=instance)
        except Exception:
            log.warning("could not remove heartbeat row for %s", instance)
        if not worker_task.done():
            await worker.shutdown()
        await worker_task  # re-raises a worker failure so the process exits non-zero
        log.info("worker %s stopped", instance)
