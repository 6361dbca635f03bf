"""Async database access (SQLAlchemy + asyncpg) and the embedded-PostgreSQL-friendly URL helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


# What a database that is down, restarting or unreachable raises (a connection refused, a connection
# lost mid-query): callers that can carry on without it for a while catch these.
DATABASE_DOWN: tuple[type[BaseException], ...] = (OSError, TimeoutError, OperationalError, InterfaceError)


def create_engine(database_url: str, **kwargs: object) -> AsyncEngine:
    return create_async_engine(database_url, pool_pre_ping=True, **kwargs)


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session whose work commits on success and rolls back on error."""
    async with factory() as session, session.begin():
        yield session


def database_name(database_url: str) -> str:
    return make_url(database_url).database or "postgres"

