"""Rate limits: the `limits` library's strategies over the platform's PostgreSQL.

Every API replica and worker shares one count, so a limit holds however the platform is scaled and
across restarts. `PostgresStorage` implements the library's storage interface (moving window and
fixed-window counters); each acquisition takes a transaction-scoped advisory lock on its key, so
concurrent hits are counted one at a time. `UserLimiter` applies per-user limits: what an agent
may send its user on its own (texts, calls), messages callers leave, wrong PINs; later limits
(inbound texts, sign-ins) reuse it.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from limits import RateLimitItem, parse_many
from limits.aio.storage import MovingWindowSupport, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db import transaction

log = logging.getLogger(__name__)

_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


class PostgresStorage(Storage, MovingWindowSupport):
    """`limits` storage in the tables rate_limit_hits (moving windows) and rate_limit_counters."""

    STORAGE_SCHEME = ["deepclaw+postgresql"]

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        super().__init__()
        self.sessions = sessions

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return SQLAlchemyError

    # ---- moving window --------------------------------------------------------------------

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        async with transaction(self.sessions) as session:
            await session.execute(_LOCK, {"key": key})
            await session.execute(text("DELETE FROM rate_limit_hits WHERE key = :key AND at <= now() - make_interval("
                                       "secs => :expiry)"), {"key": key, "expiry": expiry})
            used = (await session.execute(text("SELECT count(*) FROM rate_limit_hits WHERE key = :key"),
                                          {"key": key})).scalar_one()
            if used + amount > limit:
                return False
            await session.execute(text("INSERT INTO rate_limit_hits (key, at) SELECT :key, clock_timestamp() "
                                       "FROM generate_series(1, :amount)"), {"key": key, "amount": amount})
        return True

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        async with self.sessions() as session:
            oldest, count = (await session.execute(text(
                "SELECT extract(epoch FROM min(at)), count(*) FROM rate_limit_hits "
                "WHERE key = :key AND at > now() - make_interval(secs => :expiry)"),
                {"key": key, "expiry": expiry})).one()
        return (float(oldest) if oldest is not None else time.time()), int(count)

    # ---- fixed-window counters ------------------------------------------------------------

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        async with transaction(self.sessions) as session:
            return int((await session.execute(text(
                "INSERT INTO rate_limit_counters (key, count, expires_at) "
                "VALUES (:key, :amount, now() + make_interval(secs => :expiry)) "
                "ON CONFLICT (key) DO UPDATE SET "
                "count = CASE WHEN rate_limit_counters.expires_at <= now() THEN :amount "
                "ELSE rate_limit_counters.count + :amount END, "
                "expires_at = CASE WHEN rate_limit_counters.expires_at <= now() THEN excluded.expires_at "
                "ELSE rate_limit_counters.expires_at END RETURNING count"),
                {"key": key, "amount": amount, "expiry": expiry})).scalar_one())

    async def get(self, key: str) -> int:
        async with self.sessions() as session:
            count = (await session.execute(text(
                "SELECT count FROM rate_limit_counters WHERE key = :key AND expires_at > now()"),
                {"key": key})).scalar_one_or_none()
        return int(count or 0)

    async def get_expiry(self, key: str) -> float:
        async with self.sessions() as session:
            at = (await session.execute(text(
                "SELECT extract(epoch FROM expires_at) FROM rate_limit_counters WHERE key = :key"),
                {"key": key})).scalar_one_or_none()
        return float(at) if at is not None else time.time()

    async def check(self) -> bool:
        try:
            async with self.sessions() as session:
                await session.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return False
        return True

    async def reset(self) -> int | None:
        async with transaction(self.sessions) as session:
            hits = (await session.execute(text("DELETE FROM rate_limit_hits"))).rowcount  # type: ignore[attr-defined]
            counters = (await session.execute(text("DELETE FROM rate_limit_counters"))).rowcount  # type: ignore[attr-defined]
        return int(hits + counters)

    async def clear(self, key: str) -> None:
        async with transaction(self.sessions) as session:
            await session.execute(text("DELETE FROM rate_limit_hits WHERE key = :key"), {"key": key})
            await session.execute(text("DELETE FROM rate_limit_counters WHERE key = :key"), {"key": key})


class Limit(StrEnum):
    SMS = "sms"  # texts the agent sends its user
    CALL = "call"  # calls the agent places to its user
    MESSAGE = "message"  # messages callers leave for the user (voice/messages.py)
    WRONG_PIN = "wrong PIN"  # PINs said wrong on calls to the user's number
    INBOUND_TEXT = "inbound text"  # texts one sender sends to platform numbers (keyed by the sender)
    INBOUND_CALL = "inbound call"  # calls one caller places to platform numbers (keyed by the caller)
    OVER_LIMIT_NOTICE = "over-limit notice"  # the one polite reply a sender over a limit gets
    SIGN_IN_ADDRESS = "sign-in code"  # dashboard codes sent to one phone or email (keyed by its digest)
    SIGN_IN_CLIENT = "sign-in request"  # dashboard codes one client asks for (keyed by its IP address)


@dataclass(frozen=True)
class Refusal:
    """Why something was not allowed, in words the agent can pass on."""

    limit: str
    retry_at: datetime

    def __str__(self) -> str:
        return f"limit reached ({self.limit}); try again after {self.retry_at.isoformat(timespec='minutes')}"


class UserLimiter:
    """Per-user limits (what an agent sends its user on its own, messages callers leave, wrong PINs);
    every limit of a kind must allow it, checked from the shortest window up (a refusal by a later
    one costs the earlier ones a hit: never more is allowed than any limit allows)."""

    def __init__(self, storage: PostgresStorage, limits: dict[Limit, str]) -> None:
        self.strategy = MovingWindowRateLimiter(storage)
        self.limits = {kind: sorted(parse_many(spec), key=RateLimitItem.get_expiry) for kind, spec in limits.items()}

    async def allows(self, kind: Limit, user_id: uuid.UUID | str) -> bool:
        """Whether one more would be allowed now (nothing is counted)."""
        for item in self.limits.get(kind, []):
            if not await self.strategy.test(item, "per-user", kind.value, str(user_id)):
                return False
        return True

    async def acquire(self, kind: Limit, user_id: uuid.UUID | str) -> Refusal | None:
        """None if allowed (and counted); otherwise which limit refused, and when to try again.
        `user_id`: the user, or for inbound limits the sender's number."""
        for item in self.limits.get(kind, []):
            if not await self.strategy.hit(item, "per-user", kind.value, str(user_id)):
                stats = await self.strategy.get_window_stats(item, "per-user", kind.value, str(user_id))
                refusal = Refusal(limit=f"{item.amount} {kind.value} per {_window(item)}",
                                  retry_at=datetime.fromtimestamp(stats.reset_time, UTC))
                log.warning("%s: %s refused by the limit %s", user_id, kind.value, refusal.limit)
                return refusal
        return None


def _window(item: RateLimitItem) -> str:
    name = item.GRANULARITY.name
    return name if item.multiples == 1 else f"{item.multiples} {name}s"
