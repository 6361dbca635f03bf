"""The calendar and mail tools of the platform MCP server (api/routes/mcp.py registers them): they act
on the account the user connected on the dashboard (Google, or Microsoft), with the user's token
inside the platform (core.workspace; the agent never holds it). Sending mail and cancelling events
are only proposed here: the owner confirms by text (activities/integrations/actions.py).

Times the agent gives without an offset are the user's own; "today" and "tomorrow" are theirs too."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from mcp.server.mcpserver.exceptions import ToolError

from activities.integrations.actions import ActionKind, PendingActions
from activities.integrations.credentials import NotConnected
from activities.integrations.workspaces import workspace_of
from api import reaching
from api.tool_context import Tools
from core.integrations import ConnectionState, Provider
from core.timezones import zone_of_user
from core.workspace import CalendarEvent, ProviderFailed, Trouble, Workspace

log = logging.getLogger(__name__)

MAX_EVENT_MINUTES = 7 * 24 * 60
MAX_RANGE = timedelta(days=62)
WORKING_HOURS = (time(9), time(18))  # where find_free_time looks within a day
TITLES = {Provider.GOOGLE: "Google", Provider.OUTLOOK: "Microsoft"}
_CLOCK = re.compile(r"^(\d{1,2})(?::(\d{2}))?\s*(am|pm)?$")


class Account:
    """The user's connected account a tool acts on, and its zone."""

    def __init__(self, tools: Tools, provider: Provider, workspace: Workspace, zone: str) -> None:
        self.tools, self.provider, self.workspace, self.zone = tools, provider, workspace, zone

    @property
    def title(self) -> str:
        return TITLES[self.provider]

    def local(self, moment: datetime) -> str:
        return moment.astimezone(ZoneInfo(self.zone)).strftime("%a %d %b %H:%M")

    def event_line(self, event: CalendarEvent) -> str:
        end = event.end.astimezone(ZoneInfo(self.zone))
        same_day = end.date() == event.start.astimezone(ZoneInfo(self.zone)).date()
        return (f"- {self.local(event.start)}–{end.strftime('%H:%M') if same_day else self.local(event.end)} "
                f"{event.title}" + (f" (at {event.location})" if event.location else "") + f" [id {event.id}]")


async def account(tools: Tools, which: str | None) -> Account:
    """The connected account to use: the one named, else Google, else Microsoft."""
    connections = await tools.platform.credentials.connections(tools.user_id)
    dashboard = f"{tools.platform.settings.api_base_url.rstrip('/')}/integrations"
    wanted = [Provider(which)] if which else list(Provider)
    for provider in wanted:
        connection = connections.get(provider)
        if connection is not None and connection.state == ConnectionState.CONNECTED:
            user = await tools.user()
            zone = zone_of_user(user, tools.platform.settings.default_time_zone)
            return Account(tools, provider, workspace_of(tools.platform.credentials, tools.user_id, provider), zone)
    if any(connections.get(p) for p in wanted):
        raise ToolError(f"Your user's {' or '.join(TITLES[p] for p in wanted)} access has ended; they must "
                        f"connect it again on the dashboard ({dashboard}). Tell them so.")
    raise ToolError(f"Your user has not connected {'a calendar and mail account' if not which else TITLES[wanted[0]]}; "
                    f"they can connect Google or Microsoft on the dashboard ({dashboard}). Tell them so.")


@asynccontextmanager
async def at_provider(acct: Account, what: str) -> AsyncIterator[None]:
    """Provider failures as tool errors the agent can act on; the user told once when access ends."""
    try:
        yield
    except NotConnected as missing:
        if missing.first_notice:
            await _tell_access_ended(acct)
        raise ToolError(f"{acct.title} access has ended (the user withdrew it, or it expired); the user must "
                        "connect again on the dashboard. They have been told by text.") from None
    except ProviderFailed as failed:
        hint = {Trouble.NOT_FOUND: f"no such {what}: list again for current ids",
                Trouble.RATE_LIMITED: "rate limited: try again in a minute",
                Trouble.UNAVAILABLE: "the provider is not answering: try again shortly",
                Trouble.REFUSED: "the provider refused the request"}[failed.trouble]
        raise ToolError(f"{hint} ({failed.detail})") from None


async def _tell_access_ended(acct: Account) -> None:
    dashboard = f"{acct.tools.platform.settings.api_base_url.rstrip('/')}/integrations"
    try:
        await acct.tools.line()
        await reaching.platform_text(acct.tools, f"Your agent can no longer reach your {acct.title} calendar and "
                                                 f"mail: connect it again at {dashboard}")
    except ToolError as error:  # opted out, no number, scheduler down: the agent still says so
        log.warning("user %s not told that %s access ended: %s", acct.tools.user_id, acct.provider.value, error)


# ---- times -----------------------------------------------------------------------------------


def _day(text: str, zone: str, now: datetime) -> date:
    today = now.astimezone(ZoneInfo(zone)).date()
    lowered = text.strip().lower()
    if lowered in ("today", "tonight"):
        return today
    if lowered == "tomorrow":
        return today + timedelta(days=1)
    try:
        return date.fromisoformat(lowered)
    except ValueError:
        raise ToolError(f"'{text}' is not a day: say today, tomorrow or YYYY-MM-DD") from None


def moment(text: str, zone: str, now: datetime, key: str) -> datetime:
    """ISO 8601 (the user's time without an offset), or a day and a clock time: 'tomorrow 12:00',
    'today 3pm', '2026-12-07 noon'."""
    value = text.strip()
    try:
        parsed = datetime.fromisoformat(value)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=ZoneInfo(zone))
    except ValueError:
        pass
    day, _, clock = value.partition(" ")
    clock = clock.strip().lower().replace("noon", "12:00").replace("midday", "12:00")
    if not (match := _CLOCK.match(clock)):
        raise ToolError(f"'{key}' must be ISO 8601 (2026-12-07T12:00, your user's time) or a day and a time "
                        "('tomorrow 12:00', 'today 3pm')")
    hour, minute = int(match[1]), int(match[2] or 0)
    if match[3] == "pm" and hour < 12:
        hour += 12
    elif match[3] == "am" and hour == 12:
        hour = 0
    if hour > 23 or minute > 59:
        raise ToolError(f"'{key}': {clock} is not a time of day")
    return datetime.combine(_day(day, zone, now), time(hour, minute), ZoneInfo(zone))


def span(acct: Account, day: str | None, start: str | None, end: str | None) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    if day:
        first = datetime.combine(_day(day, acct.zone, now), time(0), ZoneInfo(acct.zone))
        return first, first + timedelta(days=1)
    if not start:
        raise ToolError("say which day ('day': today, tomorrow, YYYY-MM-DD) or a range ('start' and 'end')")
    begin = moment(start, acct.zone, now, "start")
    finish = moment(end, acct.zone, now, "end") if end else begin + timedelta(days=1)
    if not begin < finish <= begin + MAX_RANGE:
        raise ToolError(f"'end' must come after 'start', within {MAX_RANGE.days} days")
    return begin, finish


def _length(minutes: float | None, begin: datetime, end: str | None, zone: str) -> datetime:
    if end:
        finish = moment(end, zone, datetime.now(UTC), "end")
    else:
        finish = begin + timedelta(minutes=minutes or 60)
    if not begin < finish <= begin + timedelta(minutes=MAX_EVENT_MINUTES):
        raise ToolError("an event must end after it starts, within a week")
    return finish


# ---- calendar --------------------------------------------------------------------------------


async def calendar_events(tools: Tools, day: str | None, start: str | None, end: str | None,
                          which: str | None) -> str:
    acct = await account(tools, which)
    begin, finish = span(acct, day, start, end)
    async with at_provider(acct, "calendar"):
        events = await acct.workspace.events(begin, finish)
    when = f"{acct.local(begin)} to {acct.local(finish)}"
    if not events:
        return f"Nothing on the {acct.title} calendar from {when}."
    return f"{acct.title} calendar, {when} (your user's time):\n" + "\n".join(acct.event_line(e) for e in events)


async def create_event(tools: Tools, title: str, start: str, minutes: float | None, end: str | None,
                       location: str | None, which: str | None) -> str:
    acct = await account(tools, which)
    begin = moment(start, acct.zone, datetime.now(UTC), "start")
    finish = _length(minutes, begin, end, acct.zone)
    async with at_provider(acct, "calendar"):
        event = await acct.workspace.create_event(title, begin, finish, location or "")
    log.info("agent of user %s added an event to %s", tools.user_id, acct.provider.value)
    return f"Added to the {acct.title} calendar:\n{acct.event_line(event)}"


async def move_event(tools: Tools, event_id: str, start: str, minutes: float | None, end: str | None,
                     which: str | None) -> str:
    acct = await account(tools, which)
    begin = moment(start, acct.zone, datetime.now(UTC), "start")
    async with at_provider(acct, "event"):
        if minutes is None and end is None:  # keep its length
            current = await acct.workspace.event(event_id)
            minutes = (current.end - current.start).total_seconds() / 60
        event = await acct.workspace.move_event(event_id, begin, _length(minutes, begin, end, acct.zone))
    return f"Moved:\n{acct.event_line(event)}"


async def cancel_event(tools: Tools, event_id: str, which: str | None) -> str:
    acct = await account(tools, which)
    async with at_provider(acct, "event"):
        event = await acct.workspace.event(event_id)
    summary = f"“{event.title}” on {acct.local(event.start)}"
    return await _ask_owner(acct, ActionKind.CANCEL_EVENT, event.id, summary)


async def find_free_time(tools: Tools, day: str | None, start: str | None, end: str | None, minutes: float,
                         which: str | None) -> str:
    acct = await account(tools, which)
    begin, finish = span(acct, day, start, end)
    if day:  # a whole day: its working hours
        begin = begin.replace(hour=WORKING_HOURS[0].hour)
        finish = begin.replace(hour=WORKING_HOURS[1].hour)
    begin = max(begin, datetime.now(UTC).astimezone(begin.tzinfo))
    if begin >= finish:
        return f"That time is over (it is {acct.local(datetime.now(UTC))} for your user); ask about a later one."
    async with at_provider(acct, "calendar"):
        busy = sorted(await acct.workspace.busy(begin, finish))
    slots = free_slots(begin, finish, busy, timedelta(minutes=minutes))
    if not slots:
        return f"No free {minutes:g} minutes between {acct.local(begin)} and {acct.local(finish)}."
    return (f"Free for at least {minutes:g} minutes (your user's time):\n"
            + "\n".join(f"- {acct.local(a)}–{b.astimezone(ZoneInfo(acct.zone)).strftime('%H:%M')}" for a, b in slots))


def free_slots(begin: datetime, finish: datetime, busy: list[tuple[datetime, datetime]],
               length: timedelta) -> list[tuple[datetime, datetime]]:
    """The gaps of at least `length` between `begin` and `finish` that no busy span covers."""
    slots, cursor = [], begin
    for busy_start, busy_end in sorted(busy):
        if busy_start - cursor >= length:
            slots.append((cursor, min(busy_start, finish)))
        cursor = max(cursor, busy_end)
        if cursor >= finish:
            break
    if finish - cursor >= length:
        slots.append((cursor, finish))
    return slots


# ---- mail ------------------------------------------------------------------------------------


async def search_mail(tools: Tools, query: str, count: int, which: str | None) -> str:
    acct = await account(tools, which)
    async with at_provider(acct, "mail"):
        found = await acct.workspace.search_mail(query, count)
    if not found:
        return f"No mail in {acct.title} matches {query!r}."
    return f"{acct.title} mail matching {query!r}, newest first:\n" + "\n".join(
        f"- {acct.local(m.received)} from {m.sender}: {m.subject} — {m.snippet[:120]} [id {m.id}]" for m in found)


async def read_mail(tools: Tools, message_id: str, which: str | None) -> str:
    acct = await account(tools, which)
    async with at_provider(acct, "message"):
        mail = await acct.workspace.read_mail(message_id)
    return (f"From: {mail.sender}\nTo: {mail.to}\nDate: {acct.local(mail.received)}\nSubject: {mail.subject}\n\n"
            f"{mail.body[:4000]}")


async def draft_reply(tools: Tools, message_id: str, body: str, which: str | None) -> str:
    acct = await account(tools, which)
    async with at_provider(acct, "message"):
        draft = await acct.workspace.draft_reply(message_id, body)
    return (f"Draft saved in {acct.title} (not sent) [draft id {draft.id}]: to {draft.to}, “{draft.subject}”. "
            "To send it, call send_draft with this id: your user then confirms by text.")


async def send_draft(tools: Tools, draft_id: str, which: str | None) -> str:
    acct = await account(tools, which)
    async with at_provider(acct, "draft"):
        draft = await acct.workspace.draft(draft_id)
    summary = f"the mail “{draft.subject}” to {draft.to}"
    return await _ask_owner(acct, ActionKind.SEND_MAIL, draft.id, summary)


async def _ask_owner(acct: Account, kind: ActionKind, target: str, summary: str) -> str:
    """Proposed, and the owner asked by text (and on their call, if they are on one); the agent is
    told it is not done yet, and what to ask."""
    await acct.tools.line()  # the owner can be texted (not opted out, has a number)
    actions = PendingActions(acct.tools.platform.credentials, acct.tools.sessions)
    proposal = await actions.propose(acct.tools.user_id, acct.provider, kind, target, summary)
    await reaching.platform_text(acct.tools, proposal.text)
    verb = "sent" if kind == ActionKind.SEND_MAIL else "cancelled"
    reference = proposal.action.reference
    if proposal.spoken:
        return (f"Not {verb} yet: your user must confirm. Ask them now, on this call: “{proposal.spoken}” The "
                f"platform hears their answer itself. (They were also texted; replying YES {reference} works too.)")
    return (f"Not {verb} yet: your user must confirm. They have been texted: “{proposal.text}” Tell them to reply "
            f"YES {reference} to that text (it expires in 30 minutes).")
