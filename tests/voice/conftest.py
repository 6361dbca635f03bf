"""One whole platform for the end-to-end modules, shared for the session by the modules with the same
settings (starting one, with its warm spare OpenClaws, is most of such a test's time); each test
brings its own user, number and agent."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright
from temporalio.testing import WorkflowEnvironment

from core.db import create_engine, sessionmaker
from core.models import User
from core.settings import Settings
from emulators.carrier.carrier import Carrier
from emulators.llm import ModelScript
from emulators.voice_agent import VoiceAgentServer
from tests.voice.platform import (
    own_number_pool,
    platform_settings,
    platform_settings_for,
    provisioned_user,
    spare_ready,
    start_platform,
)
from workflows.agent_lifecycle import Thresholds


# A deleted user's number goes back to the pool after this long (days in production): the dashboard
# test sees it come back.
NUMBER_QUARANTINE_S = 3.0


@dataclass
class SharedPlatform:
    settings: Settings
    carrier: Carrier
    agent: VoiceAgentServer


@pytest.fixture(scope="session")
async def shared_platform(database_url: str, temporal_env: WorkflowEnvironment, model_server: tuple[str, ModelScript],
                          tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SharedPlatform]:
    """The platform of the end-to-end modules that bring their own users, for the session (starting
    one, with its warm spares, is most of such a module's time). The model stand-in answers scripted
    words as scripted and everything else as the demo model."""
    base_url, _ = model_server
    # Two warm spares: each test's user takes one, and the next test need not wait for a boot.
    settings = platform_settings(database_url=database_url, temporal_env=temporal_env, model_base_url=base_url,
                                 data_dir=tmp_path_factory.mktemp("platform") / "data", local_agent_spares=2,
                                 number_release_after_days=NUMBER_QUARANTINE_S / 86_400)
    async with AsyncExitStack() as stack:
        carrier, agent = await start_platform(stack, settings)
        yield SharedPlatform(settings, carrier, agent)


@pytest.fixture(scope="session")
async def hotline_platform(database_url: str, temporal_env: WorkflowEnvironment,
                           tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SharedPlatform]:
    """The platform as `make run` has it, for the modules that onboard a caller: a number pool (the
    session's only one on this Temporal server) and its own demo model. One for the session: each
    start costs a warm OpenClaw booted and the pool filled."""
    engine = create_engine(database_url)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(engine.dispose)
        settings = platform_settings_for(
            database_url=database_url, data_dir=tmp_path_factory.mktemp("hotline") / "data",
            temporal_address=temporal_env.client.service_client.config.target_host, number_pool_target=2,
            number_pool_area_codes=await own_number_pool(stack, sessionmaker(engine), temporal_env.client))
        carrier, agent = await start_platform(stack, settings)
        yield SharedPlatform(settings, carrier, agent)


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
    await spare_ready(platform.settings)  # a first wake within the test's own waits
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
