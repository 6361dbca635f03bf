"""The calendar and mail tools of the platform MCP server, on both providers' stand-ins (Google
Calendar v3 + Gmail v1, Microsoft Graph), with the user's sealed token used inside the platform:
events listed, added, moved and found free time around; mail searched, read and drafted; cancelling
and sending only after the owner's "YES <ref>" text; an expired token refreshed; a withdrawn grant
told to the user once; clear tool errors. Real PostgreSQL, Temporal and the local carrier."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import httpx2
import pytest
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from activities.integrations.actions import reply_of
from activities.integrations.credentials import Credentials, oauth_client
from activities.integrations.workspaces import workspace_of
from api.workspace_tools import free_slots, moment
from core.integrations import ConnectionState, Provider, provider_config
from core.models import OAuthCredential, User
from core.settings import Settings
from core.serve import serving
from core.timezones import zone_of_user
from emulators.carrier.handset import Handset, handset
from emulators.providers import Providers, create_app
from emulators.providers.oauth import Token
from tests.test_platform_mcp import Mcp, _texts, mcp  # noqa: F401 (the fixture)
from tests.test_provider_standins import VERIFIER, _code
from voice.confirmations import spoken_answer

ACCOUNT = "ann@example.com"


@pytest.fixture
async def providers(mcp: Mcp) -> AsyncIterator[Providers]:  # noqa: F811
    standins = Providers(mcp.settings.api_base_url)
    async with serving(create_app(standins), "127.0.0.1", mcp.settings.providers_port):
        yield standins


async def _connect(mcp: Mcp, provider: Provider) -> None:  # noqa: F811
    """The user connects `provider` (the consent page's code traded as the dashboard's callback does)."""
    config = provider_config(mcp.settings, provider)
    code = await _code(mcp.settings, provider)
    async with oauth_client(mcp.settings, config) as client:
        token = await client.fetch_token(config.token_url, code=code, code_verifier=VERIFIER,
                                         grant_type="authorization_code")
    await Credentials(mcp.settings, mcp.sessions).save(mcp.user.id, provider, dict(token))


async def _standin(mcp: Mcp, provider: Provider) -> dict[str, Any]:  # noqa: F811
    async with httpx.AsyncClient() as http:
        return (await http.get(f"{mcp.settings.providers_url}/control/{provider.value}/{ACCOUNT}")).json()


async def _confirmation(mcp: Mcp, said: str) -> str:  # noqa: F811
    """The reference in the confirmation text the tool's answer quotes (and the owner received)."""
    reference = re.search(r"Reply YES (\d{4})", said)
    assert reference, said
    await _texts(mcp, f"Reply YES {reference[1]}")
    return reference[1]


async def _reply(phone: Handset, mcp: Mcp, words: str, expect: str) -> str:  # noqa: F811
    mark = len(phone.events)
    await phone.text(mcp.number, words)
    return str((await phone.wait_for("sms", lambda e: expect in e["body"], timeout=20, after=mark))["body"])


def _tomorrow_at(mcp: Mcp, hour: int) -> datetime:  # noqa: F811
    zone = ZoneInfo(zone_of_user(mcp.user, mcp.settings.default_time_zone))
    day = datetime.now(zone).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, hour, tzinfo=zone)


@pytest.mark.parametrize("provider", list(Provider))
async def test_the_agent_keeps_the_calendar_and_cancels_only_when_the_owner_says_yes(
        mcp: Mcp, providers: Providers, provider: Provider) -> None:  # noqa: F811
    await _connect(mcp, provider)
    said, failed = await mcp.tool("create_event", title="Lunch with Bob", start="tomorrow 12:00", minutes=60,
                                  location="Cafe Rosa")
    assert not failed and "Lunch with Bob" in said, said
    [event] = (await _standin(mcp, provider))["events"]
    assert datetime.fromisoformat(event["start"]) == _tomorrow_at(mcp, 12)
    assert datetime.fromisoformat(event["end"]) == _tomorrow_at(mcp, 13) and event["location"] == "Cafe Rosa"

    said, failed = await mcp.tool("calendar_events", day="tomorrow")
    assert not failed and "12:00–13:00 Lunch with Bob (at Cafe Rosa)" in said and f"[id {event['id']}]" in said, said
    said, failed = await mcp.tool("find_free_time", day="tomorrow", minutes=60)
    assert not failed and "09:00–12:00" in said and "13:00–18:00" in said, said

    said, failed = await mcp.tool("move_event", id=event["id"], start="tomorrow 3pm")
    assert not failed and "15:00–16:00 Lunch with Bob" in said, said  # it kept its hour
    [moved] = (await _standin(mcp, provider))["events"]
    assert datetime.fromisoformat(moved["start"]) == _tomorrow_at(mcp, 15)

    said, failed = await mcp.tool("cancel_event", id=event["id"])
    assert not failed and said.startswith("Not cancelled yet"), said
    reference = await _confirmation(mcp, said)
    assert (await _standin(mcp, provider))["events"], "nothing is cancelled before the owner says so"
    async with handset(mcp.settings.carrier_url, mcp.user.phone_e164) as phone:
        answer = await _reply(phone, mcp, f"yes {reference}", "Cancelled")
        assert "Lunch with Bob" in answer
        assert not (await _standin(mcp, provider))["events"]
        again = await _reply(phone, mcp, f"YES {reference}", "answered already")
        assert reference in again


@pytest.mark.parametrize("provider", list(Provider))
async def test_mail_is_drafted_by_the_agent_and_sent_only_on_the_owners_yes(
        mcp: Mcp, providers: Providers, provider: Provider) -> None:  # noqa: F811
    await _connect(mcp, provider)
    said, failed = await mcp.tool("search_mail", query="lunch")
    assert not failed and "Bob Lee" in said and "Lunch on Friday?" in said, said
    message_id = re.search(r"\[id ([^\]]+)\]", said)[1]  # type: ignore[index]
    said, failed = await mcp.tool("read_mail", id=message_id)
    assert not failed and "Are we still on for lunch on Friday at noon?" in said and "bob@example.com" in said

    said, failed = await mcp.tool("draft_reply", id=message_id, body="Yes, see you at noon.")
    assert not failed and "not sent" in said, said
    draft_id = re.search(r"\[draft id ([^\]]+)\]", said)[1]  # type: ignore[index]
    state = await _standin(mcp, provider)
    assert [d["to"] for d in state["drafts"]] == ["bob@example.com"] and not state["sent"]
    assert "Yes, see you at noon." in state["drafts"][0]["body"]

    async with handset(mcp.settings.carrier_url, mcp.user.phone_e164) as phone:
        said, failed = await mcp.tool("send_draft", id=draft_id)
        assert not failed and said.startswith("Not sent yet"), said
        declined = await _confirmation(mcp, said)
        assert "Okay, not sent" in await _reply(phone, mcp, f"NO {declined}", "not sent")
        assert not (await _standin(mcp, provider))["sent"]

        said, _ = await mcp.tool("send_draft", id=draft_id)
        reference = await _confirmation(mcp, said)
        answer = await _reply(phone, mcp, f"Yes {reference}", "Sent:")
        assert "bob@example.com" in answer
        [sent] = (await _standin(mcp, provider))["sent"]
        assert sent["to"] == "bob@example.com" and "Yes, see you at noon." in sent["body"]


async def test_an_expired_token_is_refreshed_and_a_withdrawn_grant_is_told_once(
        mcp: Mcp, providers: Providers) -> None:  # noqa: F811
    await _connect(mcp, Provider.GOOGLE)
    async with httpx.AsyncClient() as http:
        await http.post(f"{mcp.settings.providers_url}/control/expire", params={"account": ACCOUNT})
    said, failed = await mcp.tool("calendar_events", day="today")
    assert not failed, said
    assert providers.google_tokens.refreshes[ACCOUNT] == 1, "the refused token was refreshed once, then it worked"

    # The user withdraws consent at Google: the grant is revoked and the access token ends.
    grant = next(iter(providers.google_tokens.by_access.values()))
    providers.google_tokens.revoke_grant(grant)
    said, failed = await mcp.tool("search_mail", query="lunch")
    assert failed and "connect again" in said, said
    await _texts(mcp, "can no longer reach your Google")
    said, failed = await mcp.tool("calendar_events", day="today")
    assert failed and "connect" in said
    await asyncio.sleep(0.5)  # a second notice would have been sent by now (the first took less)
    assert len([t for t in mcp.carrier.texts_to(mcp.user.phone_e164) if "can no longer reach" in t]) == 1
    async with mcp.sessions() as session:
        row = (await session.execute(select(OAuthCredential).where(OAuthCredential.user_id == mcp.user.id))).scalar_one()
    assert row.state == ConnectionState.NEEDS_CONSENT


async def test_what_the_agent_can_act_on_comes_back_as_clear_tool_errors(
        mcp: Mcp, providers: Providers) -> None:  # noqa: F811
    said, failed = await mcp.tool("calendar_events", day="tomorrow")
    assert failed and "has not connected" in said and "/integrations" in said, said
    await _connect(mcp, Provider.OUTLOOK)
    said, failed = await mcp.tool("calendar_events", day="tomorrow", account="google")
    assert failed and "has not connected Google" in said, said
    async with httpx.AsyncClient() as http:
        await http.post(f"{mcp.settings.providers_url}/control/outlook/{ACCOUNT}/rate-limit", params={"calls": 1})
    said, failed = await mcp.tool("calendar_events", day="tomorrow")
    assert failed and "rate limited" in said, said
    said, failed = await mcp.tool("read_mail", id="AAMk-nothing")
    assert failed and "no such message" in said, said
    said, failed = await mcp.tool("find_free_time", start="2020-01-06T09:00", end="2020-01-06T17:00")
    assert not failed and said.startswith("That time is over"), said
    said, failed = await mcp.tool("create_event", title="x", start="next blursday")
    assert failed and "ISO 8601" in said, said
    said, failed = await mcp.tool("send_draft", id="../../etc")
    assert failed and "id" in said, said


def test_times_are_the_users_own_and_free_time_is_the_gaps() -> None:
    now = datetime(2026, 12, 6, 20, 0, tzinfo=UTC)
    assert moment("tomorrow 3pm", "America/New_York", now, "start") == datetime(
        2026, 12, 7, 15, 0, tzinfo=ZoneInfo("America/New_York"))
    assert moment("2026-12-08 noon", "Europe/Paris", now, "start").hour == 12
    assert moment("2026-12-08T09:30:00+00:00", "Europe/Paris", now, "start").utcoffset() == timedelta(0)
    day = datetime(2026, 12, 7, 9, tzinfo=UTC)
    busy = [(day.replace(hour=10), day.replace(hour=11)), (day.replace(hour=10, minute=30), day.replace(hour=12))]
    assert free_slots(day, day.replace(hour=13), busy, timedelta(minutes=60)) == [
        (day, day.replace(hour=10)), (day.replace(hour=12), day.replace(hour=13))]
    assert free_slots(day, day.replace(hour=13), busy, timedelta(minutes=61)) == []


def test_only_a_yes_or_no_with_a_reference_is_a_confirmation() -> None:
    assert reply_of("YES 4821") == reply_of("yes 4821.") == reply_of("Send #4821")
    assert reply_of("no 4821") is not None and not reply_of("no 4821").yes  # type: ignore[union-attr]
    for words in ("yes", "yes please send it", "4821", "yes 48211", "remember 4821"):
        assert reply_of(words) is None, words


def test_a_spoken_answer_is_heard_only_when_it_is_a_plain_yes_or_no() -> None:
    for words in ("Yes.", "yeah, go ahead", "sure", "yes cancel it", "Okay send it"):
        assert spoken_answer(words) is True, words
    for words in ("No.", "no, don't send it", "wait", "not yet"):
        assert spoken_answer(words) is False, words
    for words in ("what's on my calendar", "", "yes I think we should talk about the budget first"):
        assert spoken_answer(words) is None, words


REAL_HOSTS = {"www.googleapis.com": "/google", "gmail.googleapis.com": "/google", "graph.microsoft.com": "/graph"}


class RealHostsToStandins(httpx2.AsyncBaseTransport):
    """Requests the adapters address to the real providers, answered by the stand-ins (in process):
    what was asked of which real host is recorded; any other host fails the test."""

    def __init__(self, providers: Providers) -> None:
        self.inner = httpx2.ASGITransport(create_app(providers))
        self.seen: list[tuple[str, str, str]] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        host = request.url.host
        assert host in REAL_HOSTS, f"a request to {host}"
        assert request.url.scheme == "https"
        self.seen.append((request.method, host, request.url.path))
        request.url = request.url.copy_with(scheme="http", host="standin", path=REAL_HOSTS[host] + request.url.path)
        return await self.inner.handle_async_request(request)


@pytest.mark.parametrize("provider", list(Provider))
async def test_with_real_client_ids_the_adapters_ask_the_real_apis(
        settings: Settings, sessions: async_sessionmaker[AsyncSession], provider: Provider) -> None:
    real = settings.model_copy(update={"google_client_id": "g-id", "google_client_secret": SecretStr("g-secret"),
                                       "microsoft_client_id": "m-id", "microsoft_client_secret": SecretStr("m-s")})
    standins = Providers("https://deepclaw.example")
    tokens = standins.google_tokens if provider == Provider.GOOGLE else standins.outlook_tokens
    scope = provider_config(real, provider).scope
    tokens.by_access["at-real"] = Token("at-real", "rt-real", "g-id", ACCOUNT, scope, time.time() + 3600)
    user = User(phone_e164=f"+1555{uuid.uuid4().int % 10**7:07d}")
    async with sessions() as session, session.begin():
        session.add(user)
    transport = RealHostsToStandins(standins)
    credentials = Credentials(real, sessions, transport=transport)
    await credentials.save(user.id, provider, {"access_token": "at-real", "refresh_token": "rt-real",
                                               "token_type": "Bearer", "expires_at": int(time.time()) + 3600})
    workspace = workspace_of(credentials, user.id, provider)
    start = datetime(2026, 12, 7, 12, tzinfo=UTC)
    event = await workspace.create_event("Lunch", start, start + timedelta(hours=1), "Cafe")
    assert [e.title for e in await workspace.events(start - timedelta(hours=1), start + timedelta(hours=3))] == ["Lunch"]
    assert await workspace.busy(start - timedelta(hours=1), start + timedelta(hours=3)) == [
        (start, start + timedelta(hours=1))]
    [found] = await workspace.search_mail("lunch", 5)
    assert "Are we still on" in (await workspace.read_mail(found.id)).body
    draft = await workspace.draft_reply(found.id, "See you then.")
    assert "bob@example.com" in (await workspace.draft(draft.id)).to
    await workspace.send_draft(draft.id)
    await workspace.cancel_event(event.id)

    asked = {(method, host, re.sub(r"/(?=[A-Za-z_-]*\d)[A-Za-z0-9_-]{12,}(?=/|$)", "/{id}", path))
             for method, host, path in transport.seen}
    if provider == Provider.GOOGLE:
        calendar, gmail = "www.googleapis.com", "gmail.googleapis.com"
        assert asked == {
            ("POST", calendar, "/calendar/v3/calendars/primary/events"),
            ("GET", calendar, "/calendar/v3/calendars/primary/events"),
            ("POST", calendar, "/calendar/v3/freeBusy"),
            ("DELETE", calendar, "/calendar/v3/calendars/primary/events/{id}"),
            ("GET", gmail, "/gmail/v1/users/me/messages"), ("GET", gmail, "/gmail/v1/users/me/messages/{id}"),
            ("POST", gmail, "/gmail/v1/users/me/drafts"), ("GET", gmail, "/gmail/v1/users/me/drafts/{id}"),
            ("POST", gmail, "/gmail/v1/users/me/drafts/send")}, asked
    else:
        graph = "graph.microsoft.com"
        assert asked == {
            ("POST", graph, "/v1.0/me/events"), ("GET", graph, "/v1.0/me/calendarView"),
            ("DELETE", graph, "/v1.0/me/events/{id}"), ("GET", graph, "/v1.0/me/messages"),
            ("GET", graph, "/v1.0/me/messages/{id}"), ("POST", graph, "/v1.0/me/messages/{id}/createReply"),
            ("POST", graph, "/v1.0/me/messages/{id}/send")}, asked
    state = await _account_state(standins, provider)
    assert [m.to for m in state.sent] == ["bob@example.com"] and not [e for e in state.events.values()
                                                                     if not e.cancelled]


async def _account_state(standins: Providers, provider: Provider) -> Any:
    return (standins.google_accounts if provider == Provider.GOOGLE else standins.outlook_accounts)[ACCOUNT]
