"""Real infrastructure for tests, one of each per session: embedded PostgreSQL migrated to head,
Temporal's dev server and its time-skipping test server from the shipped binaries."""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.testing import WorkflowEnvironment

from core import composition
from activities.archive.stores import S3ArchiveStore
from activities.runtime.gateway import GatewayProcess
from activities.runtime.openclaw_config import ModelProvider, render_config
from activities.telephony.twilio import TwilioTelephony
from core.db import create_engine, sessionmaker
from core.migrate import upgrade_to_head
from core.models import PhoneNumber
from core.process import free_port
from core.serve import serving
from core.settings import Settings
from core.temporal import SEARCH_ATTRIBUTES, data_converter
from devstack.postgres import EmbeddedPostgres
from devstack.temporal import binary
from activities.runtime.tools import Tools
from devstack.tools import install
from emulators import llm
from emulators.carrier.app import create_app as create_carrier_app
from emulators.carrier.carrier import Carrier
from emulators.llm import ModelScript
from emulators.speech import SpeechRegistry
from emulators.standins import build_carrier
from tests import histories, parallel
from tests.spans import RecordedSpans, recorder
from workers.registry import WORKFLOWS

TEST_DATABASE = "deepclaw_test"

# As in every platform process (core.logs configures logging first), the root logger has a handler
# before any library runs, so a library's logging.basicConfig does nothing. The MCP SDK calls it
# whenever a server is made, with a Rich handler when rich is installed, and that handler's rendering
# of a failing activity's traceback stalled a later test.
if not logging.getLogger().handlers:
    logging.getLogger().addHandler(logging.NullHandler())
WORKFLOW_TYPES = [workflow.__name__ for workflow in WORKFLOWS]
# The platform's own converter (payloads encrypted under the development key, which every test's
# Settings derive too): test clients and the platform's clients read each other's payloads.
PLATFORM_CONVERTER = data_converter(Settings(_env_file=None))




@pytest.fixture(scope="session")
async def postgres(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EmbeddedPostgres]:
    root = tmp_path_factory.mktemp("postgres")
    server = EmbeddedPostgres(root / "data", free_port(), log_path=root / "postgres.log")
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="session")
async def database_url(postgres: EmbeddedPostgres) -> str:
    await postgres.ensure_database(TEST_DATABASE)
    url = postgres.url(TEST_DATABASE)
    await asyncio.to_thread(upgrade_to_head, url)
    return url


# Each test's local carrier starts afresh and sells the same numbers per area code; the database lives
# for the whole session. Tests that buy numbers take an area code no other test uses (415 is the
# carrier's default, left to tests that don't care).
_AREA_CODES = iter(random.Random().sample([a for a in range(201, 1000) if a != 415], 700))


def unique_area_code() -> str:
    return str(next(_AREA_CODES))


async def retire_available_numbers(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Numbers earlier tests left available were bought from carriers that are gone: no one may claim them."""
    async with sessions() as session, session.begin():
        await session.execute(update(PhoneNumber).where(PhoneNumber.state == "available").values(state="releasing"))


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(database_url)
    yield sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
def spans() -> Iterator[RecordedSpans]:
    """The spans finished during the test (OpenTelemetry's in-memory exporter)."""
    recorded = recorder()
    recorded.start()
    yield recorded
    recorded.stop()


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """A real Temporal dev server with the operators' search attributes."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(binary("temporal")),
        search_attributes=SEARCH_ATTRIBUTES,
        data_converter=PLATFORM_CONVERTER,
        dev_server_log_level="error",
    )
    yield env
    if histories.RECORD:
        await histories.record_missing(env.client, WORKFLOW_TYPES)
    await env.shutdown()


@pytest.fixture(scope="module")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """One per test module: skipping time fires every pending timer on the server, and workflows an
    earlier module left behind (their workers gone) would stall the skipping."""
    started = histories.StartedWorkflows()
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(binary("temporal-test-server")),
        data_converter=PLATFORM_CONVERTER, interceptors=[started] if histories.RECORD else [],
    )
    await env.client.operator_service.add_search_attributes(AddSearchAttributesRequest(
        namespace=env.client.namespace,
        search_attributes={key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for key in SEARCH_ATTRIBUTES},
    ))
    yield env
    if histories.RECORD:
        await histories.record_missing(env.client, WORKFLOW_TYPES, started)
    await env.shutdown()


@pytest.fixture
def settings(database_url: str, temporal_env: WorkflowEnvironment, tmp_path: Path) -> Settings:
    """Settings for in-process components against the session's real PostgreSQL and Temporal."""
    config = temporal_env.client.service_client.config
    return Settings(
        _env_file=None,
        data_dir=tmp_path / "data",
        database_url=database_url,
        temporal_address=config.target_host,
        temporal_task_queue=f"test-{free_port()}",
        worker_metrics_port=free_port(),
        worker_heartbeat_interval_s=0.5,
        worker_heartbeat_stale_s=3.0,
        local_agent_spares=0,  # no OpenClaw starts unless a test wakes an agent
        number_pool_target=0,  # tests that want the pool start it themselves
        quiet_hours="off",  # calls whatever the hour the suite runs at; tests of quiet hours set them
    )


@dataclass
class LocalCarrier:
    carrier: Carrier
    telephony: TwilioTelephony
    port: int

    def texts_to(self, number: str) -> list[str]:
        return [m.body for m in self.carrier.messages.values() if m.to == number]


@pytest.fixture
async def local_carrier() -> AsyncIterator[LocalCarrier]:
    """The Twilio stand-in in process, and the real Telephony adapter pointed at it."""
    port = free_port()
    settings = Settings(_env_file=None, carrier_port=port)
    carrier = build_carrier(settings, SpeechRegistry())  # with the hotline number, as `make run` has it
    async with serving(create_carrier_app(carrier), "127.0.0.1", port):
        client = composition.telephony(settings)
        yield LocalCarrier(carrier, client, port)
        await client.close()


@pytest.fixture
async def telephony(local_carrier: LocalCarrier) -> TwilioTelephony:
    return local_carrier.telephony


@pytest.fixture(scope="session")
def s3_emulator() -> Iterator[str]:
    """An S3-compatible server (moto) on loopback; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def s3_store(endpoint: str) -> S3ArchiveStore:
    """A store on a bucket of its own in the S3 emulator."""
    bucket = f"deepclaw-{secrets.token_hex(4)}"
    store = S3ArchiveStore(bucket=bucket, endpoint_url=endpoint, region="us-east-1", access_key="test", secret_key="test")
    store.client.create_bucket(Bucket=bucket)
    return store


@pytest.fixture(scope="session")
def tools() -> Tools:
    """The pinned Node + OpenClaw (`make test` installs them first; this is then instant)."""
    return install(Settings(_env_file=None).tools_dir)


@pytest.fixture(scope="session")
async def model_server() -> AsyncIterator[tuple[str, ModelScript]]:
    """The OpenAI-compatible model stand-in; yields its /v1 base URL and its script."""
    script = ModelScript()
    port = free_port()
    async with serving(llm.create_app(script), "127.0.0.1", port):
        yield f"http://127.0.0.1:{port}/v1", script


@pytest.fixture
def openclaw_gateway(_openclaw_gateway: GatewayProcess) -> Iterator[GatewayProcess]:
    """The session's real OpenClaw gateway, answering through the model stand-in: running for the
    test, paused (SIGSTOP) between its tests, where an idle gateway would use ~5% of a core."""
    assert _openclaw_gateway.child is not None
    _openclaw_gateway.child.resume()
    yield _openclaw_gateway
    _openclaw_gateway.child.pause()


@pytest.fixture(scope="session")
async def _openclaw_gateway(
    tools: Tools, model_server: tuple[str, ModelScript], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[GatewayProcess]:
    base_url, _ = model_server
    port = free_port()
    gateway = GatewayProcess(
        tools,
        tmp_path_factory.mktemp("openclaw-home"),
        port=port,
        token=secrets.token_urlsafe(24),
        config=render_config(port=port, bind="loopback", model=ModelProvider(base_url=base_url, api_key="local", model=llm.MODEL_ID)),
    )
    await gateway.start()
    await gateway.wait_ready()
    yield gateway
    await gateway.stop()


@pytest.hookimpl(trylast=True)  # after pytest's own reordering by fixture
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    parallel.collection_modifyitems(items)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    return parallel.make_scheduler(config, log)


def pytest_runtest_setup(item: pytest.Item) -> None:
    parallel.runtest_setup(item)
