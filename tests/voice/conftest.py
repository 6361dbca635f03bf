"""One whole platform per test module for the end-to-end modules (starting one, with its warm spare
OpenClaw, is most of such a test's time); each test brings its own user, number and agent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from core.models import User
from core.settings import Settings
from emulators.carrier.carrier import Carrier
from emulators.llm import ModelScript
from emulators.voice_agent import VoiceAgentServer
from tests.voice.platform import platform_settings, provisioned_user, spare_ready, start_platform


@dataclass
class SharedPlatform:
    settings: Settings
    carrier: Carrier
    agent: VoiceAgentServer


@pytest.fixture(scope="module")
async def shared_platform(database_url: str, temporal_env: WorkflowEnvironment, model_server: tuple[str, ModelScript],
                          tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SharedPlatform]:
    """The model stand-in answers scripted words as scripted and everything else as the demo model."""
    base_url, _ = model_server
    # Two warm spares: each test's user takes one, and the next test need not wait for a boot.
    settings = platform_settings(database_url=database_url, temporal_env=temporal_env, model_base_url=base_url,
                                 data_dir=tmp_path_factory.mktemp("platform") / "data", local_agent_spares=2)
    async with AsyncExitStack() as stack:
        carrier, agent = await start_platform(stack, settings)
        yield SharedPlatform(settings, carrier, agent)


@dataclass
class UserOnPlatform:
    settings: Settings
    carrier: Carrier
    agent: VoiceAgentServer  # with no sessions on record from earlier tests: a test reads only its own calls
    number: str
    user: User


@pytest.fixture
async def user_on_platform(shared_platform: SharedPlatform, temporal_env: WorkflowEnvironment,
                           sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[UserOnPlatform]:
    """A provisioned user of the module's platform (their agent removed after the test)."""
    shared_platform.agent.sessions.clear()
    await spare_ready(shared_platform.settings)  # a first wake within the test's own waits
    async with AsyncExitStack() as stack:
        user, number = await provisioned_user(stack, shared_platform.settings, sessions, temporal_env.client)
        yield UserOnPlatform(shared_platform.settings, shared_platform.carrier, shared_platform.agent, number, user)
