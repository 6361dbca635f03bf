"""The MCP tools that reach the user later or now (api/routes/mcp.py registers them): reminders
(ReminderWorkflow `reminder-<id>`, times in the user's zone, repeating by RRULE, rescheduled and
cancelled by Update), and send_sms / call_me through the same durable delivery as reminders
(DeliveryWorkflow: opt-out, quiet hours, a call that does not reach the user becomes a text)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from mcp.server.mcpserver.exceptions import ToolError
from sqlalchemy import select
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.service import RPCError

from activities.delivery import DeliveryEnd, DeliveryRequest
from api.tool_context import SCHEDULER_DOWN, Tools, text_arg
from core.billing import load_plan, over_cap
from core.limits import Limit
from core.models import Channel, DeliveryOutcome, Reminder
from core.recurrence import BadRecurrence, describe, recurrence_rule
from core.timezones import zone_of_user
from workflows.delivery import DeliveryWorkflow
from workflows.delivery import workflow_id as delivery_workflow_id
from workflows.reminder import ReminderChange, ReminderInput, ReminderWorkflow, Reschedule, workflow_id

log = logging.getLogger(__name__)

MAX_AHEAD = timedelta(days=366)
CAP_REACHED = ("Not calling: your user's monthly spending cap is reached, so no calls until next month "
               "(they can raise it on the dashboard). Tell them so; a text (send_sms) still works.")
SENT_WAIT_S = 5.0  # send_sms waits this long to say the text went out (it is durable either way)


class BadTime(ValueError):
    """A reminder time that cannot be used, in words for whoever gave it."""


class ReminderNotChanged(Exception):
    """A reschedule or cancel that did not take effect (it is being delivered, has fired, or the
    scheduler is unreachable), in words for whoever asked."""


def due_time(at: str | None, in_minutes: float | None, now: datetime, zone: str) -> datetime:
    """When: `in_minutes` from now, or `at` (ISO 8601; without an offset, in the user's zone)."""
    if in_minutes is not None:
        due = now + timedelta(minutes=in_minutes)
    elif at is not None:
        try:
            due = datetime.fromisoformat(at)
        except ValueError:
            raise BadTime("'at' must be ISO 8601, e.g. 2026-11-25T09:00 (your user's time) "
                          "or 2026-11-25T09:00:00-05:00") from None
        if due.tzinfo is None:
            due = due.replace(tzinfo=ZoneInfo(zone))
    else:
        raise BadTime("say when: 'at' (ISO 8601) or 'in_minutes'")
    if due < now - timedelta(minutes=1):
        raise BadTime(f"{due.isoformat(timespec='minutes')} is in the past "
                      f"(it is {now.astimezone(ZoneInfo(zone)).isoformat(timespec='minutes')} for your user)")
    if due > now + MAX_AHEAD:
        raise BadTime("reminders can be at most a year ahead")
    return due.astimezone(UTC)


def _tool_due_time(at: str | None, in_minutes: float | None, zone: str) -> datetime:
    try:
        return due_time(at, in_minutes, datetime.now(UTC), zone)
    except BadTime as error:
        raise ToolError(str(error)) from None


def local(moment: datetime, zone: str) -> str:
    return moment.astimezone(ZoneInfo(zone)).isoformat(timespec="minutes")


async def schedule_reminder(tools: Tools, text: str, at: str | None, in_minutes: float | None, channel: Channel,
                            every: str | None) -> str:
    text = text_arg(text, "text")
    user = await tools.user()
    zone = zone_of_user(user, tools.platform.settings.default_time_zone)
    due = _tool_due_time(at, in_minutes, zone)
    try:
        rule = recurrence_rule(every) if every else None
    except BadRecurrence as error:
        raise ToolError(f"'every': {error}") from None
    client = tools.temporal()
    reminder = Reminder(user_id=tools.user_id, due_at=due, text=text, channel=channel, recurrence=rule, time_zone=zone)
    # The row commits only once its workflow has started: a scheduler that cannot be reached
    # leaves nothing behind, and the agent is told.
    async with tools.sessions() as session, session.begin():
        session.add(reminder)
        await session.flush()
        try:
            await client.start_workflow(
                ReminderWorkflow.run, ReminderInput(
                    reminder_id=reminder.id, user_id=tools.user_id, text=text, channel=channel, due_at=due,
                    agent_name=user.agent_name, time_zone=zone, recurrence=rule,
                    lead_s=tools.platform.settings.reminder_lead_s),
                id=workflow_id(reminder.id), task_queue=tools.platform.settings.temporal_task_queue)
        except RPCError as error:
            log.warning("reminder for user %s not scheduled: %s", tools.user_id, error)
            raise ToolError(f"Reminder not set: {SCHEDULER_DOWN}") from None
    how = "a text" if channel == Channel.SMS else "a call"
    repeat = f", repeating {describe(rule)}" if rule else ""
    return f"Reminder {reminder.id} set: {how} at {local(due, zone)}{repeat} ({text!r})."


async def list_reminders(tools: Tools) -> str:
    async with tools.sessions() as session:
        pending = (await session.scalars(select(Reminder).where(
            Reminder.user_id == tools.user_id, Reminder.state == "scheduled").order_by(Reminder.due_at))).all()
    if not pending:
        return "No reminders are scheduled."
    return "\n".join(f"{r.id} — {local(r.due_at, r.time_zone)} — {r.channel}"
                     f"{'' if r.recurrence is None else ', ' + describe(r.recurrence)} — {r.text}" for r in pending)


async def _own_reminder(tools: Tools, id: str) -> Reminder:
    try:
        reminder_id = uuid.UUID(id)
    except ValueError:
        raise ToolError("'id' must be a reminder id from list_reminders") from None
    async with tools.sessions() as session:
        reminder = await session.get(Reminder, reminder_id)
    if reminder is None or reminder.user_id != tools.user_id:
        raise ToolError(f"no reminder {reminder_id}")
    if reminder.state != "scheduled":
        raise ToolError(f"reminder {reminder_id} has already {reminder.state}")
    return reminder


async def change_reminder(client: Client, reminder: Reminder, update: object, *args: object) -> ReminderChange:
    """Reschedules or cancels (`update`) through the reminder's workflow: the one place a change is
    decided (not while it is being delivered). ReminderNotChanged says why not."""
    handle = client.get_workflow_handle(workflow_id(reminder.id))
    try:
        change: ReminderChange = await handle.execute_update(update, *args)  # type: ignore[arg-type]
    except RPCError as error:
        log.warning("reminder %s not changed: %s", reminder.id, error)
        raise ReminderNotChanged(f"reminder {reminder.id} can't be changed now (it may have just fired)") from None
    if not change.took_effect:
        raise ReminderNotChanged(f"reminder {reminder.id} was not changed: {change.reason}")
    return change


async def _change(tools: Tools, reminder: Reminder, update: object, *args: object) -> ReminderChange:
    try:
        return await change_reminder(tools.temporal(), reminder, update, *args)
    except ReminderNotChanged as error:
        raise ToolError(str(error)) from None


async def reschedule_reminder(tools: Tools, id: str, at: str | None, in_minutes: float | None) -> str:
    reminder = await _own_reminder(tools, id)
    due = _tool_due_time(at, in_minutes, reminder.time_zone)
    change = await _change(tools, reminder, ReminderWorkflow.reschedule, Reschedule(due_at=due))
    return f"Reminder {reminder.id} moved to {local(change.due_at, reminder.time_zone)}."


async def cancel_reminder(tools: Tools, id: str) -> str:
    reminder = await _own_reminder(tools, id)
    await _change(tools, reminder, ReminderWorkflow.cancel)
    return f"Reminder {reminder.id} cancelled."


async def _within_limits(tools: Tools, kind: Limit) -> None:
    if refusal := await tools.platform.limiter.acquire(kind, tools.user_id):
        raise ToolError(f"{'Text' if kind == Limit.SMS else 'Call'} not sent: {refusal}. "
                        "Reminders the user asked for are not affected.")


async def _start_delivery(tools: Tools, request: DeliveryRequest) -> WorkflowHandle[DeliveryWorkflow, DeliveryEnd]:
    try:
        return await tools.temporal().start_workflow(
            DeliveryWorkflow.run, request, id=delivery_workflow_id(request.delivery_id),
            task_queue=tools.platform.settings.temporal_task_queue)
    except RPCError as error:
        log.warning("delivery for user %s not started: %s", tools.user_id, error)
        raise ToolError(f"Not sent: {SCHEDULER_DOWN}") from None


async def platform_text(tools: Tools, text: str) -> WorkflowHandle[DeliveryWorkflow, DeliveryEnd]:
    """A text to the user by the same durable delivery (opt-out and suspension checked at send time)."""
    return await _start_delivery(tools, DeliveryRequest(
        delivery_id=uuid.uuid4(), user_id=tools.user_id, channel=Channel.SMS, text=text))


async def send_sms(tools: Tools, text: str) -> str:
    body = text_arg(text, "text")
    await tools.line()
    await _within_limits(tools, Limit.SMS)
    handle = await platform_text(tools, body)
    try:
        end: DeliveryEnd = await asyncio.wait_for(handle.result(), SENT_WAIT_S)
    except TimeoutError:
        return f"Texting the user (delivery {handle.id}); it goes out as soon as it can."
    except WorkflowFailureError as error:
        raise ToolError(f"Text not sent: {error.cause or error}") from None
    if end.outcome != DeliveryOutcome.TEXTED:
        raise ToolError(f"Text not sent: {end.detail or end.outcome}")
    log.info("agent of user %s texted its user (%s)", tools.user_id, handle.id)
    return "Texted the user."


async def call_me(tools: Tools, greeting: str, reason: str | None) -> str:
    greeting = text_arg(greeting, "greeting")
    reason = text_arg(reason, "reason") if reason else greeting
    user, _ = await tools.line()
    zone = zone_of_user(user, tools.platform.settings.default_time_zone)
    async with tools.sessions() as session:
        if await over_cap(session, load_plan(tools.platform.settings.price_plan), user, zone, datetime.now(UTC)):
            raise ToolError(CAP_REACHED)
    await _within_limits(tools, Limit.CALL)
    handle = await _start_delivery(tools, DeliveryRequest(
        delivery_id=uuid.uuid4(), user_id=tools.user_id, channel=Channel.CALL, greeting=greeting, purpose=reason,
        text=f"{greeting} (I tried to call you{'' if reason == greeting else ': ' + reason}.)"))
    log.info("agent of user %s is calling its user (%s)", tools.user_id, handle.id)
    return ("Calling the user now. If they don't pick up (or it is their quiet hours), they get a text instead "
            f"(delivery {handle.id}).")
