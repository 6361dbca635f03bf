"""A call to a user's number, end to end on real pieces: handset -> local carrier -> API webhook ->
voice bridge -> Deepgram-protocol voice agent -> LLM proxy -> AgentLifecycleWorkflow (real Temporal)
-> the user's real OpenClaw -> model stand-in, and the transcript in real PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
import uuid
from typing import Any

import httpx
import pytest
from opentelemetry.trace import SpanKind
import websockets
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from core import composition
from core.callers import set_pin
from core.recall import recall_note
from core.db import create_engine, sessionmaker
from core.streams import STREAM_GRACE_S, issue_ticket, seal_think_token
from core.tokens import TokenKind
from core.models import Conversation, Message, UsageRecord
from emulators.carrier.carrier import Carrier
from emulators.carrier.handset import Handset, handset
from devstack.faults import kill_listener
from emulators.llm import ModelScript, ScriptedReply
from voice.proxy import UNREACHABLE
from tests.spans import RecordedSpans, text_of
from tests.voice.conftest import UserOnPlatform
from tests.log_scan import assert_nothing_secret, platform_logs
from tests.voice.platform import (
    agent_said,
    audio_done,
    history_text,
    prepared_greeting,
    signed_upgrade,
)
from workflows.agent_lifecycle import AgentLifecycleWorkflow, workflow_id


def _caller() -> str:
    return f"+1555{uuid.uuid4().int % 10**7:07d}"
LONG_STORY = "Once upon a time " + "there was a very patient assistant who kept on talking, " * 8 + "the end."


Platform = UserOnPlatform


@pytest.fixture
def platform(user_on_platform: UserOnPlatform) -> UserOnPlatform:
    """The test's own user: tests of a first call, or that change the user. The rest share `shared_user`."""
    return user_on_platform


async def test_a_call_is_answered_by_the_users_own_openclaw(
    platform: Platform, model_server: tuple[str, ModelScript], sessions: async_sessionmaker[AsyncSession],
    temporal_env: WorkflowEnvironment,
) -> None:
    with platform_logs() as logged:
        base_url, script = model_server
        async with httpx.AsyncClient() as http:
            await http.post(base_url[:-3] + "/control/replies", json={"match": "long story", "reply": LONG_STORY})
        async with handset(platform.settings.carrier_url, platform.user.phone_e164) as phone:
            call_sid = await phone.dial(platform.number)
            await agent_said(platform.agent, "Hi, it's Nova")
            await audio_done(platform.agent, 1)
            heard_greeting = len(phone.heard)

            await phone.say("what is the weather like")
            await agent_said(platform.agent, "You said: what is the weather like")
            await phone.say("what did I say")
            await agent_said(platform.agent, "Earlier you said: what is the weather like")
            assert len(phone.heard) > heard_greeting, "the answers reached the caller's ear"

            # The agent uses the platform's MCP server (rendered into its config): a reminder by text.
            async with httpx.AsyncClient() as http:
                await http.post(base_url[:-3] + "/control/replies", json={"match": "remind me", "tool_call": {
                    "name": "tool_call", "arguments": {"id": "deepclaw__schedule_reminder",
                                                       "args": {"text": "water the plants", "in_minutes": 0.02}}}})
            await phone.say("remind me to water the plants")
            reminder = await phone.wait_for("sms", lambda e: "water the plants" in e["body"], timeout=60)
            # Phrased by the agent ("Hi! Here's your reminder: …") or, if it was not ready in time, plain.
            assert "reminder: water the plants" in reminder["body"].lower() and reminder["from"] == platform.number

            # And searches the web with no key or account (DuckDuckGo's page shape, from the stand-in).
            async with httpx.AsyncClient() as http:
                await http.post(base_url[:-3] + "/control/replies", json={"match": "look up temporal", "tool_call": {
                    "name": "tool_call", "arguments": {"id": "deepclaw__web_search",
                                                       "args": {"query": "temporal durable execution", "count": 3}}}})
            await phone.say("look up temporal for me")
            await agent_said(platform.agent, "The top result is Temporal — durable execution")
            async with httpx.AsyncClient() as http:
                asked = (await http.get(f"http://127.0.0.1:{platform.settings.search_port}/control/queries")).json()
            assert asked == ["temporal durable execution"]
            assert any("https://temporal.io/" in str(m.get("content")) for r in script.requests for m in r["messages"]
                       if m.get("role") == "tool"), "the search results reached the model"

            # Barge-in: interrupt a long answer; the bridge tells the carrier to drop queued audio.
            await phone.say("tell me a long story")
            await agent_said(platform.agent, "Once upon a time")
            await asyncio.sleep(1.0)
            stream = platform.carrier.calls[call_sid].stream
            assert stream is not None
            await phone.say("stop")
            for _ in range(100):
                if stream.clears:
                    break
                await asyncio.sleep(0.1)
            assert stream.clears >= 1, "UserStartedSpeaking became a Twilio clear"
            await phone.hangup()
            await phone.wait_for("call_state", lambda e: e["state"] == "completed")

        for _ in range(50):  # the bridge records the end as the stream closes
            async with sessions() as session:
                conversation = (await session.execute(
                    select(Conversation).where(Conversation.provider_sid == call_sid))).scalar_one_or_none()
            if conversation is not None and conversation.ended_at is not None:
                break
            await asyncio.sleep(0.2)
        assert conversation is not None and conversation.user_id == platform.user.id
        assert conversation.duration_s and conversation.duration_s > 1
        assert conversation.latency and conversation.latency["turns"], "latency figures from AgentStartedSpeaking"
        async with sessions() as session:
            turns = (await session.execute(select(Message.role, Message.content)
                                           .where(Message.conversation_id == conversation.id)
                                           .order_by(Message.created_at))).all()
            usage = (await session.execute(select(UsageRecord).where(UsageRecord.conversation_id == conversation.id))).scalar_one()
        assert ("user", "what is the weather like") in turns
        assert any(role == "agent" and "Earlier you said" in content for role, content in turns)
        # Billed per started second, by direction, once per call.
        assert usage.kind == "call_seconds_in" and usage.quantity == math.ceil(conversation.duration_s or 0) > 1
        assert usage.source == f"call:{conversation.provider_sid}"

        # After the call the agent wrote its greeting for the next one; the next call opens with it.
        greeting = await prepared_greeting(sessions, platform.user.id)
        assert greeting.startswith("You said: The user will call you again later")
        async with handset(platform.settings.carrier_url, platform.user.phone_e164) as phone:
            await phone.dial(platform.number)
            await agent_said(platform.agent, greeting[:40])
            await phone.hangup()

        # The gateway's token is derived from the platform secret: the agent's history never holds it.
        handle = temporal_env.client.get_workflow_handle(workflow_id(platform.user.id))
        endpoint = await handle.execute_update(AgentLifecycleWorkflow.ensure_awake)
        history = history_text(await handle.fetch_history(), platform.settings)
        assert endpoint.base_url in history, "the history was read, payloads included"
        assert endpoint.token(platform.settings.keyring) not in history
        think_token = platform.agent.sessions[-1].settings["agent"]["think"]["endpoint"]["url"].split("/llm/")[1]
    # Production's log lines (INFO) of the calls: no token, full number or email.
    assert_nothing_secret(logged, [platform.user.phone_e164, platform.user.phone_e164[1:], platform.number,
                                   platform.number[1:], endpoint.token(platform.settings.keyring),
                                   think_token.split("/")[0]])


async def test_a_think_url_says_nothing_and_dies_with_its_call(shared_user: Platform) -> None:
    platform = shared_user
    settings = platform.settings
    question = {"messages": [{"role": "user", "content": "are you there"}]}
    async with handset(settings.carrier_url, platform.user.phone_e164) as phone:
        await phone.dial(platform.number)
        await audio_done(platform.agent, 1)
        think_url = platform.agent.sessions[-1].settings["agent"]["think"]["endpoint"]["url"]
        token = think_url.split("/llm/", 1)[1].split("/", 1)[0]
        opaque = token.encode() + base64.urlsafe_b64decode(token.split(".", 1)[1] + "==")
        for secret in (platform.user.phone_e164, platform.user.phone_e164[1:], str(platform.user.id), "user"):
            assert secret.encode() not in opaque, f"the think token shows {secret!r}"
        async with httpx.AsyncClient(timeout=60) as http:
            answered = await http.post(think_url, json=question)
            assert answered.status_code == 200 and "You said: are you there" in answered.text
            # A token of another kind (a hotline call's) is refused with 401, not a server error.
            hotline = seal_think_token(settings.keyring, TokenKind.HOTLINE, uuid.uuid4(), call_sid="CAx", ttl_s=60,
                                       caller=platform.user.phone_e164)
            wrong = await http.post(f"{settings.voice_base_url}/llm/{hotline}/v1/chat/completions", json=question)
            assert wrong.status_code == 401
        await phone.hangup()
        await phone.wait_for("call_state", lambda e: e["state"] == "completed")
    hung_up = asyncio.get_running_loop().time()
    async with httpx.AsyncClient(timeout=60) as http:
        while (status := (await http.post(think_url, json=question)).status_code) == 200:
            # A deadline, not a timing: each accepted turn is a whole agent turn, slow on a busy machine.
            assert asyncio.get_running_loop().time() - hung_up < STREAM_GRACE_S + 60, "the think URL outlived its call"
            await asyncio.sleep(0.5)
    assert status == 401


async def test_keypad_digits_reach_the_agent_and_goodbye_hangs_up(
    shared_user: Platform, model_server: tuple[str, ModelScript],
) -> None:
    platform = shared_user
    base_url, _ = model_server
    async with httpx.AsyncClient() as http:
        await http.post(base_url[:-3] + "/control/replies",
                        json={"match": "goodbye", "reply": "It was lovely talking to you. Bye! [END_CALL]"})
    async with handset(platform.settings.carrier_url, platform.user.phone_e164) as phone:
        call_sid = await phone.dial(platform.number)
        await audio_done(platform.agent, 1)
        await phone.dtmf("42#")
        await agent_said(platform.agent, "You said: 42")
        await phone.say("ok goodbye")
        farewell = await agent_said(platform.agent, "It was lovely talking to you. Bye!")
        assert "[END_CALL]" not in farewell["content"], "the marker is never spoken"
        ended = await phone.wait_for("call_state", lambda e: e["state"] == "completed", timeout=30)
        assert ended["call_sid"] == call_sid, "the platform hung up after the farewell"
    kinds = [e["type"] for e in platform.agent.sessions[-1].events]
    assert "FunctionCallRequest" in kinds


def caption(role: str, text: str) -> Any:
    return lambda e: e["role"] == role and text in e["text"]


async def asked(phone: Handset, words: str, answer: str, timeout: float = 60) -> None:
    """The caller says `words` and hears `answer` (in the handset's captions)."""
    mark = len(phone.events)
    await phone.say(words)
    await phone.wait_for("caption", caption("caller", words), after=mark)  # what the caller typed
    try:
        await phone.wait_for("caption", caption("agent", answer), after=mark, timeout=timeout)
    except TimeoutError:
        said = [(e["role"], e["text"]) for e in phone.events if e["type"] == "caption"]
        raise AssertionError(f"no caption {answer!r}; the timeline: {said[-6:]}") from None


async def test_the_demo_model_shows_every_tool_and_the_handset_gets_captions(shared_user: Platform) -> None:
    """No scripting: the local demo model turns plain words into the platform's real tools, through
    the user's real OpenClaw; the handset's timeline shows both sides as the voice agent spoke them."""
    platform = shared_user

    async with handset(platform.settings.carrier_url, platform.user.phone_e164) as phone:
        call_sid = await phone.dial(platform.number)
        # Its greeting: "Hi, it's Nova", or the one the agent prepared after its last call.
        greeting = await phone.wait_for("caption", lambda e: e["role"] == "agent", timeout=60)
        assert greeting["party"] == platform.number and greeting["call_sid"] == call_sid

        async def ask(words: str, answer: str, timeout: float = 60) -> None:
            await asked(phone, words, answer, timeout)

        await ask("remember my locker code is 4471", "Got it, I'll remember that your locker code is 4471.",
                  timeout=180)  # the first turn wakes the agent (a cold gateway on a fresh machine)
        await ask("what is my locker code?", "You told me your locker code is 4471.")
        await ask("text me pineapple", "Done, I've texted you.")
        texted = await phone.wait_for("sms", lambda e: e["body"] == "pineapple", timeout=30)
        assert texted["from"] == platform.number
        await ask("remind me in 3 seconds to stretch", "Okay, I'll text you in 3 seconds: stretch.")
        await phone.wait_for("sms", lambda e: "reminder: stretch" in e["body"].lower(), timeout=60)
        await ask("search the web for temporal", "The top result is Temporal — durable execution")
        await ask("what are my reminders?", "You have no reminders.")
        await ask("tell me a joke", "I'm the local demo model; connect a real model to talk freely.")
        mark = len(phone.events)
        await phone.dtmf("7")
        await phone.wait_for("caption", caption("keypad", "7"), after=mark)
        await ask("call me back in 10 seconds", "Okay, I'll call you in 10 seconds")  # after this call
        await ask("goodbye", "Goodbye!")
        await phone.wait_for("call_state", lambda e: e["call_sid"] == call_sid and e["state"] == "completed", timeout=30)
        callback = await phone.wait_for("incoming_call", lambda e: e["call_sid"] != call_sid, timeout=60)
        assert callback["from"] == platform.number, "the call-back comes from the agent's number"
        await phone.answer(callback["call_sid"])
        await phone.wait_for("caption", lambda e: e["call_sid"] == callback["call_sid"] and e["role"] == "agent",
                             timeout=60)
        await phone.hangup()


async def test_bad_requests_are_refused_without_harm(shared_user: Platform) -> None:
    platform = shared_user
    settings = platform.settings
    async with httpx.AsyncClient() as http:
        unsigned = await http.post(f"{settings.api_base_url}/twilio/voice", data={"To": platform.number, "CallSid": "CAx"})
        assert unsigned.status_code == 403
        oversized = await http.post(f"{settings.api_base_url}/twilio/voice", content=b"Body=" + b"x" * 70_000,
                                    headers={"content-type": "application/x-www-form-urlencoded"})
        assert oversized.status_code == 413, "a webhook body is capped before its signature is even checked"
        bad_llm = await http.post(f"{settings.voice_base_url}/llm/not-a-token/v1/chat/completions",
                                  json={"messages": [{"role": "user", "content": "hi"}]})
        assert bad_llm.status_code == 401
    async with handset(settings.carrier_url, "+15550108888") as phone:
        await phone.dial("+15550009999")  # nobody's number
        said = await phone.wait_for("say")
        assert "not in service" in said["text"]

    # The upgrade itself must be signed as Twilio signs it: refused before any voice-agent session opens.
    sessions_before = len(platform.agent.sessions)
    for headers in ({}, {"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"}):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(settings.media_stream_url, additional_headers=headers)
        assert refused.value.response.status_code == 403

    async def stream(ticket: str, call_sid: str = "CAreplay") -> Any:
        ws = await websockets.connect(settings.media_stream_url, additional_headers=signed_upgrade(settings))
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await ws.send(json.dumps({"event": "start", "streamSid": "MZ1", "start": {
            "streamSid": "MZ1", "callSid": call_sid, "customParameters": {"ticket": ticket}}}))
        return ws

    async def refused(ws: Any) -> None:
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)

    await refused(await stream("forged-ticket"))
    assert len(platform.agent.sessions) == sessions_before, "no voice-agent session for a refused stream"
    engine = create_engine(settings.database_url)
    ticket = await issue_ticket(sessionmaker(engine), call_sid="CAreplay", user_id=platform.user.id, params={})
    await engine.dispose()
    await refused(await stream(ticket, call_sid="CAother"))  # a ticket is for its own call only
    first = await stream(ticket)
    greeting = json.loads(await asyncio.wait_for(first.recv(), 30))  # connected: the greeting plays
    assert greeting["event"] == "media" and greeting["streamSid"] == "MZ1"
    await refused(await stream(ticket))  # once
    await first.send("{not json")  # malformed messages are skipped, the call goes on
    await first.send("[1, 2]")
    await first.send(b"\x00\x01 binary")  # Twilio sends text frames only
    await first.send(json.dumps({"event": "media", "media": {"payload": "***"}}))
    await first.send(json.dumps({"event": "media", "media": {}}))
    still = json.loads(await asyncio.wait_for(first.recv(), 10))
    assert still["event"] == "media"
    await first.close()


async def test_a_call_the_platform_places_uses_the_bridge_with_its_purpose(shared_user: Platform) -> None:
    platform = shared_user
    from core.callbacks import agent_call_url
    from voice.agent_settings import SPEECH_RULES

    settings = platform.settings
    telephony = composition.telephony(settings)
    try:
        async with handset(settings.carrier_url, platform.user.phone_e164, auto_answer=True) as phone:
            url = agent_call_url(settings, user_id=platform.user.id,
                                 greeting="Hi, it's Nova with your reminder: call the dentist.",
                                 purpose="the reminder 'call the dentist' is due")
            call_sid = await telephony.place_call(to=phone.number, from_=platform.number, url=url)
            await agent_said(platform.agent, "your reminder: call the dentist")
            session = platform.agent.sessions[-1]
            prompt = session.settings["agent"]["think"]["prompt"]
            # The purpose is added to the call's rules (short spoken answers, the farewell and hang-up), not instead.
            assert prompt.startswith(SPEECH_RULES) and "call the dentist" in prompt
            await audio_done(platform.agent, 1)
            for _ in range(100):  # the carrier plays it out in real time
                if len(phone.heard) > 8000:
                    break
                await asyncio.sleep(0.1)
            assert len(phone.heard) > 8000, "the reminder was spoken to the phone"
            await telephony.hang_up(call_sid)
            await phone.wait_for("call_state", lambda e: e["state"] == "completed")
    finally:
        await telephony.close()


async def _messages_to(carrier: Carrier, number: str, containing: str, timeout: float = 30) -> list[str]:
    for _ in range(int(timeout * 10)):
        if found := [m.body for m in carrier.messages.values() if m.to == number and containing in m.body]:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"no text to {number} containing {containing!r}")


async def test_only_the_owner_reaches_their_agent(platform: Platform, model_server: tuple[str, ModelScript],
                                                  sessions: async_sessionmaker[AsyncSession]) -> None:
    """Anyone else who calls the user's number can leave a message (texted to the user) and reaches nothing
    of theirs; a caller showing the owner's number without full attestation must say the PIN first."""
    _, script = model_server
    settings, owner = platform.settings, platform.user.phone_e164
    stranger = _caller()
    async with handset(settings.carrier_url, stranger) as phone:
        call_sid = await phone.dial(platform.number)
        await agent_said(platform.agent, "I can take a message")
        await audio_done(platform.agent, 1)
        await phone.say("please call me back about the car")
        await agent_said(platform.agent, "I've passed that on")
        await phone.wait_for("call_state", lambda e: e["state"] == "completed", timeout=30)
    [message] = await _messages_to(platform.carrier, owner, "about the car")
    assert message == f"Message from {stranger}: please call me back about the car"
    # The platform is shared with other tests' agents: what matters is that these words reached no model.
    assert not [r for r in script.requests if "about the car" in json.dumps(r["messages"])], \
        "the agent was never asked anything"
    note = await recall_note(sessions, platform.user.id)
    assert note is None or "about the car" not in note["content"], "a stranger's words are not the user's memory"
    async with sessions() as session:
        stranger_call = (await session.execute(select(Conversation).where(Conversation.provider_sid == call_sid))
                         ).scalar_one()
    assert stranger_call.caller_attestation == "TN-Validation-Passed-A"  # attested, but not the owner

    # The owner's number shown by another phone (spoofed: no attestation), and no PIN set: a message only.
    async with handset(settings.carrier_url, _caller()) as phone:
        await phone.dial(platform.number, caller_id=owner)
        await agent_said(platform.agent, "I can take a message")
        await phone.hangup()

    engine = create_engine(settings.database_url)
    await set_pin(sessionmaker(engine), settings.keyring, platform.user.id, "2468")
    await engine.dispose()
    async with handset(settings.carrier_url, _caller()) as phone:
        call_sid = await phone.dial(platform.number, caller_id=owner)
        await agent_said(platform.agent, "please say or key in your PIN")
        await audio_done(platform.agent, 1)
        await phone.say("one three five seven")
        await agent_said(platform.agent, "That PIN isn't right")
        assert not any("one three five seven" in str(r) or "1357" in str(r) for r in script.requests), \
            "nothing the caller says reaches the agent before the PIN"
        await audio_done(platform.agent, 2)
        await phone.dtmf("2468#")
        await agent_said(platform.agent, "Thanks, that's you")
        await audio_done(platform.agent, 3)
        await phone.say("what is the weather like")
        await agent_said(platform.agent, "You said: what is the weather like")
        await phone.hangup()
    async with sessions() as session:
        pin_call = (await session.execute(select(Conversation).where(Conversation.provider_sid == call_sid))
                    ).scalar_one()
    assert pin_call.caller_attestation == "No-TN-Validation"


async def test_an_agent_killed_mid_answer_is_apologised_for_and_the_call_goes_on(
    platform: Platform, model_server: tuple[str, ModelScript], temporal_env: WorkflowEnvironment,
) -> None:
    """The user's OpenClaw dies (SIGKILL) while it works on an answer: the caller hears an apology,
    the answer comes by text once the agent is back, and the call goes on with a fresh gateway."""
    _, script = model_server
    script.replies.append(ScriptedReply(re.compile("count the stars"), "There are too many stars to count.",
                                        delay_s=30))
    async with handset(platform.settings.carrier_url, platform.user.phone_e164) as phone:
        call_sid = await phone.dial(platform.number)
        await phone.wait_for("caption", caption("agent", "Hi, it's Nova"), timeout=60)
        await asked(phone, "remember my locker code is 4471", "Got it", timeout=180)  # the agent is awake
        endpoint = await temporal_env.client.get_workflow_handle(workflow_id(platform.user.id)).execute_update(
            AgentLifecycleWorkflow.ensure_awake)
        mark = len(phone.events)
        await phone.say("count the stars")
        await _model_asked(script, "count the stars")  # the agent is working on it
        kill_listener(httpx.URL(endpoint.base_url).port)
        await phone.wait_for("caption", caption("agent", UNREACHABLE), after=mark, timeout=30)
        texted = await phone.wait_for("sms", lambda e: e["from"] == platform.number, timeout=120)
        assert texted["body"].strip(), "the unanswered question is answered by text"
        await asked(phone, "tell me a joke", "I'm the local demo model", timeout=120)  # on a fresh gateway
        await asked(phone, "goodbye", "Goodbye!")
        await phone.wait_for("call_state", lambda e: e["call_sid"] == call_sid and e["state"] == "completed", timeout=30)
    assert not [e for e in phone.events if e["type"] == "say"], "the call never fell back to the TwiML's apology"
    fresh = await temporal_env.client.get_workflow_handle(workflow_id(platform.user.id)).execute_update(
        AgentLifecycleWorkflow.ensure_awake)
    assert fresh.base_url != endpoint.base_url


async def _model_asked(script: ModelScript, words: str, timeout: float = 30) -> None:
    for _ in range(int(timeout * 10)):
        if any(words in json.dumps(r["messages"]) for r in script.requests):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the model was never asked {words!r}")


async def test_one_trace_follows_a_call_from_the_webhook_to_openclaw(
    shared_user: Platform, spans: RecordedSpans, temporal_env: WorkflowEnvironment,
) -> None:
    """Twilio's webhook, the bridge's call, the think request Deepgram makes and the request to the
    user's OpenClaw are one trace (the context rides the stream's parameters and the think URL), and
    no span shows a token."""
    platform = shared_user
    async with handset(platform.settings.carrier_url, platform.user.phone_e164) as phone:
        call_sid = await phone.dial(platform.number)
        await phone.wait_for("caption", lambda e: e["role"] == "agent", timeout=60)  # its greeting
        await asked(phone, "remember my bike is blue", "Got it", timeout=180)
        await phone.hangup()
    endpoint = await temporal_env.client.get_workflow_handle(workflow_id(platform.user.id)).execute_update(
        AgentLifecycleWorkflow.ensure_awake)
    # This call's span (it ends with the call); other calls of the shared platform may end meanwhile.
    call = await spans.wait_for(lambda s: s.name == "call" and (s.attributes or {}).get("deepclaw.call.sid") == call_sid)
    trace = [s for s in spans.get_finished_spans() if s.context.trace_id == call.context.trace_id]
    webhooks = [s for s in trace if s.kind == SpanKind.SERVER and s.name == "POST /twilio/voice"]
    assert webhooks, f"the bridge's call continues the webhook's trace: {[s.name for s in trace]}"
    think = [s for s in trace if s.kind == SpanKind.SERVER and "/llm/" in text_of(s)]
    assert think, "the think request Deepgram made is in the call's trace"
    token = re.compile(r"/(llm|hotline|message)/(?!<token>)[A-Za-z0-9._~%=-]{8,}")
    assert not [text_of(s) for s in spans.get_finished_spans() if token.search(text_of(s))], "no span shows a token"
    to_openclaw = [s for s in trace if s.kind == SpanKind.CLIENT and f"{endpoint.base_url}/v1/chat/completions" in text_of(s)]
    assert to_openclaw, f"the request to the user's OpenClaw is in the trace: {[text_of(s)[:120] for s in trace]}"
    assert any(s.name.startswith(("StartWorkflowUpdate", "HandleUpdate")) for s in trace), "the wake went through Temporal"
    async with httpx.AsyncClient() as http:  # the worker's /metrics: the SDK's and the workflows' own
        scraped = (await http.get(f"http://127.0.0.1:{platform.settings.worker_metrics_port}/metrics")).text
        health = await http.get(f"http://127.0.0.1:{platform.settings.worker_metrics_port}/healthz")
    assert health.status_code == 200 and health.json() == {"state": "up"}, "Kubernetes' probes see it polling"
    assert "temporal_workflow_completed_total" in scraped or "temporal_request_total" in scraped
    wakes = [line for line in scraped.splitlines() if line.startswith("deepclaw_agent_wake_seconds_count{")]
    assert wakes and all('from_state="' in line for line in wakes), scraped[-2000:]
