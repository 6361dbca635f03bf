"""A stranger calls the setup hotline and, a few minutes later, talks to their own agent on their own
number. Real pieces end to end: simulated handset -> local carrier -> API webhook -> voice bridge ->
Deepgram-protocol voice agent -> hotline conductor -> OnboardingWorkflow (real Temporal) ->
ProvisionUserWorkflow -> AgentLifecycleWorkflow -> the user's real OpenClaw -> model stand-in."""

from __future__ import annotations

import base64
import re
import uuid

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from core.settings import Settings
from core.streams import seal_think_token
from core.tokens import TokenKind
from core.models import PhoneNumber, User
from emulators.carrier.carrier import Carrier
from emulators.carrier.handset import Handset, handset
from emulators.voice_agent import VoiceAgentServer
from tests.voice.platform import (
    email_code,
    history_text,
    agent_said,
    audio_done,
    next_session,
    prepared_greeting,
)
from tests.voice.conftest import SharedPlatform
from tests.log_scan import assert_nothing_secret, platform_logs
from tests.temporal_history import stored_text
from workflows import onboarding_lines as lines
from workflows.onboarding import OnboardingWorkflow, Step
from workflows.onboarding import workflow_id as onboarding_id


@pytest.fixture
def platform(hotline_platform: SharedPlatform) -> tuple[Settings, Carrier, VoiceAgentServer]:
    hotline_platform.agent.sessions.clear()  # this test's calls are the only ones on record
    return hotline_platform.settings, hotline_platform.carrier, hotline_platform.agent


async def _text(phone: Handset, containing: str, after: int = 0) -> str:
    event = await phone.wait_for("sms", lambda e: containing in e["body"], timeout=30, after=after)
    return str(event["body"])


async def _turn(agent: VoiceAgentServer, phone: Handset, said: str, expect: str) -> None:
    """Say something once everything the agent said has been spoken, and wait for its answer."""
    events = agent.sessions[-1].events
    await audio_done(agent, sum(e["type"] == "ConversationText" and e["role"] == "assistant" for e in events))
    await phone.say(said)
    await agent_said(agent, expect)


async def test_a_stranger_calls_the_hotline_and_gets_their_own_agent(
    platform: tuple, sessions: async_sessionmaker[AsyncSession], temporal_env: WorkflowEnvironment,
) -> None:
    settings, carrier, agent = platform
    with platform_logs() as logged:
        caller = f"+1555{uuid.uuid4().int % 10**7:07d}"
        # The conductor answers only hotline tokens: a forged one, or one for a user's call, is refused.
        user_token = seal_think_token(settings.keyring, TokenKind.THINK, uuid.uuid4(), call_sid="CAx", ttl_s=60,
                                      user=str(uuid.uuid4()))
        async with httpx.AsyncClient() as http:
            for token in ("forged.token", user_token):
                refused = await http.post(f"{settings.api_base_url}/hotline/{token}/v1/chat/completions",
                                          json={"messages": [{"role": "user", "content": "hi"}]})
                assert refused.status_code == 401
        address = f"jane.{uuid.uuid4().hex[:6]}@example.com"
        async with handset(settings.carrier_url, caller) as phone:
            await phone.dial(settings.hotline_number)
            await agent_said(agent, "Welcome to DeepClaw!")
            # The conductor's URL (Deepgram sees it) carries an opaque token: not the caller's number.
            token = agent.sessions[-1].settings["agent"]["think"]["endpoint"]["url"].split("/hotline/")[1].split("/")[0]
            opaque = token.encode() + base64.urlsafe_b64decode(token.split(".", 1)[1] + "==")
            assert caller[2:].encode() not in opaque and b"caller" not in opaque
            code = re.findall(r"\d{6}", await _text(phone, "Your DeepClaw code"))[0]
            await audio_done(agent, 1)
            await phone.dtmf(code + "#")  # keyed in: Twilio dtmf events, forwarded by the bridge
            await agent_said(agent, "your phone is verified")

            await _turn(agent, phone, address.replace(".", " dot ").replace("@", " at "), "Is that right?")
            await _turn(agent, phone, "yes", "I've emailed you a six-digit code")
            spoken_code = " ".join(await email_code(settings.api_base_url, address))
            await _turn(agent, phone, spoken_code, "Your email is verified")
            await _turn(agent, phone, "Luna", "Luna it is")
            await _turn(agent, phone, "formal please", "Formal, got it")
            await _turn(agent, phone, "call it Nova", "Nova, lovely")
            await audio_done(agent, sum(e["type"] == "ConversationText" and e["role"] == "assistant"
                                        for e in agent.sessions[-1].events))
            await phone.dtmf("2468#")  # the PIN, keyed in
            await agent_said(agent, "All set! Nova's number is")

            # The live call goes to the new agent, and the new number texts a welcome.
            await next_session(agent, 1, timeout=90)  # the hotline's was the first
            await agent_said(agent, "Hi, I'm Nova, your new assistant")
            welcome = await phone.wait_for("sms", lambda e: "Nova" in e["body"] and e["from"] != settings.hotline_number)
            number = welcome["from"]
            await _turn(agent, phone, "what is the weather like", "You said: what is the weather like")
            await _turn(agent, phone, "what did I say", "Earlier you said: what is the weather like")  # its memory
            await phone.hangup()
            await phone.wait_for("call_state", lambda e: e["state"] == "completed")

            user_id = await _check_user(settings, temporal_env, sessions, caller, address, number)
            await _nothing_personal_in_temporal(temporal_env.client, settings, user_id, caller, secrets=[
                caller, caller[1:], address, code, spoken_code.replace(" ", ""), "what is the weather like",
                "You said: what is the weather like", "2468#"])

            # The user calls their new number: their own OpenClaw answers, opening with the greeting it
            # wrote after the first call.
            greeting = await prepared_greeting(sessions, user_id)
            mark, known = len(phone.events), len(agent.sessions)
            await phone.dial(number)
            await next_session(agent, known)
            await agent_said(agent, greeting[:40])
            await _turn(agent, phone, "hello again", "You said: hello again")
            await phone.hangup()
            await phone.wait_for("call_state", lambda e: e["state"] == "completed", after=mark)

            # Calling the hotline again: told their number, not started over.
            mark = len(phone.events)
            await phone.dial(settings.hotline_number)
            said = await phone.wait_for("say", after=mark)
            assert said["text"] == lines.already_registered(number)
    # Production's log lines (INFO) of everything above: no code, token, full number or email.
    assert_nothing_secret(logged, [caller, caller[1:], number, number[1:], address, code,
                                   spoken_code.replace(" ", ""), token, "2468#"])


async def _nothing_personal_in_temporal(client: Client, settings: Settings, user_id: uuid.UUID, caller: str,
                                       secrets: list[str]) -> None:
    """What Temporal's database and UI hold of every workflow the call ran: no code, email, number
    or word the caller said, only ciphertext (and the search attributes operators search by)."""
    ids = [onboarding_id(settings.keyring, caller)]
    ids += [w.id async for w in client.list_workflows(f'UserId="{user_id}"')]
    assert {i.split("-")[0] for i in ids} >= {"onboarding", "provision", "agent"}, ids
    for workflow_id in ids:
        assert caller[2:] not in workflow_id
        stored = await stored_text(client, workflow_id)
        assert "binary/encrypted" in stored or base64.b64encode(b"binary/encrypted").decode() in stored
        for secret in secrets:
            assert secret not in stored, f"{secret!r} is readable in the history of {workflow_id}"


async def _check_user(settings: Settings, temporal_env: WorkflowEnvironment, sessions: async_sessionmaker[AsyncSession],
                      caller: str, address: str, number: str) -> uuid.UUID:
    onboarding = temporal_env.client.get_workflow_handle(onboarding_id(settings.keyring, caller))
    status = await onboarding.query(OnboardingWorkflow.current_step)
    assert status == Step.DONE
    # The hand-off went as the "All set" line finished playing (the bridge heard Twilio's mark), not on
    # the onboarding's estimate of how long the line takes to say.
    signals = [e.workflow_execution_signaled_event_attributes.signal_name async for e in onboarding.fetch_history_events()
               if e.HasField("workflow_execution_signaled_event_attributes")]
    assert signals == ["line_played"], signals
    async with sessions() as session:
        user = (await session.execute(select(User).where(User.phone_e164 == caller))).scalar_one()
        owned = (await session.execute(select(PhoneNumber).where(PhoneNumber.user_id == user.id))).scalar_one()
    assert owned.e164 == number and user.email == address and user.email_verified and user.phone_verified
    assert (user.agent_name, user.voice, user.personality) == ("Nova", "aura-2-luna-en", "formal")
    assert user.pin_digest and "2468" not in user.pin_digest
    history = history_text(await onboarding.fetch_history(), settings)
    # The PIN as a number of its own (event ids like 1052468 may contain its digits).
    assert not re.search(r"(?<![0-9])2468(?![0-9])", history) and user.pin_digest.split(":")[1] in history, \
        "only the PIN's digest is in history"
    return user.id
