"""The dashboard's Reminders page: upcoming and past reminders; move or cancel one through its
reminder workflow (the one place a reminder changes), with the refusal explained when it cannot."""

from __future__ import annotations

import re
import uuid
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from temporalio.client import Client

from api.deps import CsrfDep, SessionDep, SettingsDep, SignedInDep, TemporalDep, UserIdDep
from api.pages import audit, local_time, own_user, render
from api.reaching import BadTime, ReminderNotChanged, change_reminder, due_time
from core.models import Reminder, utcnow
from core.recurrence import describe
from core.settings import Settings
from core.timezones import zone_of_user
from workflows.reminder import ReminderWorkflow, Reschedule

router = APIRouter()

PAST_REMINDERS = 50


@router.get("/reminders", response_class=HTMLResponse)
async def reminders(request: Request, settings: SettingsDep, session: SessionDep, viewer: SignedInDep,
                    user_id: UserIdDep, notice: str | None = None) -> Response:
    return await _reminders_page(request, settings, session, viewer, user_id, notice=REMINDER_NOTICES.get(notice or ""))


REMINDER_NOTICES = {"cancelled": "Reminder cancelled.", "moved": "Reminder moved."}


async def _reminders_page(request: Request, settings: Settings, session: SessionDep, viewer: SignedInDep,
                          user_id: uuid.UUID, *, status: int = 200, notice: str | None = None,
                          error: str | None = None, failed: uuid.UUID | None = None) -> HTMLResponse:
    user = await own_user(session, user_id)
    zone = zone_of_user(user, settings.default_time_zone)
    upcoming = (await session.execute(select(Reminder).where(Reminder.user_id == user_id, Reminder.state == "scheduled")
                                      .order_by(Reminder.due_at))).scalars().all()
    past = (await session.execute(select(Reminder).where(Reminder.user_id == user_id, Reminder.state != "scheduled")
                                  .order_by(Reminder.due_at.desc()).limit(PAST_REMINDERS))).scalars().all()  # type: ignore[attr-defined]
    return render(request, settings, "reminders.html", status, viewer=viewer, csrf=viewer.csrf, active="reminders",
                 upcoming=upcoming, past=past, user=user, zone=zone, notice=notice, error=error, failed=failed,
                 when=lambda moment: local_time(moment, zone), describe=describe,
                 local_input=lambda moment: moment.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%dT%H:%M"))


async def _own_reminder(session: SessionDep, user_id: uuid.UUID, reminder_id: uuid.UUID) -> Reminder:
    reminder = await session.get(Reminder, reminder_id)
    if reminder is None or reminder.user_id != user_id:
        raise HTTPException(status_code=404, detail="No such reminder.")
    return reminder


@router.post("/reminders/{reminder_id}/cancel", dependencies=[CsrfDep])
async def cancel_reminder(request: Request, reminder_id: uuid.UUID, settings: SettingsDep, session: SessionDep,
                          temporal: TemporalDep, viewer: SignedInDep, user_id: UserIdDep) -> Response:
    reminder = await _own_reminder(session, user_id, reminder_id)
    try:
        await change_reminder(_scheduler(temporal, reminder), reminder, ReminderWorkflow.cancel)
    except ReminderNotChanged as error:
        return await _reminders_page(request, settings, session, viewer, user_id, status=409,
                                     error=_for_people(str(error)), failed=reminder.id)
    await audit(session, user_id=user_id, action="dashboard.cancelled_reminder", reminder=str(reminder.id))
    return RedirectResponse("/reminders?notice=cancelled", status_code=303)


@router.post("/reminders/{reminder_id}/reschedule", dependencies=[CsrfDep])
async def reschedule_reminder(request: Request, reminder_id: uuid.UUID, settings: SettingsDep, session: SessionDep,
                              temporal: TemporalDep, viewer: SignedInDep, user_id: UserIdDep,
                              at: Annotated[str, Form(max_length=40)] = "") -> Response:
    """`at`: a local date and time (the form's datetime-local) in the reminder's own zone."""
    reminder = await _own_reminder(session, user_id, reminder_id)
    try:
        if not at.strip():
            raise BadTime("Choose a new date and time.")
        due = due_time(at.strip(), None, utcnow(), reminder.time_zone)
        await change_reminder(_scheduler(temporal, reminder), reminder, ReminderWorkflow.reschedule, Reschedule(due_at=due))
    except (BadTime, ReminderNotChanged) as error:
        return await _reminders_page(request, settings, session, viewer, user_id, status=400,
                                     error=_for_people(str(error)), failed=reminder.id)
    await audit(session, user_id=user_id, action="dashboard.moved_reminder", reminder=str(reminder.id),
                 due_at=due.isoformat())
    return RedirectResponse("/reminders?notice=moved", status_code=303)


def _scheduler(temporal: Client | None, reminder: Reminder) -> Client:
    """The client to change `reminder` through, if it can still change."""
    if reminder.state != "scheduled":
        raise ReminderNotChanged(f"reminder {reminder.id} has already {reminder.state}")
    if temporal is None:
        raise ReminderNotChanged("the scheduler is unreachable right now; nothing was changed, try again in a minute")
    return temporal


def _for_people(reason: str) -> str:
    """The tools' wording, for a person: no ids, "your user" is "you"."""
    reason = re.sub(r"reminder [0-9a-f-]{36} ", "This reminder ", reason).replace(" for your user", "")
    reason = reason.replace("'at' must be ISO 8601, e.g. 2026-11-25T09:00 (your user's time) or "
                            "2026-11-25T09:00:00-05:00", "That is not a date and time.")
    return reason[:1].upper() + reason[1:]
