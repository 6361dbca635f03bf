"""Removing what the platform no longer needs to keep (RetentionWorkflow, daily): call transcripts
and texts past their retention periods, audit events past theirs, and the short-lived records
(sign-in codes, web sessions, stream tickets, rate-limit counts, the local outbox) once spent.

Each purge deletes in batches of BATCH rows, so no statement holds locks for long and a crash
loses nothing (the next batch, or the next day, goes on where it stopped); progress is heartbeated.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from core.db import transaction
from core.settings import Settings

BATCH = 1000
SPENT_DAYS = 7  # sign-in codes, sessions and stream tickets this long after they stopped working


class Purge(StrEnum):
    CALLS = "calls"  # call conversations and their transcripts (messages cascade)
    TEXTS = "texts"  # SMS conversations and their messages
    DELIVERIES = "deliveries"  # texts and calls sent to users (they hold the text)
    CONFIRMATIONS = "confirmations"  # answered or expired pending actions (they hold a summary)
    AUDIT = "audit"
    SIGN_IN_CODES = "sign-in codes"
    WEB_SESSIONS = "web sessions"
    MEDIA_STREAMS = "media streams"  # stream tickets and the call's greeting/prompt
    RATE_LIMITS = "rate limits"
    OUTBOX = "outbox"  # the local mailer's sent mail


# Each: the table, and which of its rows may go, given :days (the period) as a parameter.
_WHERE: dict[Purge, tuple[str, str]] = {
    Purge.CALLS: ("conversations", "kind = 'call' AND started_at < now() - make_interval(days => :days)"),
    Purge.TEXTS: ("conversations", "kind = 'sms' AND started_at < now() - make_interval(days => :days)"),
    Purge.DELIVERIES: ("deliveries", "created_at < now() - make_interval(days => :days)"),
    Purge.CONFIRMATIONS: ("pending_actions", "(state <> 'pending' OR expires_at < now()) "
                                             "AND created_at < now() - make_interval(days => :days)"),
    Purge.AUDIT: ("audit_events", "created_at < now() - make_interval(days => :days)"),
    Purge.SIGN_IN_CODES: ("sign_in_codes", "expires_at < now() - make_interval(days => :days)"),
    Purge.WEB_SESSIONS: ("web_sessions", "expires_at < now() - make_interval(days => :days)"),
    Purge.MEDIA_STREAMS: ("media_streams", "expires_at < now() - make_interval(days => :days) "
                                           "AND NOT EXISTS (SELECT 1 FROM pending_actions p "
                                           "WHERE p.call_stream_id = media_streams.id AND p.state = 'pending')"),
    Purge.RATE_LIMITS: ("rate_limit_hits", "at < now() - make_interval(days => :days)"),
    Purge.OUTBOX: ("email_outbox", "created_at < now() - make_interval(days => :days)"),
}


def period_days(settings: Settings, purge: Purge) -> int:
    return {Purge.CALLS: settings.retain_call_transcripts_days, Purge.TEXTS: settings.retain_texts_days,
            Purge.DELIVERIES: settings.retain_texts_days, Purge.CONFIRMATIONS: settings.retain_texts_days,
            Purge.AUDIT: settings.retain_audit_days, Purge.OUTBOX: 30,
            Purge.RATE_LIMITS: 2}.get(purge, SPENT_DAYS)  # the longest rate-limit window is a day


class RetentionActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        self.sessions = sessions
        self.settings = settings

    @activity.defn
    async def purge(self, purge: Purge) -> int:
        """Deletes every row of `purge` past its period; returns how many."""
        table, where = _WHERE[purge]  # constants only: nothing from outside is in the SQL
        statement = text(f"DELETE FROM {table} WHERE ctid IN (SELECT ctid FROM {table} WHERE {where} LIMIT {BATCH})")
        days, removed = period_days(self.settings, purge), 0
        while True:
            async with transaction(self.sessions) as session:
                count = (await session.execute(statement, {"days": days})).rowcount  # type: ignore[attr-defined]
            removed += count
            activity.heartbeat(removed)
            if count < BATCH:
                if purge == Purge.RATE_LIMITS:
                    async with transaction(self.sessions) as session:
                        await session.execute(text("DELETE FROM rate_limit_counters WHERE expires_at < now()"))
                if removed:
                    activity.logger.info("retention: removed %d %s", removed, purge.value)
                return removed

    def all(self) -> list[object]:
        return [self.purge]
