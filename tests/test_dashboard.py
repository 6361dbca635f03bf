"""The dashboard's sign-in and home page, over HTTP against the real API, PostgreSQL and the local
carrier: codes by SMS (read from the carrier) and by email (the local outbox), sessions, CSRF,
limits, and each user seeing only their own data."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import random
import re
import uuid
import wave
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx
import pytest
from google.protobuf.json_format import MessageToJson, Parse
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.api.common.v1 import Payloads
from temporalio.client import WorkflowExecutionStatus
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.delivery import DeliveryActivities, DeliveryRequest
from activities.reminders import ReminderActivities

from core import composition
from activities.runtime.activities import RuntimeActivities
from activities.runtime.local import LocalAgentRuntime
from activities.runtime.openclaw_config import ModelProvider
from api.app import create_app as api_app
from api.routes.twilio import SUSPENDED_CALL, SUSPENDED_TEXT
from api.sign_in import PRE_SESSION_COOKIE, SESSION_COOKIE
from core.models import (
    AgentInstance,
    AuditEvent,
    Channel,
    Conversation,
    FallbackReason,
    McpServer,
    Message,
    OutboxEmail,
    PhoneNumber,
    Reminder,
    SignInCode,
    UsageRecord,
    User,
    WebSession,
    utcnow,
)
from core.ports import AgentSpec, archive_key, export_key
from core.process import free_port
from core.usage import UsageKind, record_usage
from core.serve import serving
from core.settings import Settings
from core.temporal import USER_ID
from emulators.carrier.app import create_app as carrier_app
from emulators.carrier.carrier import Carrier
from emulators.speech import SpeechRegistry
from emulators.carrier.handset import handset
from emulators.standins import build_carrier
from activities.runtime.tools import Tools
from emulators.voice_agent import VoiceAgentServer
from tests.conftest import LocalCarrier, unique_area_code
from workflows.delete_user import workflow_id as delete_workflow_id
from workflows.delivery import DeliveryWorkflow
from workflows.export_memory import ExportMemoryWorkflow
from workflows.reminder import ReminderInput, ReminderWorkflow
from workflows.reminder import workflow_id as reminder_workflow_id


@dataclass
class Dashboard:
    settings: Settings
    carrier: Carrier
    sessions: async_sessionmaker[AsyncSession]

    def browser(self) -> httpx.AsyncClient:
        """A browser of its own, from an address of its own on loopback (limits per client apply to it)."""
        source = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
        return httpx.AsyncClient(base_url=self.settings.api_base_url, follow_redirects=False, timeout=20,
                                 transport=httpx.AsyncHTTPTransport(local_address=source))

    def texted_code(self, phone: str) -> str:
        bodies = [m.body for m in self.carrier.messages.values() if m.to == phone and re.search(
            r"(sign-in|verification) code", m.body)]
        assert bodies, f"no sign-in code was texted to {phone}"
        assert [m.from_ for m in self.carrier.messages.values() if m.to == phone][-1] == self.settings.hotline_number
        return re.findall(r"\b(\d{6})\b", bodies[-1])[0]

    def codes_texted(self, phone: str) -> int:
        return sum(1 for m in self.carrier.messages.values() if m.to == phone and "sign-in code" in m.body)

    async def mailed_code(self, address: str, what: str = "sign-in") -> str:
        async with self.sessions() as session:
            mail = (await session.execute(select(OutboxEmail).where(OutboxEmail.to_address == address)
                                          .order_by(OutboxEmail.id.desc()).limit(1))).scalar_one()  # type: ignore[union-attr]
        return re.findall(rf"{what} code: (\d{{6}})", mail.subject)[0]


@pytest.fixture
async def dashboard(database_url: str, temporal_env: WorkflowEnvironment, tmp_path: Path,
                    sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[Dashboard]:
    settings = Settings(_env_file=None, data_dir=tmp_path, database_url=database_url,
                        temporal_address=temporal_env.client.service_client.config.target_host,
                        api_port=free_port(), carrier_port=free_port(), voice_agent_port=free_port(),
                        operators=["ops@example.com"], temporal_task_queue=f"dashboard-{uuid.uuid4().hex[:6]}")
    carrier = build_carrier(settings, SpeechRegistry())
    async with serving(carrier_app(carrier), "127.0.0.1", settings.carrier_port), \
            serving(VoiceAgentServer().app(), "127.0.0.1", settings.voice_agent_port), \
            serving(api_app(settings), "127.0.0.1", settings.api_port):
        yield Dashboard(settings, carrier, sessions)


def _phone() -> str:
    return f"+1555{uuid.uuid4().int % 10**7:07d}"


async def _user(sessions: async_sessionmaker[AsyncSession], *, name: str, said: str) -> User:
    """A user with a number, an agent, a call with a turn that says `said`, and a reminder."""
    user = User(phone_e164=_phone(), phone_verified=True, email=f"{name.lower()}.{uuid.uuid4().hex[:6]}@Example.com",
                email_verified=True, agent_name=name, personality="formal")
    async with sessions() as session, session.begin():
        session.add(user)
        await session.flush()
        session.add(PhoneNumber(e164=_phone(), provider_sid=f"PN{uuid.uuid4().hex}", state="assigned", user_id=user.id))
        session.add(AgentInstance(user_id=user.id, runtime="local", state="sleeping"))
        call = Conversation(user_id=user.id, kind="call", direction="inbound", duration_s=42.0)
        session.add(call)
        await session.flush()
        session.add(Message(conversation_id=call.id, role="user", content=said))
        session.add(Reminder(user_id=user.id, due_at=utcnow() + timedelta(hours=3), text=f"{name}'s reminder"))
    return user


def _csrf(page: httpx.Response) -> str:
    found = re.findall(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, "the page has no CSRF token"
    return found[0]


async def _sign_in(dash: Dashboard, browser: httpx.AsyncClient, address: str) -> httpx.Response:
    form = await browser.get("/signin")
    sent = await browser.post("/signin", data={"address": address, "csrf_token": _csrf(form)})
    assert sent.status_code == 200, sent.text
    code = dash.texted_code(address) if address.startswith("+") else await dash.mailed_code(address.lower())
    return await browser.post("/signin/code", data={"address": address.lower(), "code": code,
                                                     "csrf_token": _csrf(sent)})


async def test_a_user_signs_in_with_a_texted_code_sees_only_their_own_home_and_signs_out(
        dashboard: Dashboard, sessions: async_sessionmaker[AsyncSession]) -> None:
    nova = await _user(sessions, name="Nova", said="what is the capital of peru")
    other = await _user(sessions, name="Orion", said="my bank pin is secret")
    async with dashboard.browser() as browser:
        assert (await browser.get("/")).headers["location"] == "/signin"  # signed out: sent to sign in
        # Typed the way people type their number: national format, spaces and dashes.
        national = f"({nova.phone_e164[2:5]}) {nova.phone_e164[5:8]}-{nova.phone_e164[8:]}"
        form = await browser.get("/signin")
        sent = await browser.post("/signin", data={"address": national, "csrf_token": _csrf(form)})
        assert f"ending {nova.phone_e164[-4:]}" in sent.text
        code = dashboard.texted_code(nova.phone_e164)
        signed = await browser.post("/signin/code", data={"address": nova.phone_e164, "code": f"{code[:3]} {code[3:]}",
                                                           "csrf_token": _csrf(sent)})
        assert signed.status_code == 303 and signed.headers["location"] == "/"
        cookie = next(h for h in signed.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE))
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Max-Age=" in cookie
        assert "Secure" not in cookie  # local mode: plain http on loopback
        home = await browser.get("/")
        assert home.status_code == 200
        number = (await _number(sessions, nova.id))
        assert f'href="tel:{number}"' in home.text and f'href="sms:{number}"' in home.text
        assert "Nova" in home.text and "Formal" in home.text and "Nova&#39;s reminder" in home.text
        assert "what is the capital of peru" in home.text
        assert "Sleeping" in home.text and "last recorded" in home.text  # no lifecycle workflow: the recorded state
        for secret in ("Orion", "my bank pin is secret", other.phone_e164):
            assert secret not in home.text
        assert "/dev/outbox" in home.text  # the local platform's links
        # The page's live part, as its script fetches it: the state, and a wake that stays on the page.
        live = await browser.get("/agent/state", headers={"X-Live": "1"})
        assert live.status_code == 200 and live.text.startswith('<div id="agent-live"') and "Sleeping" in live.text
        assert "Orion" not in live.text
        woken = await browser.post("/agent/wake", data={"csrf_token": _csrf(home)}, headers={"X-Live": "1"})
        assert woken.status_code == 200 and woken.text.startswith('<div id="agent-live"')
        assert "could not be woken just now" in woken.text  # no lifecycle workflow to wake it
        assert (await browser.post("/agent/wake", data={"csrf_token": _csrf(home)})).headers["location"] == "/?notice=wake-failed"

        # The code is used up: the same code again signs nobody in.
        async with dashboard.browser() as second:
            again = await second.post("/signin/code", data={"address": nova.phone_e164, "code": code,
                                                            "csrf_token": _csrf(await second.get("/signin"))})
            assert again.status_code == 400 and "wrong, used or expired" in again.text
            assert SESSION_COOKIE not in again.cookies

        out = await browser.post("/signout", data={"csrf_token": _csrf(home)})
        assert out.status_code == 303 and out.headers["location"] == "/signin"
    async with dashboard.browser() as replay:  # the old cookie, kept by someone: revoked with the session
        replay.cookies.set(SESSION_COOKIE, browser.cookies.get(SESSION_COOKIE) or signed.cookies[SESSION_COOKIE])
        assert (await replay.get("/")).headers["location"] == "/signin"
        assert (await replay.get("/agent/state", headers={"X-Live": "1"})).headers["location"] == "/signin"
    async with sessions() as session:
        actions = (await session.execute(select(AuditEvent.action).where(AuditEvent.user_id == nova.id))).scalars().all()
    assert {"dashboard.signed_in", "dashboard.signed_out"} <= set(actions)


async def _number(sessions: async_sessionmaker[AsyncSession], user_id: uuid.UUID) -> str:
    async with sessions() as session:
        return (await session.execute(select(PhoneNumber.e164).where(PhoneNumber.user_id == user_id))).scalar_one()


async def test_an_emailed_code_signs_in_and_sign_out_everywhere_ends_every_session(
        dashboard: Dashboard, sessions: async_sessionmaker[AsyncSession]) -> None:
    luna = await _user(sessions, name="Luna", said="hello")
    assert luna.email
    async with dashboard.browser() as laptop, dashboard.browser() as phone:
        for browser in (laptop, phone):
            signed = await _sign_in(dashboard, browser, luna.email.upper())  # any case: the same address
            assert signed.status_code == 303, signed.text
        home = await laptop.get("/")
        assert "Luna" in home.text
        await laptop.post("/signout", data={"csrf_token": _csrf(home), "everywhere": "true"})
        assert (await phone.get("/")).headers["location"] == "/signin"
    async with sessions() as session:
        live = (await session.execute(select(WebSession).where(WebSession.user_id == luna.id,
                                                               WebSession.revoked_at.is_(None)))).scalars().all()  # type: ignore[union-attr]
    assert live == []


async def test_wrong_expired_and_overused_codes_are_refused(
        dashboard: Dashboard, sessions: async_sessionmaker[AsyncSession]) -> None:
    mira = await _user(sessions, name="Mira", said="hi")
    async with dashboard.browser() as browser:
        form = await browser.get("/signin")
        sent = await browser.post("/signin", data={"address": mira.phone_e164, "csrf_token": _csrf(form)})
        code = dashboard.texted_code(mira.phone_e164)
        wrong = f"{(int(code) + 1) % 10**6:06d}"
        for _ in range(dashboard.settings.sign_in_code_attempts):
            refused = await browser.post("/signin/code", data={"address": mira.phone_e164, "code": wrong,
                                                               "csrf_token": _csrf(sent)})
            assert refused.status_code == 400
        # Five wrong guesses void the code: even the right one no longer works.
        late = await browser.post("/signin/code", data={"address": mira.phone_e164, "code": code,
                                                        "csrf_token": _csrf(sent)})
        assert late.status_code == 400 and SESSION_COOKIE not in late.cookies

        sent = await browser.post("/signin", data={"address": mira.phone_e164, "csrf_token": _csrf(form)})
        code = dashboard.texted_code(mira.phone_e164)
        async with sessions() as session, session.begin():  # its ten minutes pass
            await session.execute(update(SignInCode).where(SignInCode.used_at.is_(None))  # type: ignore[union-attr]
                                  .values(expires_at=utcnow() - timedelta(seconds=1)))
        expired = await browser.post("/signin/code", data={"address": mira.phone_e164, "code": code,
                                                           "csrf_token": _csrf(sent)})
        assert expired.status_code == 400 and "expired" in expired.text

        # A third code in ten minutes is the last; the fourth request is refused and nothing is sent.
        await browser.post("/signin", data={"address": mira.phone_e164, "csrf_token": _csrf(form)})
        texted = dashboard.codes_texted(mira.phone_e164)
        over = await browser.post("/signin", data={"address": mira.phone_e164, "csrf_token": _csrf(form)})
        assert over.status_code == 429 and "Too many codes" in over.text
        assert dashboard.codes_texted(mira.phone_e164) == texted == 3


async def test_strangers_get_the_same_answer_and_nothing_is_sent(dashboard: Dashboard) -> None:
    stranger = _phone()
    async with dashboard.browser() as browser:
        form = await browser.get("/signin")
        answer = await browser.post("/signin", data={"address": stranger, "csrf_token": _csrf(form)})
        assert answer.status_code == 200 and "Enter your code" in answer.text
        assert dashboard.codes_texted(stranger) == 0
        bad = await browser.post("/signin", data={"address": "not a number", "csrf_token": _csrf(form)})
        assert bad.status_code == 400 and "doesn&#39;t look like" in bad.text


async def test_one_client_asking_for_codes_for_many_addresses_is_stopped(dashboard: Dashboard) -> None:
    async with dashboard.browser() as browser:
        token = _csrf(await browser.get("/signin"))
        allowed = int(dashboard.settings.sign_in_client_limits.split("/")[0])
        for _ in range(allowed):
            answer = await browser.post("/signin", data={"address": _phone(), "csrf_token": token})
            assert answer.status_code == 200
        over = await browser.post("/signin", data={"address": _phone(), "csrf_token": token})
        assert over.status_code == 429 and "Too many codes" in over.text
        async with dashboard.browser() as neighbour:  # another client is not held up by it
            answer = await neighbour.post("/signin", data={"address": _phone(),
                                                           "csrf_token": _csrf(await neighbour.get("/signin"))})
            assert answer.status_code == 200


async def test_requests_without_this_sites_csrf_token_are_refused(
        dashboard: Dashboard, sessions: async_sessionmaker[AsyncSession]) -> None:
    vega = await _user(sessions, name="Vega", said="hi")
    async with dashboard.browser() as browser:
        await _sign_in(dashboard, browser, vega.phone_e164)
        home = await browser.get("/")
        token = _csrf(home)
        for path, data in (("/signout", {}), ("/agent/wake", {}), ("/signin", {"address": vega.phone_e164}),
                           ("/signin/code", {"address": vega.phone_e164, "code": "123456"})):
            assert (await browser.post(path, data=data)).status_code == 403, path
            assert (await browser.post(path, data={**data, "csrf_token": "forged"})).status_code == 403, path
            cross = await browser.post(path, data={**data, "csrf_token": token}, headers={"origin": "https://evil.example"})
            assert cross.status_code == 403, path
        # Another browser's token (its own pre-session) does not carry over to this session.
        async with dashboard.browser() as elsewhere:
            foreign = _csrf(await elsewhere.get("/signin"))
            assert PRE_SESSION_COOKIE in elsewhere.cookies
        assert (await browser.post("/signout", data={"csrf_token": foreign})).status_code == 403
        assert (await browser.get("/")).status_code == 200  # still signed in: nothing was done


async def _signed_in(dash: Dashboard, browser: httpx.AsyncClient, user: User) -> str:
    """Signs `browser` in as `user`; the CSRF token of its session."""
    assert (await _sign_in(dash, browser, user.phone_e164)).status_code == 303
    return _csrf(await browser.get("/"))


async def test_history_is_one_searchable_paginated_timeline_and_a_call_shows_its_transcript(
        dashboard: Dashboard, sessions: async_sessionmaker[AsyncSession]) -> None:
    kai = await _user(sessions, name="Kai", said="first call")
    other = await _user(sessions, name="Zed", said="zed's private words")
    start = utcnow() - timedelta(days=2)
    async with sessions() as session, session.begin():
        call = Conversation(user_id=kai.id, kind="call", direction="outbound", duration_s=61.0, started_at=start,
                            latency={"turns": [{"total_latency": 0.85}, {"total_latency": 1.2}]})
        texts = Conversation(user_id=kai.id, kind="sms", direction="inbound", started_at=start + timedelta(hours=1))
        session.add_all([call, texts])
        await session.flush()
        for n, (role, words) in enumerate([("agent", "Hi, it's Kai."), ("user", "what's on tomorrow"),
                                           ("agent", "A dentist appointment at ten.")]):
            session.add(Message(conversation_id=call.id, role=role, content=words,
                                created_at=start + timedelta(seconds=n)))
        session.add(Message(conversation_id=texts.id, role="user", content="buy oat milk", status="received"))
        for n in range(25):  # older calls, to page through
            old = Conversation(user_id=kai.id, kind="call", direction="inbound", started_at=start - timedelta(days=n + 1))
            session.add(old)
    async with sessions() as session:
        foreign = (await session.execute(select(Conversation.id).where(Conversation.user_id == other.id))).scalar_one()
    async with dashboard.browser() as browser:
        await _signed_in(dashboard, browser, kai)
        first = await browser.get("/history")
        assert first.status_code == 200
        order = [m for m in re.findall(r'href="/history/([0-9a-f-]{36})"', first.text)]
        assert len(order) == 20 and 'rel="next"' in first.text and 'rel="prev"' not in first.text
        second = await browser.get("/history", params={"page": 2})
        assert len(re.findall(r'href="/history/[0-9a-f-]{36}"', second.text)) == 28 - 20  # 25 + 2 + the fixture's
        assert 'rel="prev"' in second.text and 'rel="next"' not in second.text
        assert order.index(str(texts.id)) < order.index(str(call.id))  # newest first

        found = await browser.get("/history", params={"q": "OAT MILK"})
        assert re.findall(r'href="/history/([0-9a-f-]{36})"', found.text) == [str(texts.id)]
        assert "buy oat milk" in found.text
        assert "Nothing said matches" in (await browser.get("/history", params={"q": "100%_"})).text

        page = await browser.get(f"/history/{call.id}")
        transcript = page.text[page.text.index('id="transcript"'):]
        assert transcript.index("Hi, it&#39;s Kai.") < transcript.index("what&#39;s on tomorrow") \
            < transcript.index("A dentist appointment at ten.")
        assert "answered in 0.85 s" in transcript and "answered in 1.2 s" in transcript and "61 s" in page.text
        thread = await browser.get(f"/history/{texts.id}")
        assert "buy oat milk" in thread.text and "received" in thread.text

        # Someone else's conversation is not there at all, for a browser and for anything else.
        missing = await browser.get(f"/history/{foreign}", headers={"accept": "text/html"})
        assert missing.status_code == 404 and "zed" not in missing.text.lower() and "Not found" in missing.text
        assert (await browser.get(f"/history/{foreign}")).status_code == 404
        assert (await browser.get(f"/history/{uuid.uuid4()}")).status_code == 404
        assert "zed&#39;s private words" not in (await browser.get("/history", params={"q": "private"})).text


async def test_reminders_are_cancelled_and_moved_through_their_workflows(
        dashboard: Dashboard, sessions: async_sessionmaker[AsyncSession], temporal_env: WorkflowEnvironment,
        local_carrier: LocalCarrier, settings: Settings) -> None:
    ada = await _user(sessions, name="Ada", said="hi")
    other = await _user(sessions, name="Bo", said="hi")
    client = temporal_env.client
    queue = f"reminders-{uuid.uuid4().hex[:6]}"
    async with sessions() as session:
        [fixture_reminder] = (await session.execute(select(Reminder).where(Reminder.user_id == ada.id))).scalars().all()
        [foreign] = (await session.execute(select(Reminder).where(Reminder.user_id == other.id))).scalars().all()
    stretch = Reminder(user_id=ada.id, due_at=utcnow() + timedelta(days=1), text="stretch", time_zone="America/New_York")
    async with sessions() as session, session.begin():
        session.add(stretch)
    async with Worker(client, task_queue=queue, workflows=[ReminderWorkflow, DeliveryWorkflow],
                      activities=[*ReminderActivities(sessions, None).all(),  # type: ignore[arg-type]
                                  *DeliveryActivities(local_carrier.telephony, sessions, settings).all()]):
        for reminder in (fixture_reminder, stretch, foreign):
            await client.start_workflow(ReminderWorkflow.run, ReminderInput(
                reminder_id=reminder.id, user_id=reminder.user_id, text=reminder.text, due_at=reminder.due_at,
                time_zone=reminder.time_zone), id=reminder_workflow_id(reminder.id), task_queue=queue)
        async with dashboard.browser() as browser:
            token = await _signed_in(dashboard, browser, ada)
            page = await browser.get("/reminders")
            assert "stretch" in page.text and "Ada&#39;s reminder" in page.text and "Bo&#39;s reminder" not in page.text

            for path in (f"/reminders/{foreign.id}/cancel", f"/reminders/{foreign.id}/reschedule"):
                assert (await browser.post(path, data={"csrf_token": token, "at": "2030-01-01T09:00"})).status_code == 404
                assert (await browser.post(f"/reminders/{stretch.id}/cancel", data={})).status_code == 403

            cancelled = await browser.post(f"/reminders/{fixture_reminder.id}/cancel", data={"csrf_token": token})
            assert cancelled.status_code == 303 and cancelled.headers["location"] == "/reminders?notice=cancelled"
            assert await _reminder_state(sessions, fixture_reminder.id) == "cancelled"
            again = await browser.post(f"/reminders/{fixture_reminder.id}/cancel", data={"csrf_token": token})
            assert again.status_code == 409 and "already cancelled" in again.text

            past = await browser.post(f"/reminders/{stretch.id}/reschedule", data={"csrf_token": token,
                                                                                  "at": "2020-01-01T09:00"})
            assert past.status_code == 400 and "in the past" in past.text
            assert (await browser.post(f"/reminders/{stretch.id}/reschedule",
                                       data={"csrf_token": token, "at": "soon"})).status_code == 400
            tomorrow = (utcnow() + timedelta(days=2)).astimezone(ZoneInfo("America/New_York")).replace(
                hour=9, minute=30, second=0, microsecond=0)
            moved = await browser.post(f"/reminders/{stretch.id}/reschedule",
                                       data={"csrf_token": token, "at": tomorrow.strftime("%Y-%m-%dT%H:%M")})
            assert moved.status_code == 303
            async with sessions() as session:
                row = await session.get(Reminder, stretch.id)
            assert row is not None and row.due_at == tomorrow and row.state == "scheduled"
            described = await client.get_workflow_handle(reminder_workflow_id(stretch.id)).describe()
            assert described.status == WorkflowExecutionStatus.RUNNING
        async with sessions() as session:
            assert (await session.get(Reminder, foreign.id)).state == "scheduled"  # type: ignore[union-attr]  # untouched
        for reminder in (stretch, foreign):
            await client.get_workflow_handle(reminder_workflow_id(reminder.id)).terminate("test over")


async def _reminder_state(sessions: async_sessionmaker[AsyncSession], reminder_id: uuid.UUID,
                          timeout: float = 20) -> str:
    """The reminder's recorded state once its workflow has recorded a change (or the deadline)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with sessions() as session:
            state = (await session.get(Reminder, reminder_id)).state  # type: ignore[union-attr]
        if state != "scheduled" or asyncio.get_running_loop().time() > deadline:
            return state
        await asyncio.sleep(0.1)


async def test_the_agent_page_saves_valid_settings_and_explains_invalid_ones(
        dashboard: Dashboard, sessions: async_sessionmaker[AsyncSession]) -> None:
    rey = await _user(sessions, name="Rey", said="hi")
    async with dashboard.browser() as browser:
        token = await _signed_in(dashboard, browser, rey)
        form = await browser.get("/agent")
        assert 'value="Rey"' in form.text and 'value="aura-2-thalia-en" checked' in form.text
        good = {"csrf_token": token, "agent_name": "  Captain   Rey ", "voice": "aura-2-luna-en",
                "personality": "casual", "instructions": "Call me Skipper.", "time_zone": "Europe/Paris",
                "quiet_from": "22:30", "quiet_until": "07:00", "new_pin": "2468", "allow_other_phones": "true"}
        bad = {**good, "agent_name": "  ", "voice": "robot", "personality": "grumpy", "time_zone": "Mars/Olympus",
               "quiet_from": "22:30", "quiet_until": "", "new_pin": "12", "instructions": "x" * 2001}
        refused = await browser.post("/agent", data=bad)
        assert refused.status_code == 400 and "nothing was saved" in refused.text
        for words in ("at least one letter", "Choose one of the voices", "Choose casual or formal", "Not a time zone",
                      "Give both times", "A PIN is 4 to 8 digits", "At most 2000 characters"):
            assert words in refused.text, words
        no_pin = await browser.post("/agent", data={**good, "new_pin": ""})
        assert no_pin.status_code == 400 and "Set a PIN first" in no_pin.text
        async with sessions() as session:
            assert (await session.get(User, rey.id)).agent_name == "Rey"  # type: ignore[union-attr]

        saved = await browser.post("/agent", data=good)
        # No lifecycle workflow in this test: saved, and the user told the agent has not got it yet.
        assert saved.status_code == 303 and saved.headers["location"] == "/agent?notice=saved-later"
        async with sessions() as session:
            row = await session.get(User, rey.id)
        assert row is not None
        assert (row.agent_name, row.voice, row.personality, row.custom_instructions, row.time_zone) == (
            "Captain Rey", "aura-2-luna-en", "casual", "Call me Skipper.", "Europe/Paris")
        assert (row.quiet_from.isoformat(), row.quiet_until.isoformat()) == ("22:30:00", "07:00:00")  # type: ignore[union-attr]
        assert row.allow_other_phones and row.pin_digest and "2468" not in row.pin_digest
        again = await browser.get("/agent?notice=saved-later")
        assert "could not be updated just now" in again.text and "You have a PIN" in again.text
        assert (await browser.post("/agent", data={k: v for k, v in good.items() if k != "csrf_token"})).status_code == 403


async def _carrier_number(dash: Dashboard, user: User) -> str:
    """Gives `user` a number the local carrier routes to this API (the fixture's are database-only)."""
    telephony = composition.telephony(dash.settings)
    try:
        [spare] = await telephony.search_numbers(area_code=unique_area_code(), limit=1)
        owned = await telephony.buy_number(spare, voice_url=f"{dash.settings.api_base_url}/twilio/voice",
                                           sms_url=f"{dash.settings.api_base_url}/twilio/sms")
        hotline = next(n for n in await telephony.list_numbers() if n.e164 == dash.settings.hotline_number)
        await telephony.configure_number(hotline.sid, voice_url=f"{dash.settings.api_base_url}/twilio/voice",
                                         sms_url=f"{dash.settings.api_base_url}/twilio/sms")
    finally:
        await telephony.close()
    async with dash.sessions() as session, session.begin():
        await session.execute(update(PhoneNumber).where(PhoneNumber.user_id == user.id).values(
            e164=owned.e164, provider_sid=owned.sid))
    return owned.e164


async def test_operators_see_any_user_with_their_workflows_suspend_them_and_block_numbers_all_audited(
        dashboard: Dashboard, sessions: async_sessionmaker[AsyncSession], temporal_env: WorkflowEnvironment) -> None:
    ivy = await _user(sessions, name="Ivy", said="ivy's words")
    number = await _carrier_number(dashboard, ivy)
    async with sessions() as session:
        [reminder] = (await session.execute(select(Reminder).where(Reminder.user_id == ivy.id))).scalars().all()
    # A workflow of Ivy's, found by its UserId search attribute (no worker needed to be listed).
    await temporal_env.client.start_workflow(
        ReminderWorkflow.run, ReminderInput(reminder_id=reminder.id, user_id=ivy.id, text=reminder.text,
                                            due_at=reminder.due_at, time_zone="UTC"),
        id=reminder_workflow_id(reminder.id), task_queue=f"nobody-{uuid.uuid4().hex[:6]}",
        search_attributes=TypedSearchAttributes([SearchAttributePair(USER_ID, str(ivy.id))]))
    operator = "ops@example.com"
    async with dashboard.browser() as browser, dashboard.browser() as user_browser:
        signed = await _sign_in(dashboard, browser, operator)
        assert signed.headers["location"] == "/operator"  # an operator without an account of their own
        assert (await browser.get("/")).headers["location"] == "/operator"
        listing = await browser.get("/operator", params={"q": ivy.phone_e164[-7:]})
        assert f"/operator/users/{ivy.id}" in listing.text and "Ivy" in listing.text
        page = await browser.get(f"/operator/users/{ivy.id}")
        for _ in range(100):  # visibility is eventually consistent
            if reminder_workflow_id(reminder.id) in page.text:
                break
            await asyncio.sleep(0.1)
            page = await browser.get(f"/operator/users/{ivy.id}")
        assert reminder_workflow_id(reminder.id) in page.text and "ReminderWorkflow" in page.text and "Running" in page.text
        assert f"query=UserId%3D%22{ivy.id}%22" in page.text and "ivy&#39;s words" in page.text
        token = _csrf(page)

        # Not an operator: these pages do not exist.
        user_token = await _signed_in(dashboard, user_browser, ivy)
        for path in ("/operator", f"/operator/users/{ivy.id}", "/operator/blocked"):
            assert (await user_browser.get(path)).status_code == 404, path
        assert (await user_browser.post(f"/operator/users/{ivy.id}/suspend", data={"csrf_token": user_token})).status_code == 404
        assert (await browser.post(f"/operator/users/{ivy.id}/suspend", data={})).status_code == 403  # CSRF

        assert (await browser.post(f"/operator/users/{ivy.id}/suspend", data={"csrf_token": token})).status_code == 303
        stranger = _phone()
        async with handset(dashboard.settings.carrier_url, ivy.phone_e164) as phone:
            await phone.dial(number)
            assert (await phone.wait_for("say", timeout=20))["text"] == SUSPENDED_CALL
            await phone.wait_for("call_state", lambda e: e["state"] == "completed", timeout=20)
            await phone.text(number, "are you there?")
            assert (await phone.wait_for("sms", timeout=20))["body"] == SUSPENDED_TEXT
        assert (await browser.post(f"/operator/users/{ivy.id}/resume", data={"csrf_token": token})).status_code == 303
        async with sessions() as session:
            assert (await session.get(User, ivy.id)).suspended_at is None  # type: ignore[union-attr]

        refused = await browser.post("/operator/blocked", data={"csrf_token": token, "number": "call me maybe"})
        assert refused.status_code == 400 and "not a phone number" in refused.text
        await browser.post("/operator/blocked", data={"csrf_token": token, "number": stranger, "reason": "spam"})
        assert stranger in (await browser.get("/operator/blocked")).text
        async with handset(dashboard.settings.carrier_url, stranger) as spammer:
            await spammer.dial(dashboard.settings.hotline_number)
            ended = await spammer.wait_for("call_state", lambda e: e["state"] in ("no-answer", "completed"), timeout=20)
            assert ended["state"] == "no-answer"  # rejected, never answered
            await spammer.text(number, "buy cheap watches")
            for _ in range(100):
                if any(e["url"].endswith("/twilio/sms") and e["params"].get("From") == stranger
                       for e in dashboard.carrier.webhook_log):
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0)
            assert spammer.texts() == []  # dropped: no reply, nothing passed on to Ivy
        assert not [m for m in dashboard.carrier.messages.values() if m.to == ivy.phone_e164 and "watches" in m.body]
        await browser.post(f"/operator/blocked/{quote(stranger)}/unblock", data={"csrf_token": token})
        assert stranger not in (await browser.get("/operator/blocked")).text
    await temporal_env.client.get_workflow_handle(reminder_workflow_id(reminder.id)).terminate("test over")
    async with sessions() as session:
        audit = (await session.execute(select(AuditEvent.action, AuditEvent.user_id, AuditEvent.detail)
                                       .where(AuditEvent.actor == "operator"))).all()
    mine = [(action, user_id) for action, user_id, detail in audit if detail.get("operator") == operator]
    for expected in (("operator.viewed_user", ivy.id), ("operator.suspended_user", ivy.id),
                     ("operator.resumed_user", ivy.id), ("operator.listed_users", None),
                     ("operator.blocked_number", None), ("operator.unblocked_number", None)):
        assert expected in mine, expected


async def test_the_codec_server_decodes_stored_payloads_for_a_signed_in_operator_only(
        dashboard: Dashboard, sessions: async_sessionmaker[AsyncSession], temporal_env: WorkflowEnvironment) -> None:
    ivy = await _user(sessions, name="Ivy", said="ivy's words")
    secret_text = f"collect the biopsy results {uuid.uuid4().hex[:6]}"
    handle = await temporal_env.client.start_workflow(
        ReminderWorkflow.run, ReminderInput(reminder_id=uuid.uuid4(), user_id=ivy.id, text=secret_text,
                                            due_at=utcnow() + timedelta(hours=1), time_zone="UTC"),
        id=f"codec-{uuid.uuid4()}", task_queue=f"nobody-{uuid.uuid4().hex[:6]}")
    started = [e async for e in handle.fetch_history_events()][0].workflow_execution_started_event_attributes
    stored = MessageToJson(started.input, indent=None)
    assert secret_text not in stored and secret_text.encode() not in started.input.SerializeToString()
    ui = dashboard.settings.temporal_ui_url
    headers = {"Origin": ui, "X-Namespace": "default", "Content-Type": "application/json"}
    async with dashboard.browser() as browser, dashboard.browser() as user_browser:
        preflight = await browser.options("/codec/decode", headers={"Origin": ui, "Access-Control-Request-Method": "POST"})
        assert preflight.status_code == 204 and preflight.headers["access-control-allow-origin"] == ui
        assert preflight.headers["access-control-allow-credentials"] == "true"
        elsewhere = await browser.options("/codec/decode", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in elsewhere.headers

        anonymous = await browser.post("/codec/decode", content=stored, headers=headers)
        assert anonymous.status_code == 401 and secret_text not in anonymous.text
        assert anonymous.headers["access-control-allow-origin"] == ui, "the UI can show why"
        await _signed_in(dashboard, user_browser, ivy)
        user = await user_browser.post("/codec/decode", content=stored, headers=headers)
        assert user.status_code == 403 and secret_text not in user.text, "a user is not an operator"

        assert (await _sign_in(dashboard, browser, "ops@example.com")).status_code == 303
        decoded = await browser.post("/codec/decode", content=stored, headers=headers)
        assert decoded.status_code == 200 and decoded.headers["access-control-allow-origin"] == ui
        payload = Parse(decoded.text, Payloads()).payloads[0]
        assert json.loads(payload.data)["text"] == secret_text and payload.metadata["encoding"] == b"json/plain"
        assert (await browser.post("/codec/decode", content=stored,
                                   headers={**headers, "Origin": "https://evil.example"})).status_code == 403
        assert (await browser.post("/codec/decode", content=b"{not json", headers=headers)).status_code == 400
        encoded = await browser.post("/codec/encode", content=decoded.text, headers=headers)
        assert encoded.status_code == 200 and secret_text not in encoded.text
        again = await browser.post("/codec/decode", content=encoded.text, headers=headers)
        assert json.loads(Parse(again.text, Payloads()).payloads[0].data)["text"] == secret_text
    await handle.terminate("test over")
    async with sessions() as session:
        actions = (await session.execute(select(AuditEvent.action).where(
            AuditEvent.actor == "operator", AuditEvent.action.in_(  # type: ignore[attr-defined]
                ["operator.decoded_payloads", "operator.encoded_payloads"])))).scalars().all()
    assert {"operator.decoded_payloads", "operator.encoded_payloads"} <= set(actions)


async def test_the_export_holds_my_data_only_and_deletion_asks_for_confirmation_then_starts_its_workflow(
        dashboard: Dashboard, sessions: async_sessionmaker[AsyncSession], temporal_env: WorkflowEnvironment,
        tools: Tools) -> None:
    uma = await _user(sessions, name="Uma", said="my favourite tea is sencha")
    other = await _user(sessions, name="Olaf", said="olaf's diary")
    async with sessions() as session, session.begin():
        await session.execute(update(User).where(User.id == uma.id).values(pin_digest="k1:secret-digest"))
        session.add(McpServer(user_id=uma.id, name="notes", url="https://notes.example.com/mcp", status="ok",
                              headers_ciphertext=b"sealed-header-bytes"))
    # The agent's files as the worker's local runtime keeps them (no gateway needed to read them).
    runtime = LocalAgentRuntime(tools, dashboard.settings.data_dir / "agents", ModelProvider(base_url="http://127.0.0.1:1", api_key="-", model="-"),
                                keyring=dashboard.settings.keyring)
    await runtime.create(AgentSpec(user_id=uma.id, agent_name="Uma"))
    (runtime.user_dir(uma.id) / "workspace" / "memory").mkdir()
    (runtime.user_dir(uma.id) / "workspace" / "memory" / "tea.md").write_text("Uma's favourite tea: sencha\n")
    store = composition.archive_store(dashboard.settings)
    worker = Worker(temporal_env.client, task_queue=dashboard.settings.temporal_task_queue,
                    workflows=[ExportMemoryWorkflow],
                    activities=[RuntimeActivities(runtime, store, sessions, "local").export_agent_memory])
    async with worker, dashboard.browser() as browser:
        token = await _signed_in(dashboard, browser, uma)
        download = await browser.get("/account/export")
        assert download.status_code == 200 and download.headers["content-type"] == "application/zip"
        assert "attachment" in download.headers["content-disposition"]
        with zipfile.ZipFile(io.BytesIO(download.content)) as bundle:
            files = {name: json.loads(bundle.read(name)) for name in bundle.namelist() if name.endswith(".json")}
            memory = {name: bundle.read(name).decode() for name in bundle.namelist() if name.startswith("agent/")}
        assert files["account.json"]["phone_e164"] == uma.phone_e164 and files["account.json"]["has_pin"] is True
        assert "pin_digest" not in files["account.json"] and "secret-digest" not in json.dumps(files)
        [call] = files["conversations.json"]
        assert [m["content"] for m in call["messages"]] == ["my favourite tea is sencha"]
        assert files["reminders.json"][0]["text"] == "Uma's reminder"
        assert files["sessions.json"] and all("secret_digest" not in row for row in files["sessions.json"])
        assert files["statements.json"] == []
        [server] = files["integrations.json"]["mcp_servers"]
        assert (server["name"], server["has_headers"]) == ("notes", True) and "headers_ciphertext" not in server
        assert "olaf" not in json.dumps(files).lower() and other.phone_e164 not in json.dumps(files)
        # The agent's memory files, as they are in its workspace; the export's copy is not kept.
        assert memory["agent/workspace/memory/tea.md"] == "Uma's favourite tea: sencha\n"
        assert "You are Uma" in memory["agent/workspace/SOUL.md"]
        assert not await store.exists(export_key(uma.id))
        # Two exports at once (a double click): both arrive, each with the files or saying why not.
        for twin in await asyncio.gather(browser.get("/account/export"), browser.get("/account/export")):
            assert twin.status_code == 200
            with zipfile.ZipFile(io.BytesIO(twin.content)) as bundle:
                names = bundle.namelist()
            assert "agent/workspace/memory/tea.md" in names or "agent/workspace/NOT-INCLUDED.txt" in names
        # Archived, the agent's files come from its archive, which stays.
        await runtime.archive(uma.id, store)
        with zipfile.ZipFile(io.BytesIO((await browser.get("/account/export")).content)) as bundle:
            assert bundle.read("agent/workspace/memory/tea.md").decode() == "Uma's favourite tea: sencha\n"
        assert await store.exists(archive_key(uma.id))

        refused = await browser.post("/account/delete", data={"csrf_token": token, "confirm": "yes"})
        assert refused.status_code == 400 and "nothing was deleted" in refused.text
        assert (await browser.post("/account/delete", data={"confirm": "delete"})).status_code == 403
        gone = await browser.post("/account/delete", data={"csrf_token": token, "confirm": "DELETE"})
        assert gone.status_code == 303 and gone.headers["location"] == "/signin?notice=deleted"
        assert "being deleted" in (await browser.get("/signin?notice=deleted")).text
    handle = temporal_env.client.get_workflow_handle(delete_workflow_id(uma.id))
    started = await handle.describe()
    assert started.workflow_type == "DeleteUserWorkflow"  # its worker (not in this test) does the rest
    await handle.terminate("test over")



async def test_each_voice_has_a_sample_made_by_the_speech_service(
        dashboard: Dashboard, sessions: async_sessionmaker[AsyncSession]) -> None:
    lea = await _user(sessions, name="Lea", said="hi")
    async with dashboard.browser() as browser:
        assert (await browser.get("/agent/voices/aura-2-luna-en/sample")).status_code == 303  # signed out
        await _signed_in(dashboard, browser, lea)
        form = await browser.get("/agent")
        samples = re.findall(r'<audio[^>]+src="([^"]+)"', form.text)
        assert len(samples) == 4
        made = []
        for url in samples:
            sample = await browser.get(url)
            assert sample.status_code == 200 and sample.headers["content-type"] == "audio/wav"
            with wave.open(io.BytesIO(sample.content)) as wav:
                assert wav.getnframes() / wav.getframerate() > 1.0  # a sentence, not silence
            made.append(sample.content)
        assert len(set(made)) == 4  # four distinct voices
        assert (await browser.get("/agent/voices/robot/sample")).status_code == 404


async def test_a_new_email_or_phone_is_verified_like_sign_up_before_it_counts(
        dashboard: Dashboard, sessions: async_sessionmaker[AsyncSession]) -> None:
    tom = await _user(sessions, name="Tom", said="hi")
    other = await _user(sessions, name="Ada", said="hi")
    new_email, new_phone = f"tom.{uuid.uuid4().hex[:6]}@example.org", _phone()
    async with dashboard.browser() as browser:
        token = await _signed_in(dashboard, browser, tom)
        assert "That is not a phone number" in (await browser.post(
            "/account/phone", data={"csrf_token": token, "address": new_email})).text
        assert (await browser.post("/account/email", data={"address": new_email})).status_code == 403

        sent = await browser.post("/account/email", data={"csrf_token": token, "address": new_email.upper()})
        assert sent.status_code == 200 and "Verify your new email" in sent.text
        code = await dashboard.mailed_code(new_email, "verification")
        # A sign-in code is not a change code, nor the other way round, and wrong codes change nothing.
        wrong = await browser.post("/account/email/verify", data={"csrf_token": token, "address": new_email,
                                                                  "code": f"{(int(code) + 1) % 10**6:06d}"})
        assert wrong.status_code == 400
        async with dashboard.browser() as stranger:
            form = await stranger.get("/signin")
            tried = await stranger.post("/signin/code", data={"address": new_email, "code": code,
                                                              "csrf_token": _csrf(form)})
            assert tried.status_code == 400
        done = await browser.post("/account/email/verify", data={"csrf_token": token, "address": new_email,
                                                                 "code": code})
        assert done.status_code == 303 and done.headers["location"] == "/account?notice=email"
        assert new_email in (await browser.get("/account?notice=email")).text

        # Another account's number can be proven but not taken.
        await browser.post("/account/phone", data={"csrf_token": token, "address": other.phone_e164})
        clash = await browser.post("/account/phone/verify", data={
            "csrf_token": token, "address": other.phone_e164, "code": dashboard.texted_code(other.phone_e164)})
        assert clash.status_code == 409 and "belongs to another DeepClaw account" in clash.text

        await browser.post("/account/phone", data={"csrf_token": token, "address": new_phone})
        moved = await browser.post("/account/phone/verify", data={
            "csrf_token": token, "address": new_phone, "code": dashboard.texted_code(new_phone)})
        assert moved.status_code == 303
    async with sessions() as session:
        row = await session.get(User, tom.id)
        assert row is not None and (row.email, row.email_verified, row.phone_e164) == (new_email, True, new_phone)
        assert (await session.get(User, other.id)).phone_e164 == other.phone_e164  # type: ignore[union-attr]
    async with dashboard.browser() as browser:  # the new email signs in
        assert (await _sign_in(dashboard, browser, new_email)).status_code == 303


async def test_the_usage_page_and_its_csv_add_up_to_the_records_and_the_cap_stops_calls(
        dashboard: Dashboard, sessions: async_sessionmaker[AsyncSession], settings: Settings,
        local_carrier: LocalCarrier) -> None:
    ned = await _user(sessions, name="Ned", said="hi")
    zone = "America/New_York"
    now = utcnow().astimezone(ZoneInfo(zone))
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    async with sessions() as session, session.begin():
        await session.execute(update(User).where(User.id == ned.id).values(time_zone=zone))
        for n, (kind, quantity) in enumerate([(UsageKind.CALL_SECONDS_IN, 2400), (UsageKind.CALL_SECONDS_OUT, 1500),
                                              (UsageKind.SMS_SEGMENTS_IN, 150), (UsageKind.SMS_SEGMENTS_OUT, 75),
                                              (UsageKind.AWAKE_SECONDS, 200_000)]):
            await record_usage(session, user_id=ned.id, kind=kind, quantity=quantity, source=f"test:{ned.id}:{n}",
                               occurred_at=month_start + timedelta(minutes=n))
        # The last minute of the month before, in Ned's zone: not this month's.
        await record_usage(session, user_id=ned.id, kind=UsageKind.CALL_SECONDS_IN, quantity=999,
                           source=f"test:{ned.id}:before", occurred_at=month_start - timedelta(minutes=1))
    # The standard plan: $5 a month; calls 3,600 s included, then 4 cents a minute (300 s: 20 cents);
    # texts 200 included, then a cent each (25); awake 180,000 s included, then a cent an hour (20,000 s:
    # 5.56, so 6 whole cents).
    expected = Decimal(500 + 20 + 25 + 6)
    async with dashboard.browser() as browser:
        token = await _signed_in(dashboard, browser, ned)
        page = await browser.get("/usage")
        assert page.status_code == 200 and f'id="total">{expected / 100:,.2f}<' in page.text
        month = month_start.strftime("%Y-%m")
        csv_text = (await browser.get(f"/usage/{month}.csv")).text
        rows = list(csv.reader(io.StringIO(csv_text)))
        blank = rows.index([])
        records, summary = rows[1:blank], rows[blank + 2:]
        async with sessions() as session:
            in_db = (await session.execute(select(UsageRecord.kind, func.sum(UsageRecord.quantity)).where(
                UsageRecord.user_id == ned.id, UsageRecord.occurred_at >= month_start).group_by(UsageRecord.kind))).all()
        for kind, total in in_db:
            assert sum(Decimal(r[2]) for r in records if r[1] == kind) == Decimal(str(total))
            assert [Decimal(r[2]) for r in summary if r[1] == kind] == [Decimal(str(total))]
        amounts = [Decimal(r[5]) for r in summary if r[0] not in ("Total",)]
        assert sum(amounts) == Decimal(summary[-1][5]) == expected / 100
        assert "999" not in csv_text
        assert (await browser.get("/usage/2026-13.csv")).status_code == 404

        assert (await browser.post("/usage/cap", data={"csrf_token": token, "cap": "lots"})).status_code == 400
        assert (await browser.post("/usage/cap", data={"csrf_token": token, "cap": "$5.00"})).status_code == 303
    async with sessions() as session:
        assert (await session.get(User, ned.id)).monthly_cap_cents == 500  # type: ignore[union-attr]
    # Over the cap ($5.51 spent): a call the platform would place becomes a text, saying why.
    plan = await DeliveryActivities(local_carrier.telephony, sessions, settings).open_delivery(
        DeliveryRequest(delivery_id=uuid.uuid4(), user_id=ned.id, channel=Channel.CALL, text="your reminder"), utcnow())
    assert (plan.channel, plan.fallback_reason) == (Channel.SMS, FallbackReason.MONTHLY_CAP)
