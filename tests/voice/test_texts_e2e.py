"""Texting a user's number, end to end on real pieces: handset -> local carrier -> POST /twilio/sms ->
SmsConversationWorkflow (real Temporal) -> the user's real OpenClaw (local demo model) -> the answer
texted back from the user's number, with its delivery status; and one memory across texts and calls."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest
from opentelemetry.trace import SpanKind
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from api.routes.twilio import HOTLINE_TEXT, TEXT_PASSED_ON
from core.callbacks import mcp_token, media_link
from core.models import Conversation, Delivery, Message, Reminder, UsageRecord, User, utcnow
from emulators.carrier.handset import Handset, handset
from workflows.sms_conversation import workflow_id as sms_workflow_id
from tests.spans import RecordedSpans, text_of
from tests.temporal_history import stored_text
from tests.voice.conftest import UserOnPlatform
from tests.voice.platform import agent_said


Texting = UserOnPlatform


@pytest.fixture
def texting(user_on_platform: UserOnPlatform) -> UserOnPlatform:
    """The test's own user: tests that count what the user has, or opt them out."""
    return user_on_platform


@pytest.fixture
def someone(shared_user: UserOnPlatform) -> UserOnPlatform:
    """The user other tests share too (each would otherwise cost an OpenClaw boot)."""
    return shared_user


async def _reply(phone: Handset, containing: str, *, after: int = 0, timeout: float = 120) -> dict[str, Any]:
    return await phone.wait_for("sms", lambda e: containing in e["body"], timeout=timeout, after=after)


async def test_the_owner_texts_their_agent_and_it_remembers_across_texts_and_calls(
    texting: Texting, sessions: async_sessionmaker[AsyncSession], temporal_env: WorkflowEnvironment,
    spans: RecordedSpans,
) -> None:
    async with handset(texting.settings.carrier_url, texting.user.phone_e164) as phone:
        await phone.text(texting.number, "remember my locker code is 4471")
        answer = await _reply(phone, "I'll remember that your locker code is 4471")
        assert answer["from"] == texting.number
        # One trace: the webhook, the conversation's workflow and its activity, the agent's answer.
        webhook = await spans.wait_for(lambda s: s.kind == SpanKind.SERVER and "/twilio/sms" in text_of(s))
        trace = [s for s in spans.get_finished_spans() if s.context.trace_id == webhook.context.trace_id]
        assert any(s.name == "RunActivity:ask_agent" for s in trace), sorted({s.name for s in trace})
        assert any(s.kind == SpanKind.CLIENT and "/v1/chat/completions" in text_of(s) for s in trace), \
            "the request to the user's OpenClaw is in the text's trace"

        # Twilio retries the webhook (same MessageSid): taken once, so no second answer. The next text's
        # answer comes after the retry would have been answered (one conversation, in order).
        first = next(entry for entry in texting.carrier.webhook_log
                     if entry["url"].endswith("/twilio/sms") and entry["params"]["Body"].startswith("remember my"))
        retried = await texting.carrier.post_webhook(first["url"], first["params"])
        assert retried.status_code == 200 and "<Message" not in retried.text
        mark = len(phone.events)
        await phone.text(texting.number, "what did I tell you about my locker code")
        assert "You told me your locker code is 4471" in (await _reply(phone, "locker code", after=mark))["body"]
        assert len([t for t in phone.texts() if "I'll remember that your locker code" in t["body"]]) == 1

        # What was texted can be asked about on a call, and what was said on a call by text.
        await phone.dial(texting.number)
        await agent_said(texting.agent, "Hi, it's Nova")
        await phone.say("what is my locker code")
        await agent_said(texting.agent, "You told me your locker code is 4471")
        await phone.say("remember my gate code is 2580")
        await agent_said(texting.agent, "your gate code is 2580")
        await phone.hangup()
        await phone.wait_for("call_state", lambda e: e["state"] == "completed")
        mark = len(phone.events)
        await phone.text(texting.number, "what is my gate code")
        assert "You told me your gate code is 2580" in (await _reply(phone, "gate code", after=mark))["body"]

    # The texts are the user's day of texts, each answer's delivery recorded from Twilio's callbacks.
    query = (select(Message.role, Message.content, Message.status)
             .join(Conversation, Message.conversation_id == Conversation.id)
             .where(Conversation.user_id == texting.user.id, Conversation.kind == "sms").order_by(Message.created_at))
    async with sessions() as session:
        rows = (await session.execute(query)).all()
    for _ in range(100):  # the last answer can reach the phone before its text is marked answered
        if [(role, status) for role, _, status in rows if role == "user"] == [("user", "answered")] * 3:
            break
        await asyncio.sleep(0.1)
        async with sessions() as session:
            rows = (await session.execute(query)).all()
    assert [(role, status) for role, _, status in rows if role == "user"] == [("user", "answered")] * 3
    answers = [content for role, content, _ in rows if role == "agent" and not content.startswith("Working on it")]
    assert len(answers) == 3, rows
    assert len(rows) - 6 <= 1, "at most the first text (its agent asleep) got a 'working on it' first"
    for _ in range(100):  # the last callback may still be on its way
        async with sessions() as session:
            statuses = (await session.execute(
                select(Message.status).join(Conversation, Message.conversation_id == Conversation.id)
                .where(Conversation.user_id == texting.user.id, Message.role == "agent",
                       Conversation.kind == "sms"))).scalars().all()
        if set(statuses) == {"delivered"}:
            break
        await asyncio.sleep(0.1)
    assert set(statuses) == {"delivered"}, statuses
    # Usage, recorded as the texts came and went: one record per text (the retried webhook counted
    # once), each a segment, keyed by its MessageSid; the call by its CallSid.
    async with sessions() as session:
        usage = (await session.execute(select(UsageRecord.kind, UsageRecord.quantity, UsageRecord.source).where(
            UsageRecord.user_id == texting.user.id))).all()
    texts_in = [u for u in usage if u.kind == "sms_segments_in"]
    texts_out = [u for u in usage if u.kind == "sms_segments_out"]
    assert len(texts_in) == 3 and len(texts_out) == len(rows) - 3 and all(u.quantity == 1 for u in texts_in + texts_out)
    assert all(u.source.startswith("sms:SM") for u in texts_in + texts_out)
    assert [u.kind for u in usage if u.source.startswith("call:")] == ["call_seconds_in"]
    # The tokens of every answer OpenClaw reported them for: each text's, and the call's turns.
    tokens_out = [u for u in usage if u.kind == "model_tokens_out"]
    assert len(tokens_out) >= 3 + 2 and all(u.quantity > 0 for u in tokens_out)
    assert len({u.source for u in tokens_out}) == len(tokens_out)
    assert any(u.kind == "model_tokens_in" and u.quantity > 0 for u in usage)
    # What Temporal stores of the conversation: ciphertext, never a body or the owner's number.
    stored = await stored_text(temporal_env.client, sms_workflow_id(texting.user.id))
    for secret in ("locker code", "4471", "gate code", "2580", texting.user.phone_e164):
        assert secret not in stored, f"{secret!r} is readable in the SMS conversation's history"


async def test_strangers_leave_a_message_and_the_hotline_says_to_call(someone: Texting) -> None:
    stranger = f"+1555{uuid.uuid4().int % 10**7:07d}"
    async with handset(someone.settings.carrier_url, someone.user.phone_e164) as owner, \
            handset(someone.settings.carrier_url, stranger) as phone:
        await phone.text(someone.number, "hi, it's Sam from the book club")
        assert (await _reply(phone, "passed"))["body"] == TEXT_PASSED_ON
        passed_on = await _reply(owner, "book club")
        assert passed_on["body"] == f"Text from {stranger}: hi, it's Sam from the book club"
        assert passed_on["from"] == someone.number, "from the user's own number; no agent was asked"
        await phone.text(someone.settings.hotline_number, "hello?")
        assert (await _reply(phone, "setup line"))["body"] == HOTLINE_TEXT


async def test_an_mms_attachment_reaches_the_agent_as_a_link_it_fetches(
    someone: Texting, sessions: async_sessionmaker[AsyncSession],
) -> None:
    settings = someone.settings
    async with handset(settings.carrier_url, someone.user.phone_e164) as phone:
        await phone.text(someone.number, "what does this say?", media=[("text/plain", b"locker 4471, top row")])
        # The carrier serves media only with the account's credentials: the agent got the
        # platform's link, and the platform fetched the attachment for it.
        answer = await _reply(phone, "The attachment says")
        assert "locker 4471, top row" in answer["body"], answer

        # A MediaUrl that is not an attachment on the provider's account is dropped, never fetched.
        sms_url = f"{settings.api_base_url}/twilio/sms"
        forged = {"MessageSid": "MM" + uuid.uuid4().hex, "AccountSid": settings.twilio_account_sid,
                  "From": someone.user.phone_e164, "To": someone.number, "Body": "and this one?", "NumMedia": "1",
                  "MediaUrl0": "http://169.254.169.254/latest/meta-data/", "MediaContentType0": "text/plain"}
        mark = len(phone.events)
        assert (await someone.carrier.post_webhook(sms_url, forged)).status_code == 200
        await _reply(phone, "You said: and this one?", after=mark)

    async with sessions() as session:
        media = dict((await session.execute(
            select(Message.content, Message.media).join(Conversation, Message.conversation_id == Conversation.id)
            .where(Conversation.user_id == someone.user.id, Message.role == "user"))).all())
    assert media["and this one?"] is None, "the foreign URL was not recorded"
    [provider_url] = media["what does this say?"]
    assert provider_url.startswith(settings.carrier_url + "/2010-04-01/Accounts/")

    # The link itself: a forged or other kind of token is refused, and a link never fetches
    # from anywhere but the provider's account.
    async with httpx.AsyncClient(base_url=settings.api_base_url) as http:
        assert (await http.get("/media/not-a-token")).status_code == 401
        mcp = mcp_token(settings, someone.user.id, 0)
        assert (await http.get(f"/media/{mcp}")).status_code == 401
        good = media_link(settings, someone.user.id, provider_url).removeprefix(settings.api_base_url)
        fetched = await http.get(good)
        assert fetched.status_code == 200 and fetched.content == b"locker 4471, top row"
        assert "sandbox" in fetched.headers["content-security-policy"]
        stray = media_link(settings, someone.user.id, "http://169.254.169.254/latest/meta-data/")
        assert (await http.get(stray.removeprefix(settings.api_base_url))).status_code == 404


async def _opted_out(sessions: async_sessionmaker[AsyncSession], user_id: uuid.UUID, expected: bool) -> None:
    for _ in range(100):
        async with sessions() as session:
            user = await session.get(User, user_id)
        if user is not None and (user.sms_opted_out_at is not None) == expected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"opted out never became {expected}")


async def test_stop_silences_the_platform_until_start(texting: Texting,
                                                      sessions: async_sessionmaker[AsyncSession]) -> None:
    async with handset(texting.settings.carrier_url, texting.user.phone_e164) as phone:
        await phone.text(texting.number, "remind me in 10 seconds to stretch")
        await _reply(phone, "I'll text you in 10 seconds: stretch")
        await phone.text(texting.number, "STOP")
        await _reply(phone, "You have successfully been unsubscribed")  # the carrier's own, as Twilio's
        await _opted_out(sessions, texting.user.id, True)
        for _ in range(300):  # the reminder comes due and is not sent
            async with sessions() as session:
                states = (await session.execute(select(Reminder.state).where(
                    Reminder.user_id == texting.user.id))).scalars().all()
            if states == ["failed"]:
                break
            await asyncio.sleep(0.1)
        assert states == ["failed"], states
        assert not [t for t in phone.texts() if "reminder: stretch" in t["body"].lower()]

        # On a call the agent is told why it cannot text.
        await phone.dial(texting.number)
        await agent_said(texting.agent, "Hi, it's Nova")
        await phone.say("text me hello")
        await agent_said(texting.agent, "I couldn't text you: not sent: your user opted out")
        await phone.hangup()
        await phone.wait_for("call_state", lambda e: e["state"] == "completed")

        await phone.text(texting.number, "START")
        await _reply(phone, "You have successfully been re-subscribed")
        await _opted_out(sessions, texting.user.id, False)
        mark = len(phone.events)
        await phone.text(texting.number, "text me hello there")
        await _reply(phone, "hello there", after=mark)
        await _reply(phone, "Done, I've texted you.", after=mark)


async def _delivered(sessions: async_sessionmaker[AsyncSession], user_id: uuid.UUID, count: int,
                     since: datetime) -> list[Delivery]:
    """The user's first `count` deliveries made after `since` (the user is shared with other tests)."""
    for _ in range(600):
        async with sessions() as session:
            rows = (await session.scalars(select(Delivery).where(Delivery.user_id == user_id, Delivery.created_at > since)
                                          .order_by(Delivery.created_at))).all()
        if len(rows) >= count and all(row.outcome != "pending" for row in rows[:count]):
            return list(rows)
        await asyncio.sleep(0.1)
    raise AssertionError(f"{count} finished deliveries expected; have {[(r.requested, r.outcome) for r in rows]}")


async def test_the_agent_calls_with_a_reminder_texts_when_unanswered_and_follows_up_an_unheard_answer(
    someone: Texting, sessions: async_sessionmaker[AsyncSession], model_server: tuple[str, Any],
) -> None:
    base_url, script = model_server
    started = utcnow()
    async with handset(someone.settings.carrier_url, someone.user.phone_e164, auto_answer=True) as phone:
        # A reminder by call: the phone rings from the user's number and the agent opens with it, in
        # its own words (the agent was asked a lead time ahead: 8 s, so its phrasing turn finishes
        # in time on a busy machine; with less, the platform rightly falls back to plain words).
        await phone.text(someone.number, "remind me in 8 seconds to water the plants by call")
        await _reply(phone, "I'll call you in 8 seconds: water the plants")
        ringing = await phone.wait_for("incoming_call", timeout=60)
        assert ringing["from"] == someone.number
        await agent_said(someone.agent, "Here's your reminder: water the plants")
        await phone.hangup()
        [called] = await _delivered(sessions, someone.user.id, 1, started)
        assert (called.requested, called.outcome, called.channel) == ("call", "called", "call")

        # Nobody picks up the next one: it ends as a text.
        await phone.when_called("no-answer")
        mark = len(phone.events)
        await phone.text(someone.number, "remind me in 3 seconds to stretch by call")
        await _reply(phone, "I'll call you in 3 seconds: stretch", after=mark)
        fallback = await _reply(phone, "(I tried to call.)", after=mark, timeout=60)
        assert "your reminder: stretch" in fallback["body"] and fallback["from"] == someone.number
        unanswered = (await _delivered(sessions, someone.user.id, 2, started))[1]
        assert (unanswered.outcome, unanswered.fallback_reason) == ("texted", "no-answer")

        # A long task the caller hangs up on: the answer comes by text.
        await phone.when_called("ring")
        async with httpx.AsyncClient() as http:
            await http.post(base_url[:-3] + "/control/replies", json={
                "match": "long task", "reply": "The long task is done: 42 widgets counted.", "times": 2,
                "delay_s": 6})
        call_sid = await phone.dial(someone.number)
        # Its greeting (the one the agent prepared at the end of the last call).
        await phone.wait_for("caption", lambda e: e["call_sid"] == call_sid and e["role"] == "agent", timeout=60)
        await phone.say("please do the long task")
        for _ in range(300):  # the agent is at it (the model has been asked) when the caller hangs up
            if any("do the long task" in json.dumps(r["messages"]) for r in script.requests):
                break
            await asyncio.sleep(0.1)
        mark = len(phone.events)
        await phone.hangup()
        done = await _reply(phone, "42 widgets counted", after=mark, timeout=90)
        assert done["from"] == someone.number
        assert len([t for t in phone.texts() if "42 widgets" in t["body"]]) == 1
