"""The whole platform in one test process, on real pieces: local carrier, Deepgram-protocol voice
agent, API, voice bridge and a worker with the local agent runtime (real OpenClaw), against the
session's real PostgreSQL and Temporal dev server."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from core import composition
from api.app import create_app as api_app
from core.process import free_port
from core.serve import serving
from core.models import PhoneNumber, User
from core.ports import AgentRuntime, AgentSpec
from core.settings import Settings
from emulators import llm, providers, search
from emulators.carrier import twiml
from emulators.carrier.app import create_app as carrier_app
from emulators.carrier.carrier import Carrier
from emulators.speech import SpeechRegistry
from emulators.standins import build_carrier, softphone_routes
from emulators.voice_agent import VoiceAgentServer
from tests.conftest import retire_available_numbers, unique_area_code
from tests.temporal_history import decoded_text
from voice.server import voice_serving
from workers.main import run_worker
from workflows.agent_lifecycle import AgentLifecycleInput, AgentLifecycleWorkflow, LifecycleState, Thresholds
from workflows.agent_lifecycle import workflow_id as lifecycle_id
from workflows.number_pool import WORKFLOW_ID as POOL_ID

log = logging.getLogger(__name__)


def platform_settings(*, database_url: str, temporal_env: WorkflowEnvironment, model_base_url: str, data_dir: Path,
                      **overrides: Any) -> Settings:
    return platform_settings_for(database_url=database_url, data_dir=data_dir, model_base_url=model_base_url,
                                 temporal_address=temporal_env.client.service_client.config.target_host, **overrides)


def platform_settings_for(*, database_url: str, temporal_address: str, data_dir: Path,
                          model_base_url: str | None = None, **overrides: Any) -> Settings:
    """Every port free; no model URL: start_platform serves the model stand-in too."""
    ports = {name: free_port() for name in ("api", "voice", "media", "carrier", "agent", "search", "llm", "providers",
                                                 "metrics")}
    return Settings(
        _env_file=None, data_dir=data_dir, database_url=database_url, temporal_address=temporal_address,
        temporal_task_queue=f"e2e-{uuid.uuid4().hex[:6]}", api_port=ports["api"], voice_port=ports["voice"],
        voice_media_port=ports["media"], worker_metrics_port=ports["metrics"],
        carrier_port=ports["carrier"], voice_agent_port=ports["agent"], search_port=ports["search"],
        llm_port=ports["llm"], providers_port=ports["providers"], llm_base_url=model_base_url,
        worker_heartbeat_interval_s=1, **{"number_pool_target": 0, "local_agent_spares": 1, "quiet_hours": "off",
                                             "call_ring_timeout_s": 5, **overrides})


async def start_platform(stack: AsyncExitStack, settings: Settings, *,
                         wait_for_spare: bool = False, provider_standins: providers.Providers | None = None,
                         runtime: AgentRuntime | None = None) -> tuple[Carrier, VoiceAgentServer]:
    """Serves every process of the platform until `stack` closes; returns the carrier and the voice agent.
    `wait_for_spare`: return once a warm agent is ready, as `make run` does; `runtime`: the worker's
    agent runtime, if the caller keeps a hand on it (else the configured one)."""
    speech = SpeechRegistry()
    carrier = build_carrier(settings, speech)
    agent = VoiceAgentServer(registry=speech)
    stop = asyncio.Event()
    if settings.llm_base_url is None:
        await stack.enter_async_context(serving(llm.create_app(), "127.0.0.1", settings.llm_port))
    await stack.enter_async_context(serving(carrier_app(carrier, extra_routes=softphone_routes(settings)),
                                                 "127.0.0.1", settings.carrier_port))
    await stack.enter_async_context(serving(agent.app(), "127.0.0.1", settings.voice_agent_port))
    await stack.enter_async_context(serving(search.create_app(), "127.0.0.1", settings.search_port))
    await stack.enter_async_context(serving(providers.create_app(
        provider_standins or providers.Providers(settings.api_base_url)), "127.0.0.1", settings.providers_port))
    await stack.enter_async_context(serving(api_app(settings), "127.0.0.1", settings.api_port))
    await stack.enter_async_context(voice_serving(settings))
    worker = asyncio.create_task(run_worker(settings, stop, runtime=runtime))
    stack.push_async_callback(asyncio.wait_for, worker, 60)
    stack.callback(stop.set)
    await hotline_pointed_at_platform(carrier, settings)
    if wait_for_spare:
        await spare_ready(settings)
    return carrier, agent


async def provisioned_user(stack: AsyncExitStack, settings: Settings, sessions: async_sessionmaker[AsyncSession],
                           client: Client, *, agent_name: str = "Nova",
                           thresholds: Thresholds | None = None) -> tuple[User, str]:
    """A user as provisioning leaves them: a number bought on the carrier and assigned, and their agent's
    workflow (ended with `stack`). Returns the user and their number."""
    telephony = composition.telephony(settings)
    [number] = await telephony.search_numbers(area_code=unique_area_code(), limit=1)
    owned = await telephony.buy_number(number, voice_url=f"{settings.api_base_url}/twilio/voice",
                                       sms_url=f"{settings.api_base_url}/twilio/sms")
    await telephony.close()
    user = User(phone_e164=f"+1555{uuid.uuid4().int % 10**7:07d}", agent_name=agent_name, phone_verified=True)
    async with sessions() as session, session.begin():
        session.add(user)
        await session.flush()
        session.add(PhoneNumber(e164=owned.e164, provider_sid=owned.sid, state="assigned", user_id=user.id))
    await client.start_workflow(
        AgentLifecycleWorkflow.run,
        AgentLifecycleInput(spec=AgentSpec(user_id=user.id, agent_name=agent_name), user_phone=user.phone_e164,
                            agent_number=owned.e164, thresholds=thresholds or Thresholds()),
        id=lifecycle_id(user.id), task_queue=settings.temporal_task_queue)
    stack.push_async_callback(remove_agent, client, user.id)
    return user, owned.e164


async def remove_agent(client: Client, user_id: uuid.UUID) -> None:
    """The agent deleted (its gateway stopped) as the user's removal does it, so a shared platform
    does not keep one OpenClaw per finished test. Not waited for: the next test starts meanwhile."""
    try:
        await client.get_workflow_handle(lifecycle_id(user_id)).signal(AgentLifecycleWorkflow.remove)
    except RPCError as error:  # it had ended
        log.info("the agent of %s was gone already: %s", user_id, error)


async def own_number_pool(stack: AsyncExitStack, sessions: async_sessionmaker[AsyncSession],
                          client: Client) -> list[str]:
    """Area codes for a test that runs the number pool: numbers earlier tests left available (bought
    from carriers that are gone) are retired, the area code is the test's own, and the singleton pool
    workflow ends with the test, so the next test's worker starts its own."""
    await retire_available_numbers(sessions)
    stack.push_async_callback(_end_pool, client)
    return [unique_area_code()]


async def _end_pool(client: Client) -> None:
    try:
        await client.get_workflow_handle(POOL_ID).terminate()
    except RPCError:
        pass  # it had ended


async def spare_ready(settings: Settings, timeout: float = 180) -> None:
    async with httpx.AsyncClient(timeout=5) as http:
        for _ in range(int(timeout * 5)):
            response = await http.get(f"{settings.api_base_url}/healthz")
            if response.status_code == 200 and response.json()["components"]["worker"]["agent_pool"]["state"] == "ready":
                return
            await asyncio.sleep(0.2)
    raise AssertionError("no warm agent became ready")


async def hotline_pointed_at_platform(carrier: Carrier, settings: Settings, timeout: float = 30) -> None:
    """The worker, as it starts, points the hotline's webhooks at the API (HotlineSetupWorkflow)."""
    for _ in range(int(timeout * 10)):
        hotline = next(n for n in carrier.numbers.owned.values() if n.phone_number == settings.hotline_number)
        if hotline.voice_url == f"{settings.api_base_url}/twilio/voice":
            assert hotline.sms_url == f"{settings.api_base_url}/twilio/sms"
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the worker never pointed the hotline's webhooks at the platform")


async def email_code(api_base_url: str, address: str, timeout: float = 20) -> str:
    """The newest DeepClaw code mailed to `address`, read from the local mailer's outbox."""
    async with httpx.AsyncClient() as http:
        for _ in range(int(timeout * 10)):
            page = await http.get(f"{api_base_url}/dev/outbox", params={"to": address})
            if found := re.findall(r"Your DeepClaw code: (\d{6})", page.text):
                return found[0]
            await asyncio.sleep(0.1)
    raise AssertionError(f"no email code reached {address}")


def history_text(history: Any, settings: Settings) -> str:
    """A workflow's history as text, its payloads decrypted and decoded (as an operator reads it)."""
    return decoded_text(history.to_json(), settings)


def signed_upgrade(settings: Settings) -> dict[str, str]:
    """The header Twilio puts on a Media Stream's upgrade request (the carrier does the same)."""
    return {"X-Twilio-Signature": twiml.signature(settings.twilio_auth_token.get_secret_value(),
                                                  settings.media_stream_url, {})}


async def agent_said(agent: VoiceAgentServer, text: str, timeout: float = 60) -> dict[str, Any]:
    """The newest voice-agent session's assistant turn containing `text`."""
    for _ in range(int(timeout * 10)):
        for event in agent.sessions[-1].events if agent.sessions else []:
            if event["type"] == "ConversationText" and event["role"] == "assistant" and text in event["content"]:
                return event
        await asyncio.sleep(0.1)
    # What was said, and any warning or error the voice agent reported (a failed think request, say).
    said = [e for e in agent.sessions[-1].events
            if e["type"] in ("ConversationText", "Warning", "Error")] if agent.sessions else []
    raise AssertionError(f"agent never said {text!r}; conversation: {said}")


async def prepared_greeting(sessions: async_sessionmaker[AsyncSession], user_id: uuid.UUID,
                            timeout: float = 60) -> str:
    """The greeting the agent wrote, after a call, for the user's next call."""
    for _ in range(int(timeout * 5)):
        async with sessions() as session:
            user = await session.get(User, user_id)
            greeting = user.next_greeting if user else None
        if greeting:
            return greeting
        await asyncio.sleep(0.2)
    raise AssertionError("the agent never wrote a greeting for the next call")


async def audio_done(agent: VoiceAgentServer, count: int, timeout: float = 60) -> None:
    for _ in range(int(timeout * 10)):
        if agent.sessions and sum(e["type"] == "AgentAudioDone" for e in agent.sessions[-1].events) >= count:
            return
        await asyncio.sleep(0.1)
    kinds = [e["type"] for e in agent.sessions[-1].events] if agent.sessions else []
    raise AssertionError(f"agent audio never finished ({len(agent.sessions)} sessions; newest: {kinds})")


async def next_session(agent: VoiceAgentServer, known: int, timeout: float = 60) -> None:
    """Wait until the voice agent has more than `known` sessions (a new call reached it)."""
    for _ in range(int(timeout * 10)):
        if len(agent.sessions) > known:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("no new voice-agent session")


async def wait_state(handle: WorkflowHandle[Any, Any], state: LifecycleState, timeout: float = 120) -> None:
    """Until an agent's lifecycle workflow is in `state` (it fails loudly after `timeout`)."""
    deadline = time.monotonic() + timeout
    while (now := await handle.query(AgentLifecycleWorkflow.current_state)) != state:
        if time.monotonic() > deadline:
            raise TimeoutError(f"agent never reached {state} (still {now})")
        await asyncio.sleep(0.1)
