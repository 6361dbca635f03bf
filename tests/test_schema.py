"""The schema on a real PostgreSQL: migrations match the models, and the invariants hold in the database."""

import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import SQLModel

from core.db import create_engine, transaction
from core.models import AgentInstance, AgentPod, PhoneNumber, User


async def test_migrations_match_models(database_url: str) -> None:
    engine = create_engine(database_url)
    async with engine.connect() as conn:
        diff = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), SQLModel.metadata))
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
    await engine.dispose()
    assert diff == [], f"models and migrations disagree; add a migration: {diff}"
    assert version


def _user() -> User:
    return User(phone_e164=f"+1555{uuid.uuid4().int % 10**7:07d}")


def _number(**fields: object) -> PhoneNumber:
    suffix = f"{uuid.uuid4().int % 10**7:07d}"
    return PhoneNumber(e164=f"+1415{suffix}", provider_sid=f"PN{uuid.uuid4().hex}", **fields)


async def _insert(sessions: async_sessionmaker[AsyncSession], *rows: object) -> None:
    async with transaction(sessions) as session:
        for row in rows:
            session.add(row)
            await session.flush()


async def test_phone_is_unique_per_user(sessions: async_sessionmaker[AsyncSession]) -> None:
    first = _user()
    await _insert(sessions, first)
    with pytest.raises(IntegrityError, match="users_phone_e164"):
        await _insert(sessions, User(phone_e164=first.phone_e164))


async def test_one_agent_per_user(sessions: async_sessionmaker[AsyncSession]) -> None:
    user = _user()
    await _insert(sessions, user, AgentInstance(user_id=user.id, runtime="local"))
    with pytest.raises(IntegrityError, match="agent_instances_user_id"):
        await _insert(sessions, AgentInstance(user_id=user.id, runtime="local"))


async def test_a_number_belongs_to_at_most_one_user_and_a_user_has_one_number(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    alice, bob = _user(), _user()
    number = _number(state="assigned")
    await _insert(sessions, alice, bob)
    number.user_id = alice.id
    await _insert(sessions, number)
    # A second number for the same user is refused...
    with pytest.raises(IntegrityError, match="phone_numbers_user_id"):
        await _insert(sessions, _number(state="assigned", user_id=alice.id))
    # ...and the same number cannot be bought twice.
    with pytest.raises(IntegrityError, match="phone_numbers_e164"):
        await _insert(sessions, PhoneNumber(e164=number.e164, provider_sid="PNother", state="available"))


async def test_assigned_state_and_owner_go_together(sessions: async_sessionmaker[AsyncSession]) -> None:
    with pytest.raises(IntegrityError, match="ck_phone_numbers_assigned_has_user"):
        await _insert(sessions, _number(state="assigned"))
    user = _user()
    await _insert(sessions, user)
    with pytest.raises(IntegrityError, match="ck_phone_numbers_assigned_has_user"):
        await _insert(sessions, _number(state="available", user_id=user.id))


async def test_states_are_checked(sessions: async_sessionmaker[AsyncSession]) -> None:
    user = _user()
    await _insert(sessions, user)
    with pytest.raises(IntegrityError, match="ck_agent_instances_state"):
        await _insert(sessions, AgentInstance(user_id=user.id, runtime="local", state="dancing"))


async def test_a_warm_agent_pod_is_one_users_and_a_user_has_one_pod(sessions: async_sessionmaker[AsyncSession]) -> None:
    user = uuid.uuid4()
    name = lambda: f"agent-{uuid.uuid4().hex[:12]}"  # noqa: E731
    with pytest.raises(IntegrityError, match="ck_agent_pods_claimed_has_user"):
        await _insert(sessions, AgentPod(name=name(), pool="p", state="serving"))
    with pytest.raises(IntegrityError, match="ck_agent_pods_claimed_has_user"):
        await _insert(sessions, AgentPod(name=name(), pool="p", state="ready", user_id=user))
    await _insert(sessions, AgentPod(name=name(), pool="p", state="loading", user_id=user))
    with pytest.raises(IntegrityError, match="agent_pods_user_id"):
        await _insert(sessions, AgentPod(name=name(), pool="p", state="serving", user_id=user))
