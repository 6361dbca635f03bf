"""The bridge ends calls on its own (a caller silent for too long, the maximum call length) and
carries them on when their voice agent's socket drops."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from core import composition
from api.app import create_app as api_app
from core.models import PhoneNumber, User
from core.process import free_port
from core.serve import serving
from core.settings import Settings
from emulators.carrier.app import create_app as carrier_app
from emulators.carrier.handset import handset
from emulators.speech import SpeechRegistry
from emulators.standins import build_carrier
from emulators.voice_agent import AgentSession, VoiceAgentServer
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
        telephony = composition.telephony(settings)
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


async def test_a_caller_listening_to_a_long_answer_is_not_silent(
    database_url: str, temporal_env: WorkflowEnvironment, sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The caller's silence counts from the end of the agent's words: an answer that takes longer
    to say than the silence limit is heard whole, and the goodbye comes only after it."""
    async def long_answer(self: AgentSession) -> str:
        return " ".join(["Here is a long answer, told slowly so that it takes a while to say."] * 4)

    monkeypatch.setattr(AgentSession, "think", long_answer)  # the stand-in's model step: no agent needed
    settings = _settings(database_url, temporal_env, tmp_path, silent_caller_hangup_s=2.0)
    async with _line(settings, sessions) as (number, caller, agent):
        async with handset(settings.carrier_url, caller) as phone:
            await phone.dial(number)
            await phone.wait_for("caption", lambda e: e["role"] == "agent" and "Hi, it's Nova" in e["text"], timeout=30)
            await phone.say("tell me something long")
            await phone.wait_for("call_state", lambda e: e["state"] == "completed", timeout=60)
        sent = agent.sessions[-1].events
        kinds = [e["type"] if e["type"] != "ConversationText" else e["content"][:20] for e in sent]
        answer = next(i for i, e in enumerate(sent) if e["type"] == "ConversationText" and "long answer" in e["content"])
        goodbye = next(i for i, e in enumerate(sent) if e["type"] == "ConversationText" and e["content"] == SILENT_GOODBYE)
        assert "AgentAudioDone" in [e["type"] for e in sent[answer:goodbye]], kinds
        assert not any(e["type"] == "Warning" for e in sent), kinds  # no goodbye pushed in while it spoke


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


def _samples(exposition: str) -> dict[str, float]:
    """name{labels} -> value of every sample (labels sorted, as Prometheus shows them)."""
    found = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return found


async def test_metrics_count_the_call_and_its_frames_latency(
    database_url: str, temporal_env: WorkflowEnvironment, sessions: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> None:
    """/metrics during a call: the bridge counts it and has observed its frames' added latency; only
    a bearer of the metrics token may scrape."""
    settings = _settings(database_url, temporal_env, tmp_path, metrics_token="scrape-me")
    bridge_metrics = f"{settings.voice_base_url}/metrics"
    async with _line(settings, sessions) as (number, caller, agent), httpx.AsyncClient() as http:
        assert (await http.get(bridge_metrics)).status_code == 403
        assert (await http.get(f"{settings.api_base_url}/metrics")).status_code == 403
        async with handset(settings.carrier_url, caller) as phone:
            await phone.dial(number)
            await phone.wait_for("caption", lambda e: e["role"] == "agent" and "Hi, it's Nova" in e["text"], timeout=30)
            scraped = await http.get(bridge_metrics, headers={"Authorization": "Bearer scrape-me"})
            assert scraped.status_code == 200
            during = _samples(scraped.text)
            assert during["deepclaw_active_calls"] >= 1
            assert during["deepclaw_frame_added_seconds_count"] > 0, "the greeting's frames were timed"
            assert 0 < during["deepclaw_frame_added_seconds_sum"] / during["deepclaw_frame_added_seconds_count"] < 0.01
            await phone.hangup()
        before = _samples((await http.get(f"{settings.api_base_url}/metrics",
                                          headers={"Authorization": "Bearer scrape-me"})).text)
        forged = await http.post(f"{settings.api_base_url}/twilio/voice", data={"CallSid": "CA1", "From": caller},
                                 headers={"X-Twilio-Signature": "forged"})
        assert forged.status_code == 403
        after = _samples((await http.get(f"{settings.api_base_url}/metrics",
                                         headers={"Authorization": "Bearer scrape-me"})).text)
        rejected = 'deepclaw_webhook_rejections_total{reason="bad_signature"}'
        assert after[rejected] == before.get(rejected, 0) + 1
