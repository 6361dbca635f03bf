"""Repeating reminders: "daily", "weekdays", "weekly", "monthly" or an RRULE (RFC 5545), anchored at
the first occurrence in the user's zone, so a 09:00 reminder stays at 09:00 across DST changes."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from dateutil.rrule import rrulestr

PRESETS = {
    "daily": "FREQ=DAILY",
    "weekdays": "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR",
    "weekly": "FREQ=WEEKLY",
    "monthly": "FREQ=MONTHLY",
}
TOO_OFTEN = ("SECONDLY", "MINUTELY")  # a reminder more often than hourly is a mistake, not a reminder
MAX_RULE_CHARS = 256


class BadRecurrence(ValueError):
    pass


def recurrence_rule(every: str) -> str:
    """The RRULE for `every` (a preset or an RRULE, with or without "RRULE:"), checked."""
    text = every.strip()
    rule = PRESETS.get(text.lower()) or text.removeprefix("RRULE:").removeprefix("rrule:").strip()
    if len(rule) > MAX_RULE_CHARS:
        raise BadRecurrence(f"the rule is too long (at most {MAX_RULE_CHARS} characters)")
    fields = dict(part.partition("=")[::2] for part in rule.upper().split(";") if part)
    if "FREQ" not in fields:
        raise BadRecurrence(f"say daily, weekdays, weekly, monthly or an RRULE like FREQ=WEEKLY;BYDAY=MO, "
                            f"not {every!r}")
    if fields["FREQ"] in TOO_OFTEN:
        raise BadRecurrence("reminders repeat at most hourly")
    if "DTSTART" in rule.upper():
        raise BadRecurrence("leave DTSTART out: the first occurrence is the reminder's time")
    try:
        rrulestr(rule, dtstart=datetime(2026, 1, 1, tzinfo=UTC))
    except (ValueError, TypeError) as error:
        raise BadRecurrence(f"not a valid RRULE: {error}") from None
    return rule


def next_occurrence(rule: str, first: datetime, after: datetime, zone: str) -> datetime | None:
    """The rule's first occurrence strictly after `after` (UTC), counting from `first` in `zone`;
    None once the rule has run out (COUNT, UNTIL)."""
    tz = ZoneInfo(zone)
    found = rrulestr(rule, dtstart=first.astimezone(tz)).after(after.astimezone(tz))
    return found.astimezone(UTC) if found else None


def describe(rule: str | None) -> str:
    """How list_reminders says it."""
    if rule is None:
        return "once"
    named = {v: k for k, v in PRESETS.items()}
    return named.get(rule, rule)
