"""Whose nine o'clock: a user's time zone (their setting, else their phone number's), and their
quiet hours (no calls from the platform then; they become texts)."""

from __future__ import annotations

from datetime import datetime, time
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as number_zones

# Rough populations (millions) of the areas behind the zones a number with several may map to, so
# the most populous wins: a US toll-free number is New York's, a UK mobile London's, a Russian one
# Moscow's. Zones not listed count as smaller than any listed.
ZONE_POPULATION_M = {
    "America/New_York": 150, "America/Chicago": 110, "America/Los_Angeles": 55, "America/Denver": 20,
    "America/Phoenix": 7, "America/Toronto": 25, "America/Vancouver": 6, "America/Edmonton": 5,
    "America/Winnipeg": 2, "America/Halifax": 1, "America/Mexico_City": 100, "America/Tijuana": 4,
    "America/Sao_Paulo": 180, "America/Manaus": 4, "Europe/London": 67, "Europe/Moscow": 110,
    "Asia/Yekaterinburg": 15, "Asia/Novosibirsk": 10, "Australia/Sydney": 8, "Australia/Melbourne": 7,
    "Australia/Brisbane": 5, "Australia/Perth": 3, "Australia/Adelaide": 2, "Asia/Jakarta": 150,
    "Asia/Makassar": 40, "Asia/Jayapura": 5, "Asia/Kolkata": 1400, "Asia/Shanghai": 1400,
    "Europe/Madrid": 46, "Atlantic/Canary": 2, "Europe/Lisbon": 10, "Europe/Paris": 66, "Europe/Berlin": 84,
    "Asia/Almaty": 15, "America/Santiago": 19, "Pacific/Auckland": 5, "America/Argentina/Buenos_Aires": 46,
    "Africa/Johannesburg": 60, "Asia/Tokyo": 125, "America/Bogota": 50, "America/Lima": 33,
}


def zone_of_number(e164: str) -> str | None:
    """The IANA zone a phone number is in; the most populous of several; None if it says nothing."""
    try:
        zones = [z for z in number_zones.time_zones_for_number(phonenumbers.parse(e164)) if z != "Etc/Unknown"]
    except phonenumbers.NumberParseException:
        return None
    if not zones:
        return None
    return max(sorted(zones), key=lambda zone: ZONE_POPULATION_M.get(zone, 0))


def user_zone(setting: str | None, phone_e164: str, default: str) -> str:
    """The user's own setting, else their phone number's zone, else the platform default."""
    for zone in (setting, zone_of_number(phone_e164)):
        if zone and valid_zone(zone):
            return zone
    return default


class HasZone(Protocol):
    time_zone: str | None
    phone_e164: str


def zone_of_user(user: HasZone, default: str) -> str:
    """user_zone for a user row."""
    return user_zone(user.time_zone, user.phone_e164, default)


def valid_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def parse_quiet_hours(text: str) -> tuple[time, time] | None:
    """'21:00-08:00' -> (21:00, 08:00); the range may wrap past midnight. 'off' (or ''): none."""
    if text.strip().lower() in ("", "off", "none"):
        return None
    try:
        start, end = (time.fromisoformat(part.strip()) for part in text.split("-"))
    except ValueError:
        raise ValueError(f"quiet hours must look like 21:00-08:00, not {text!r}") from None
    if start == end:
        raise ValueError("quiet hours must not start and end at the same time")
    return start, end


def in_quiet_hours(moment: datetime, zone: str, quiet: tuple[time, time] | None) -> bool:
    if quiet is None:
        return False
    local = moment.astimezone(ZoneInfo(zone)).time().replace(tzinfo=None)
    start, end = quiet
    if start < end:
        return start <= local < end
    return local >= start or local < end  # wraps past midnight
