"""One whole platform for the end-to-end modules, shared for the session (starting one, with its warm
spare OpenClaws, is most of such a test's time); a test brings its own user, number and agent, or
takes the session's shared user."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from activities.runtime.local import LocalAgentRuntime
from core import composition
from core.db import create_engine, sessionmaker
from core.models import User
from core.settings import Settings
from emulators.carrier.carrier import Carrier
from emulators.llm import ModelScript
from emulators.voice_agent import VoiceAgentServer
from tests.voice.platform import (
    own_number_pool,
    platform_settings,
    provisioned_user,
    remove_agent,
    spare_ready,
    start_platform,
)
from workflows.agent_lifecycle import Thresholds


# A deleted user's number goes back to the pool after this long (days in production): the dashboard
# test sees it come back.
NUMBER_QUARANTINE_S = 3.0
# Warm spares of the shared platform: each test's user takes one, and the next test need not wait for a boot.
SPARES = 2
# The fixtures that take a fresh agent (one each: a test's own user, or the caller a hotline test onboards).
FRESH_AGENT_FIXTURES = {"user_on_platform", "hotline_platform"}


@dataclass
class SharedPlatform:
    settings: Settings
    carrier: Carrier
    agent: VoiceAgentServer
    runtime: LocalAgentRuntime
    agents_to_take: int  # by the session's tests still to come: no spare is booted beyond that

    async def take_spare(self) -> None:
        """A warm agent is ready for the next wake (the test's first wake is within its own waits),
        and the spares kept are only what later tests will take (each boot is ~25 s of a core)."""
        await spare_ready(self.settings)
        self.agents_to_take -= 1
        self.runtime.spares.target = max(0, min(SPARES, self.agents_to_take))


def _agents_to_take(session: pytest.Session) -> int:
    uses = [set(getattr(item, "fixturenames", ())) for item in session.items]
    return sum(bool(FRESH_AGENT_FIXTURES & used) for used in uses) + any("shared_user" in used for used in uses)


@pytest.fixture(scope="session")
async def shared_platform(request: pytest.FixtureRequest, database_url: str, temporal_env: WorkflowEnvironment,
                          model_server: tuple[str, ModelScript],
                          tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SharedPlatform]:
    """The one platform of the end-to-end modules, for the session (starting one, with its warm
    spares, is most of such a module's time): as `make run` has it, with a number pool (the
    session's only one on this Temporal server) for the callers the hotline onboards. The model
    stand-in answers scripted words as scripted and everything else as the demo model."""
    base_url, _ = model_server
    engine = create_engine(database_url)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(engine.dispose)
        to_take = _agents_to_take(request.session)
        settings = platform_settings(
            database_url=database_url, temporal_env=temporal_env, model_base_url=base_url,
            data_dir=tmp_path_factory.mktemp("platform") / "data", local_agent_spares=min(SPARES, to_take),
            number_release_after_days=NUMBER_QUARANTINE_S / 86_400, number_pool_target=2,
            number_pool_area_codes=await own_number_pool(stack, sessionmaker(engine), temporal_env.client))
        runtime = composition.agent_runtime(settings, sessionmaker(engine))
        assert isinstance(runtime, LocalAgentRuntime)
        carrier, agent = await start_platform(stack, settings, runtime=runtime)
        yield SharedPlatform(settings, carrier, agent, runtime, to_take)


@pytest.fixture
async def hotline_platform(shared_platform: SharedPlatform, sessions: async_sessionmaker[AsyncSession],
                           temporal_env: WorkflowEnvironment) -> AsyncIterator[SharedPlatform]:
    """The shared platform, for a test that onboards callers through the hotline: the agents of the
    users it made are removed after it (each is an OpenClaw that would run on for the session)."""
    # A warm agent is ready, as `make run` prints its URLs only then: the caller's agent is woken
    # within the hotline's lines, not booted on their time.
    await shared_platform.take_spare()
    before = await _user_ids(sessions)
    yield shared_platform
    for user_id in await _user_ids(sessions) - before:
        await remove_agent(temporal_env.client, user_id)


async def _user_ids(sessions: async_sessionmaker[AsyncSession]) -> set[uuid.UUID]:
    async with sessions() as session:
        return set((await session.execute(select(User.id))).scalars())


@dataclass
class UserOnPlatform:
    settings: Settings
    carrier: Carrier
    agent: VoiceAgentServer  # with no sessions on record from earlier tests: a test reads only its own calls
    number: str
    user: User


@asynccontextmanager
async def _user_on(thresholds: Thresholds, platform: SharedPlatform,
                   temporal_env: WorkflowEnvironment, database_url: str) -> AsyncIterator[UserOnPlatform]:
    await platform.take_spare()
    engine = create_engine(database_url)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(engine.dispose)
        user, number = await provisioned_user(stack, platform.settings, sessionmaker(engine), temporal_env.client,
                                              thresholds=thresholds)
        yield UserOnPlatform(platform.settings, platform.carrier, platform.agent, number, user)


@pytest.fixture
async def user_on_platform(request: pytest.FixtureRequest, shared_platform: SharedPlatform,
                           temporal_env: WorkflowEnvironment, database_url: str) -> AsyncIterator[UserOnPlatform]:
    """A provisioned user of the shared platform, the test's own (their agent removed after it); a
    module's AGENT_THRESHOLDS set when their agent idles and sleeps."""
    shared_platform.agent.sessions.clear()
    async with _user_on(getattr(request.module, "AGENT_THRESHOLDS", Thresholds()), shared_platform, temporal_env,
                        database_url) as user:
        yield user


@pytest.fixture(scope="session")
async def _shared_user(shared_platform: SharedPlatform, temporal_env: WorkflowEnvironment,
                       database_url: str) -> AsyncIterator[UserOnPlatform]:
    async with _user_on(Thresholds(), shared_platform, temporal_env, database_url) as user:
        yield user


@pytest.fixture
def shared_user(_shared_user: UserOnPlatform) -> UserOnPlatform:
    """One user for every test that only needs someone with a number and an agent: each of those
    would otherwise take a warm OpenClaw and have another booted (~25 s of a core). Their calls open
    with whatever greeting the agent prepared last, and their agent remembers earlier tests; tests
    that look at a first call, or change the user (a PIN, a killed agent, opting out), take
    `user_on_platform`."""
    _shared_user.agent.sessions.clear()
    return _shared_user


# ---- browser tests: real headless Chromium (Debian's), screenshots kept with the test run -------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As root on a closed network: no sandbox, and none of Chromium's own background connections.
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required"]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert Path(CHROMIUM).exists(), "Debian's chromium is needed (make test installs it)"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where a test's screenshots go: its run's directory, or DEEPCLAW_SCREENSHOTS."""
    folder = Path(os.environ.get("DEEPCLAW_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def shots(page: Page, folder: Path, name: str) -> None:
    """The page at phone and desktop width (left at phone width)."""
    await page.set_viewport_size(PHONE)
    await page.screenshot(path=folder / f"dashboard-{name}-phone.png", full_page=True)
    await page.set_viewport_size(DESKTOP)
    await page.screenshot(path=folder / f"dashboard-{name}-desktop.png", full_page=True)
    await page.set_viewport_size(PHONE)
