"""The platform MCP server (api/routes/mcp.py, on the mcp SDK) and ReminderWorkflow, against real Temporal (dev server,
real time: reminders due in a second or two), real PostgreSQL and the local carrier."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker

from activities.delivery import DeliveryActivities
from activities.reminders import ReminderActivities
from activities.runtime.activities import RuntimeActivities
from api.app import create_app
from core.callbacks import (
    PLATFORM_MCP_NAME,
    agent_mcp_servers,
    current_platform_mcp_server,
    platform_mcp_server,
    revoke_mcp_tokens,
)
from core.streams import seal_think_token
from core.tokens import TokenKind
from core.models import Delivery, McpServer, PhoneNumber, Reminder, User
from core.ports import AgentSpec, McpServerSpec
from core.process import free_port
from core.serve import serving
from core.settings import Settings
from emulators import search
from emulators.carrier.handset import handset
from emulators.demo_model import answer_words
from tests.conftest import LocalCarrier, unique_area_code
from tests.memory_runtime import MemoryRuntime
from workflows.delivery import DeliveryWorkflow
from workflows.reminder import ReminderWorkflow


ACCEPT = {"Accept": "application/json, text/event-stream"}  # what a streamable HTTP client sends


@dataclass
class Mcp:
    url: str
    headers: dict[str, str]
    user: User
    number: str
    carrier: LocalCarrier
    sessions: async_sessionmaker[AsyncSession]
    app: Any
    agent: PhrasingAgent
    settings: Settings

    async def rpc(self, method: str, params: dict[str, Any] | None = None, **extra: Any) -> httpx.Response:
        """JSON-RPC on the wire, as OpenClaw's client sends it."""
        async with httpx.AsyncClient(timeout=30) as http:
            return await http.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}},
                                   headers={**ACCEPT, **self.headers, **extra})

    async def tool(self, name: str, **arguments: Any) -> tuple[str, bool]:
        result = (await self.rpc("tools/call", {"name": name, "arguments": arguments})).json()["result"]
        return result["content"][0]["text"], result["isError"]


class PhrasingAgent:
    """The user's agent as ReminderActivities asks it (AgentChat's real path is driven end to end in
    tests/voice): answers as the demo model does, after `delay` seconds."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.asked: list[str] = []

    async def ask(self, user_id: uuid.UUID, messages: list[dict[str, Any]], *, session_key: str) -> str:
        self.asked.append(messages[-1]["content"])
        await asyncio.sleep(self.delay)
        return answer_words(messages[-1]["content"], [], on_a_call=False).text


@pytest.fixture
async def mcp(settings: Settings, sessions: async_sessionmaker[AsyncSession], local_carrier: LocalCarrier,
              temporal_env: WorkflowEnvironment) -> AsyncIterator[Mcp]:
    settings = settings.model_copy(update={"api_port": free_port(), "carrier_port": local_carrier.port,
                                           "search_port": free_port(), "providers_port": free_port(),
                                           "call_ring_timeout_s": 5})
    telephony = local_carrier.telephony
    [number] = await telephony.search_numbers(area_code=unique_area_code(), limit=1)
    owned = await telephony.buy_number(number, voice_url=f"{settings.api_base_url}/twilio/voice",
                                       sms_url=f"{settings.api_base_url}/twilio/sms")
    user = User(phone_e164=f"+1555{uuid.uuid4().int % 10**7:07d}", agent_name="Nova")
    async with sessions() as session, session.begin():
        session.add(user)
        await session.flush()
        session.add(PhoneNumber(e164=owned.e164, provider_sid=owned.sid, state="assigned", user_id=user.id))
    server = platform_mcp_server(settings, user.id)
    agent = PhrasingAgent()
    async with Worker(temporal_env.client, task_queue=settings.temporal_task_queue,
                      workflows=[ReminderWorkflow, DeliveryWorkflow],
                      activities=[*ReminderActivities(sessions, agent).all(),
                                  *DeliveryActivities(telephony, sessions, settings).all()]):
        app = create_app(settings)
        async with serving(app, "127.0.0.1", settings.api_port), \
                   serving(search.create_app(), "127.0.0.1", settings.search_port):
            yield Mcp(server.url, server.headers, user, owned.e164, local_carrier, sessions, app, agent, settings)


async def _texts(mcp: Mcp, containing: str, timeout: float = 20) -> list[str]:
    for _ in range(int(timeout * 10)):
        if found := [t for t in mcp.carrier.texts_to(mcp.user.phone_e164) if containing in t]:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"no text containing {containing!r}; texts: {mcp.carrier.texts_to(mcp.user.phone_e164)}")


async def _calls(mcp: Mcp, count: int, timeout: float = 20) -> list[Any]:
    """The calls placed to the user, once there are `count` of them."""
    for _ in range(int(timeout * 10)):
        placed = [c for c in mcp.carrier.carrier.calls.values() if c.to == mcp.user.phone_e164]
        if len(placed) >= count:
            return placed
        await asyncio.sleep(0.1)
    raise AssertionError(f"{len(placed)} calls to the user, not {count}")


async def _state(mcp: Mcp, reminder_id: uuid.UUID, expected: str, timeout: float = 20) -> bool:
    for _ in range(int(timeout * 10)):
        async with mcp.sessions() as session:
            if (await session.get(Reminder, reminder_id)).state == expected:  # type: ignore[union-attr]
                return True
        await asyncio.sleep(0.1)
    raise AssertionError(f"reminder {reminder_id} never became {expected}")


async def test_the_agent_sets_lists_and_cancels_reminders_and_reaches_its_user(mcp: Mcp) -> None:
    initialized = (await mcp.rpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                                "clientInfo": {"name": "openclaw", "version": "x"}})).json()
    assert initialized["result"]["protocolVersion"] == "2025-06-18"
    assert initialized["result"]["capabilities"]["tools"] is not None
    async with httpx.AsyncClient() as http:
        note = await http.post(mcp.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                               headers=mcp.headers)
    assert note.status_code == 202
    tools = {t["name"]: t for t in (await mcp.rpc("tools/list")).json()["result"]["tools"]}
    assert tools.keys() == {"schedule_reminder", "list_reminders", "reschedule_reminder", "cancel_reminder", "send_sms",
                            "call_me", "web_search", "calendar_events", "create_event", "move_event", "cancel_event",
                            "find_free_time", "search_mail", "read_mail", "draft_reply", "send_draft"}
    # The schemas come from the typed signatures: the model sees each field's type, rule and default.
    schedule = tools["schedule_reminder"]["inputSchema"]
    assert schedule["required"] == ["text"] and schedule["properties"]["text"]["maxLength"] == 480
    assert schedule["properties"]["channel"]["enum"] == ["sms", "call"]
    assert schedule["properties"]["channel"]["default"] == "sms"
    count = tools["web_search"]["inputSchema"]["properties"]["count"]
    assert (count["minimum"], count["maximum"], count["default"]) == (1, 10, 5)
    assert tools["send_sms"]["description"] == "Text the user now, from your number."

    # Due in about a second: a durable timer in ReminderWorkflow, then a text from the user's number.
    said, failed = await mcp.tool("schedule_reminder", text="take the pasta off", in_minutes=0.02)
    assert not failed and "Reminder" in said
    assert await _texts(mcp, "Hi! Here's your reminder: take the pasta off.")  # in the agent's words
    fired_id = uuid.UUID(re.findall(r"Reminder ([0-9a-f-]{36}) set", said)[0])
    assert await _state(mcp, fired_id, "fired")

    later, failed = await mcp.tool("schedule_reminder", text="call mum", in_minutes=600, channel="call")
    assert not failed, later
    listed, _ = await mcp.tool("list_reminders")
    assert "call mum" in listed and "pasta" not in listed, "fired reminders are not listed"
    later_id = re.findall(r"Reminder ([0-9a-f-]{36}) set", later)[0]
    cancelled, failed = await mcp.tool("cancel_reminder", id=later_id)
    assert not failed and "cancelled" in cancelled
    assert (await mcp.tool("cancel_reminder", id=later_id))[1], "cancelling twice is refused"
    assert (await mcp.tool("cancel_reminder", id=str(fired_id)))[1], "a fired reminder cannot be cancelled"
    assert await _state(mcp, uuid.UUID(later_id), "cancelled")

    # By call: the user's phone rings from their number (their agent opens with the reminder).
    said, failed = await mcp.tool("schedule_reminder", text="leave for the airport", in_minutes=0.02, channel="call")
    assert not failed, said
    await _state(mcp, uuid.UUID(re.findall(r"Reminder ([0-9a-f-]{36}) set", said)[0]), "fired")
    rung = [c for c in mcp.carrier.carrier.calls.values() if c.to == mcp.user.phone_e164]
    assert len(rung) == 1 and rung[0].from_ == mcp.number

    said, failed = await mcp.tool("send_sms", text="Your report is ready.")
    assert not failed
    assert await _texts(mcp, "Your report is ready.")
    said, failed = await mcp.tool("call_me", greeting="Hi, it's Nova: the report is done.", reason="report done")
    assert not failed and "Calling" in said
    placed = await _calls(mcp, 2)
    assert len(placed) == 2 and placed[-1].from_ == mcp.number


async def test_the_agent_searches_the_web_with_no_key(mcp: Mcp) -> None:
    found, failed = await mcp.tool("web_search", query="temporal durable execution", count=2)
    assert not failed
    assert found.startswith("1. Temporal — durable execution\n   https://temporal.io/\n   Temporal keeps"), found
    assert "ads.example" not in found and found.count("\n") == 5  # two results, three lines each
    nothing, failed = await mcp.tool("web_search", query="qqqq zzzz")
    assert not failed and nothing == "No results for 'qqqq zzzz'."


async def test_a_failing_search_provider_is_explained_to_the_agent(mcp: Mcp) -> None:
    mcp.app.state.platform.web_search.url = f"http://127.0.0.1:{free_port()}/html/"
    text, failed = await mcp.tool("web_search", query="anything")
    assert failed and "web search is unavailable right now" in text, text


@pytest.mark.parametrize(("name", "arguments", "says"), [
    ("schedule_reminder", {"text": "x"}, "say when"),
    ("schedule_reminder", {"text": "x", "at": "tomorrow at nine"}, "ISO 8601"),
    ("schedule_reminder", {"text": "x", "at": "2001-01-01T09:00"}, "in the past (it is 20"),
    ("schedule_reminder", {"text": "x", "in_minutes": 10, "every": "fortnightly-ish"}, "'every': say daily, weekdays"),
    ("schedule_reminder", {"text": "x", "in_minutes": 10, "every": "FREQ=MINUTELY"}, "at most hourly"),
    ("reschedule_reminder", {"id": str(uuid.uuid4()), "in_minutes": 5}, "no reminder"),
    ("schedule_reminder", {"text": "x", "at": "2001-01-01T09:00:00Z"}, "in the past"),
    ("schedule_reminder", {"text": "x", "in_minutes": 10, "channel": "pigeon"}, "'channel': Input should be 'sms' or 'call'"),
    ("schedule_reminder", {"text": "x", "at": "2099-01-01T09:00:00Z"}, "a year ahead"),
    ("schedule_reminder", {"text": "", "in_minutes": 10}, "'text' is required"),
    ("cancel_reminder", {"id": "not-an-id"}, "must be a reminder id"),
    ("cancel_reminder", {"id": str(uuid.uuid4())}, "no reminder"),
    ("send_sms", {"text": "y" * 1000}, "'text': String should have at most 480 characters"),
    ("order_pizza", {}, "unknown tool 'order_pizza'; the tools are schedule_reminder"),
    ("web_search", {}, "'query': Field required"),
    ("web_search", {"query": " "}, "'query' is required"),
    ("web_search", {"query": "temporal", "count": 50}, "'count': Input should be less than or equal to 10"),
    ("web_search", {"query": "temporal", "count": "three"}, "'count': Input should be a valid integer"),
])
async def test_bad_tool_calls_are_answered_with_the_reason(mcp: Mcp, name: str, arguments: dict[str, Any],
                                                          says: str) -> None:
    text, failed = await mcp.tool(name, **arguments)
    assert failed and says in text, text
    assert "pydantic" not in text and len(text) < 200, "a short reason the model can act on"


async def test_only_the_users_own_token_is_accepted(mcp: Mcp) -> None:
    async with httpx.AsyncClient() as http:
        assert (await http.post(mcp.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})).status_code == 401
        forged = {"Authorization": "Bearer forged.token"}
        assert (await http.post(mcp.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                                headers=forged)).status_code == 401
        garbled = await http.post(mcp.url, content=b"[not json", headers={
            **ACCEPT, **mcp.headers, "Content-Type": "application/json"})
        assert garbled.json()["error"]["code"] == -32700, garbled.text  # JSON-RPC's parse error
        huge = await http.post(mcp.url, content=b" " * 100_000, headers={
            **ACCEPT, **mcp.headers, "Content-Type": "application/json"})
        assert huge.status_code == 413, huge.text
    assert (await mcp.rpc("pizza/order")).json()["error"]["code"] == -32601


async def test_every_agent_is_given_the_platform_server_first_then_the_users_own_through_the_relay(
        settings: Settings, sessions: async_sessionmaker[AsyncSession], tmp_path: Any) -> None:
    from activities.archive.stores import FolderArchiveStore

    runtime = MemoryRuntime()
    activities = RuntimeActivities(runtime, FolderArchiveStore(tmp_path), sessions, "local",
                                   mcp_servers=lambda user_id: agent_mcp_servers(settings, sessions, user_id))
    user = User(phone_e164=f"+1555{uuid.uuid4().int % 10**7:07d}")
    notes = McpServer(user_id=user.id, name="notes", url="https://notes.example.com/mcp", status="ok")
    async with sessions() as session, session.begin():
        session.add(user)
        await session.flush()
        session.add_all([notes, McpServer(user_id=user.id, name="broken", url="https://x.example.com/mcp",
                                          status="failing")])
    smuggled = McpServerSpec(name="evil", url="https://evil.example/mcp")  # a spec's own list is not trusted
    spec = AgentSpec(user_id=user.id, mcp_servers=[smuggled])
    await ActivityEnvironment().run(activities.create_agent, spec)
    rendered = runtime.specs[spec.user_id].mcp_servers
    assert [s.name for s in rendered] == [PLATFORM_MCP_NAME, "notes"], "a failing server is left out"
    assert rendered[0].url == f"{settings.api_base_url}/mcp"
    assert rendered[0].headers["Authorization"].startswith("Bearer ")
    assert rendered[1].url == f"{settings.api_base_url}/mcp-relay/{notes.id}"
    assert rendered[1].headers == rendered[0].headers, "the agent's own token; the server's headers stay with us"


async def test_an_agent_cannot_flood_its_user(mcp: Mcp) -> None:
    """A model stuck in a tool loop: 20 send_sms at once send the burst limit's 3 texts, and the agent is
    told why the rest were not sent. Reminders the user asked for still arrive."""
    results = await asyncio.gather(*(mcp.tool("send_sms", text=f"update {n}") for n in range(20)))
    sent = [text for text, failed in results if not failed]
    refused = [text for text, failed in results if failed]
    assert len(sent) == 3, results
    assert all("limit reached (3 sms per minute)" in text and "try again after" in text for text in refused), refused
    for _ in range(30):  # the carrier delivers them; no more follow
        if len([t for t in mcp.carrier.texts_to(mcp.user.phone_e164) if t.startswith("update ")]) == 3:
            break
        await asyncio.sleep(0.1)
    assert len([t for t in mcp.carrier.texts_to(mcp.user.phone_e164) if t.startswith("update ")]) == 3

    said, failed = await mcp.tool("schedule_reminder", text="stretch", in_minutes=0.01)
    assert not failed, said
    assert await _texts(mcp, "your reminder: stretch"), "a reminder the user asked for is not limited"

    called, failed = await mcp.tool("call_me", greeting="Hi, it's Nova.", reason="the report")
    assert not failed, called
    again, failed = await mcp.tool("call_me", greeting="Hi again, it's Nova.", reason="the report")
    assert failed and "limit reached (1 call per minute)" in again, again
    assert len(await _calls(mcp, 1)) == 1


async def test_mcp_tokens_are_revoked_per_user_and_of_their_own_kind(mcp: Mcp, settings: Settings) -> None:
    async def tools_list(headers: dict[str, str]) -> int:
        async with httpx.AsyncClient() as http:
            return (await http.post(mcp.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                                    headers=headers)).status_code

    assert await tools_list(mcp.headers) == 200
    # A token of another kind (a think URL's, for this very user) opens nothing here.
    think = seal_think_token(settings.keyring, TokenKind.THINK, uuid.uuid4(), call_sid="CA1", ttl_s=60,
                             user=str(mcp.user.id))
    assert await tools_list({"Authorization": f"Bearer {think}"}) == 401
    generation = await revoke_mcp_tokens(mcp.sessions, mcp.user.id)
    assert generation == 1
    assert await tools_list(mcp.headers) == 401, "the agent's old token is revoked"
    fresh = await current_platform_mcp_server(settings, mcp.sessions, mcp.user.id)
    assert await tools_list(fresh.headers) == 200


# ---- reaching the user: durable delivery -------------------------------------------------------

async def _delivery(mcp: Mcp, timeout: float = 30, **where: Any) -> Delivery:
    """The user's delivery matching `where`, once it has ended."""
    for _ in range(int(timeout * 10)):
        async with mcp.sessions() as session:
            rows = (await session.scalars(select(Delivery).where(Delivery.user_id == mcp.user.id).filter_by(**where)
                                          .order_by(Delivery.created_at))).all()
        if rows and rows[-1].outcome != "pending":
            return rows[-1]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no finished delivery {where} for the user")


def _reminder_id(said: str) -> uuid.UUID:
    return uuid.UUID(re.findall(r"Reminder ([0-9a-f-]{36}) set", said)[0])


@pytest.mark.parametrize(("when_called", "status", "reason"), [
    ("no-answer", "no-answer", "no-answer"),
    ("busy", "busy", "busy"),
    ("voicemail", "completed", "voicemail"),
])
async def test_a_reminder_call_that_does_not_reach_the_user_becomes_a_text(
        mcp: Mcp, when_called: str, status: str, reason: str) -> None:
    async with handset(f"http://127.0.0.1:{mcp.carrier.port}", mcp.user.phone_e164, when_called=when_called) as phone:
        said, failed = await mcp.tool("schedule_reminder", text="feed the cat", in_minutes=0.02, channel="call")
        assert not failed, said
        text = await phone.wait_for("sms", lambda e: "feed the cat" in e["body"], timeout=30)
        assert text["from"] == mcp.number
        assert text["body"] == "Hi! Here's your reminder: feed the cat. (I tried to call.)"
        delivery = await _delivery(mcp, reminder_id=_reminder_id(said))
        assert (delivery.outcome, delivery.fallback_reason, delivery.channel) == ("texted", reason, "sms")
        assert delivery.call_sid and delivery.message_sid
        assert await _state(mcp, _reminder_id(said), "fired")
        [call] = await _calls(mcp, 1)
        assert call.status == status and call.from_ == mcp.number
        if when_called == "voicemail":  # the platform hung up on the machine: nothing was left on it
            assert call.answered_by == "machine_start" and call.transcript == []


async def test_calls_in_the_users_quiet_hours_are_texts(mcp: Mcp) -> None:
    now = datetime.now(ZoneInfo("America/New_York"))  # the zone of a +1555 number: the platform default
    async with mcp.sessions() as session, session.begin():
        user = await session.get(User, mcp.user.id)
        assert user is not None
        user.quiet_from = (now - timedelta(hours=1)).time().replace(microsecond=0)
        user.quiet_until = (now + timedelta(hours=1)).time().replace(microsecond=0)
    said, failed = await mcp.tool("call_me", greeting="Hi, it's Nova: the report is done.")
    assert not failed and "quiet hours" in said, said
    assert await _texts(mcp, "Hi, it's Nova: the report is done. (I tried to call you.)")
    delivery = await _delivery(mcp, requested="call")
    assert (delivery.outcome, delivery.fallback_reason, delivery.call_sid) == ("texted", "quiet-hours", None)
    assert not [c for c in mcp.carrier.carrier.calls.values() if c.to == mcp.user.phone_e164], "no call was placed"


async def test_a_plain_reminder_when_the_agent_is_not_ready_in_time(mcp: Mcp) -> None:
    mcp.agent.delay = 30.0
    said, failed = await mcp.tool("schedule_reminder", text="take the bins out", in_minutes=0.02)
    assert not failed, said
    assert await _texts(mcp, "Reminder: take the bins out")
    assert mcp.agent.asked and "«take the bins out»" in mcp.agent.asked[0], "the agent was asked first"


async def test_reminders_are_moved_and_cancelled_by_update(mcp: Mcp) -> None:
    said, failed = await mcp.tool("schedule_reminder", text="water the plants", at="2099-06-01T09:00")
    assert failed, "more than a year ahead"
    tomorrow = (datetime.now(ZoneInfo("America/New_York")) + timedelta(days=1)).replace(hour=9, minute=0)
    said, failed = await mcp.tool("schedule_reminder", text="water the plants", at=tomorrow.strftime("%Y-%m-%dT%H:%M"),
                                  every="weekdays")
    assert not failed, said
    assert f"at {tomorrow:%Y-%m-%dT09:00}-0" in said and "repeating weekdays" in said, "09:00 in the user's zone"
    reminder_id = _reminder_id(said)
    async with mcp.sessions() as session:
        row = await session.get(Reminder, reminder_id)
    assert row is not None and row.recurrence == "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR"
    assert row.time_zone == "America/New_York" and row.due_at == tomorrow.replace(second=0, microsecond=0)
    listed, _ = await mcp.tool("list_reminders")
    assert f"{reminder_id} — {tomorrow:%Y-%m-%dT09:00}" in listed and "sms, weekdays — water the plants" in listed

    moved, failed = await mcp.tool("reschedule_reminder", id=str(reminder_id), in_minutes=0.02)
    assert not failed and "moved to" in moved, moved
    assert await _texts(mcp, "your reminder: water the plants"), "it fired at its new time"
    # A repeating reminder goes on: its next occurrence (a weekday at 09:00, counted from the first).
    for _ in range(100):
        async with mcp.sessions() as session:
            row = await session.get(Reminder, reminder_id)
        if row is not None and row.occurrences == 1:
            break
        await asyncio.sleep(0.1)
    assert row is not None and row.occurrences == 1 and row.state == "scheduled"
    local_next = row.due_at.astimezone(ZoneInfo("America/New_York"))
    assert (local_next.hour, local_next.minute) == (9, 0) and local_next.weekday() < 5 and local_next > tomorrow

    cancelled, failed = await mcp.tool("cancel_reminder", id=str(reminder_id))
    assert not failed and "cancelled" in cancelled, cancelled
    assert await _state(mcp, reminder_id, "cancelled")
    again, failed = await mcp.tool("reschedule_reminder", id=str(reminder_id), in_minutes=5)
    assert failed and "has already cancelled" in again


async def test_scheduling_while_temporal_is_unreachable_leaves_nothing_behind(mcp: Mcp) -> None:
    link = mcp.app.state.platform.temporal
    real = link.client
    # A server that refuses every call (no such namespace) stands for one that cannot be reached.
    link.client = await Client.connect(real.service_client.config.target_host, namespace=f"gone-{uuid.uuid4().hex[:6]}",
                                       data_converter=real.data_converter)
    try:
        said, failed = await mcp.tool("schedule_reminder", text="renew the passport", in_minutes=30)
        assert failed and "scheduler is unreachable" in said and "nothing was done" in said, said
        sent, failed = await mcp.tool("send_sms", text="hello")
        assert failed and "scheduler is unreachable" in sent, sent
        link.client = None
        said, failed = await mcp.tool("schedule_reminder", text="renew the passport", in_minutes=30)
        assert failed and "scheduler is unreachable" in said, said
    finally:
        link.client = real
    async with mcp.sessions() as session:
        orphans = (await session.scalars(select(Reminder).where(Reminder.user_id == mcp.user.id))).all()
    assert orphans == [], "no reminder row without its workflow"
