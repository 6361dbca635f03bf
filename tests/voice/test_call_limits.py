"""The bridge ends calls on its own (a caller silent for too long, the maximum call length) and
carries them on when their voice agent's socket drops."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from activities import adapters
from api.app import create_app as api_app
from core.models import PhoneNumber, User
from core.process import free_port
from core.serve import serving
from core.settings import Settings
from emulators.carrier.app import create_app as carrier_app
from emulators.carrier.handset import handset
from emulators.speech import SpeechRegistry
from emulators.standins import build_carrier
from emulators.voice_agent import VoiceAgentServer
from tests.conftest import unique_area_code
from voice.server import voice_serving
from api.routes.twilio import LINE_LOST
from voice.bridge import RECONNECT_APOLOGY, SILENT_GOODBYE, TIME_UP_GOODBYE


@asynccontextmanager
async def _line(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[tuple[str, str, VoiceAgentServer]]:
    """Carrier, voice agent, API and bridge, and a user's number; no agent is needed to say goodbye."""
    speech = SpeechRegistry()
    agent = VoiceAgentServer(registry=speech)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(serving(carrier_app(build_carrier(settings, speech)), "127.0.0.1", settings.carrier_port))
        await stack.enter_async_context(serving(agent.app(), "127.0.0.1", settings.voice_agent_port))
        await stack.enter_async_context(serving(api_app(settings), "127.0.0.1", settings.api_port))
        await stack.enter_async_context(voice_serving(settings))
        telephony = adapters.telephony(settings)
        [number] = await telephony.search_numbers(area_code=unique_area_code(), limit=1)
        owned = await telephony.buy_number(number, voice_url=f"{settings.api_base_url}/twilio/voice", sms_url="")
        await telephony.close()
        user = User(phone_e164=f"+1555{uuid.uuid4().int % 10**7:07d}", agent_name="Nova")
        async with sessions() as session, session.begin():
            session.add(user)
            await session.flush()
            session.add(PhoneNumber(e164=owned.e164, provider_sid=owned.sid, state="assigned", user_id=user.id))
        yield owned.e164, user.phone_e164, agent


def _settings(database_url: str, temporal_env: WorkflowEnvironment, tmp_path: Path, **limits: float) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path, database_url=database_url,
                    temporal_address=temporal_env.client.service_client.config.target_host,
                    api_port=free_port(), voice_port=free_port(), voice_media_port=free_port(), carrier_port=free_port(),
                    voice_agent_port=free_port(), **limits)


@pytest.mark.parametrize(("limits", "goodbye"), [
    ({"silent_caller_hangup_s": 3.0}, SILENT_GOODBYE),
    ({"max_call_s": 4.0}, TIME_UP_GOODBYE),
])
async def test_the_bridge_says_goodbye_and_hangs_up(
    database_url: str, temporal_env: WorkflowEnvironment, sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path, limits: dict[str, float], goodbye: str,
) -> None:
    settings = _settings(database_url, temporal_env, tmp_path, **limits)
    async with _line(settings, sessions) as (number, caller, agent):
        async with handset(settings.carrier_url, caller) as phone:
            call_sid = await phone.dial(number)
            ended = await phone.wait_for("call_state", lambda e: e["state"] == "completed", timeout=30)
            assert ended["call_sid"] == call_sid
        said = [e["content"] for e in agent.sessions[-1].events if e["type"] == "ConversationText"]
        assert goodbye in said, said


async def test_a_dropped_voice_agent_is_reopened_or_the_caller_hears_an_apology(
    database_url: str, temporal_env: WorkflowEnvironment, sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    """The voice agent's socket drops: the bridge opens another with the conversation so far and
    its apology for a greeting; when no other can be had, the call ends with the TwiML's apology."""
    settings = _settings(database_url, temporal_env, tmp_path)
    async with _line(settings, sessions) as (number, caller, agent):
        async with handset(settings.carrier_url, caller) as phone:
            call_sid = await phone.dial(number)
            await phone.wait_for("caption", lambda e: e["role"] == "agent" and "Hi, it's Nova" in e["text"], timeout=30)
            first = agent.sessions[-1]
            await first.drop()
            await phone.wait_for("caption", lambda e: e["role"] == "agent" and e["text"] == RECONNECT_APOLOGY,
                                 timeout=30)
            second = agent.sessions[-1]
            assert second is not first
            carried = second.settings["agent"]["context"]["messages"]
            assert {"type": "History", "role": "assistant", "content": "Hi, it's Nova. What can I do for you?"} in carried
            assert second.settings["agent"]["think"]["endpoint"]["url"].startswith(settings.voice_base_url)

            agent.refusing = True  # the service is gone: no third socket
            await second.drop()
            said = await phone.wait_for("say", lambda e: e["call_sid"] == call_sid, timeout=30)
            assert said["text"] == LINE_LOST
            ended = await phone.wait_for("call_state", lambda e: e["state"] == "completed", timeout=30)
            assert ended["call_sid"] == call_sid
        assert len(agent.sessions) == 2
