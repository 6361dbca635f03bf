"""Integrations on a whole local platform: connecting Google and Microsoft in a real headless Chromium
through the local OAuth servers (authorization code + PKCE, the consent page clicked), the tokens
kept only as ciphertext (no token in any table, log line or the user's Temporal history), and
disconnecting revokes the grant at the provider."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from playwright.async_api import Browser, Page, expect
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.testing import WorkflowEnvironment

from api.sign_in import SESSION_COOKIE, open_session
from core.integrations import GOOGLE_SCOPES
from core.models import AuditEvent, OAuthCredential
from emulators.carrier.handset import Handset, handset
from emulators.llm import ModelScript, ScriptedReply
from tests.test_user_mcp_servers import SECRET, tool_server  # noqa: F401 (the fixture)
from tests.voice.conftest import PHONE, UserOnPlatform, shots
from workflows.agent_lifecycle import AgentLifecycleWorkflow
from workflows.agent_lifecycle import workflow_id as lifecycle_id

ACCOUNT = "ann@example.com"


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextmanager
def _every_log_line() -> Iterator[list[str]]:
    """Every line the platform's processes (in this test process) log meanwhile, at INFO and up."""
    handler, root = _Lines(), logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(min(level, logging.INFO) if level else logging.INFO)
    try:
        yield handler.lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def _signed_in_page(browser: Browser, me: UserOnPlatform, sessions: async_sessionmaker[AsyncSession]) -> Page:
    """A browser signed in as the user (signing in itself has its own browser test)."""
    cookie = await open_session(me.settings, sessions, user_id=me.user.id, operator=None, user_agent="test")
    context = await browser.new_context(viewport=PHONE)
    await context.add_cookies([{"name": SESSION_COOKIE, "value": cookie, "url": me.settings.api_base_url}])
    page = await context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    return page


async def _standin(me: UserOnPlatform, path: str, **params: str) -> object:
    async with httpx.AsyncClient(base_url=me.settings.providers_url) as http:
        return (await http.get(path, params=params)).json()


async def _connect(page: Page, provider: str, *, allow: bool = True) -> None:
    await page.click(f"#connect-{provider}")
    await expect(page.locator("h1")).to_contain_text("local stand-in")
    await page.fill("input[name=account]", ACCOUNT)
    await page.click(f"button[value={'allow' if allow else 'deny'}]")


async def _everything_stored(sessions: async_sessionmaker[AsyncSession]) -> str:
    """Every row of every table, as text (binary columns in hex)."""
    async with sessions() as session:
        tables = (await session.execute(text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))).scalars().all()
        rows = [str(row) for table in tables for row in (await session.execute(text(f'SELECT t::text FROM "{table}" t'))).scalars()]
    return "\n".join(rows)


async def _history_of(temporal_env: WorkflowEnvironment, user_id: object) -> bytes:
    """The raw history events of every workflow of the user."""
    client = temporal_env.client
    raw = b""
    async for execution in client.list_workflows(f"UserId = '{user_id}'"):
        history = await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
        raw += history.to_json().encode()
    return raw


async def _greeted(phone: Handset) -> None:
    """The agent's greeting, whichever it is: the shared user's calls open with the greeting their
    agent prepared at the end of the last call."""
    await phone.wait_for("caption", lambda e: e["role"] == "agent", timeout=60)


async def _ask(phone: Handset, words: str, answer: str, timeout: float = 60) -> None:
    """The caller says `words`; the agent's caption with `answer` follows (else the timeline, failing)."""
    mark = len(phone.events)
    await phone.say(words)
    try:
        await phone.wait_for("caption", lambda e: e["role"] == "agent" and answer in e["text"], after=mark,
                             timeout=timeout)
    except TimeoutError:
        said = [(e["role"], e["text"]) for e in phone.events if e["type"] == "caption"]
        raise AssertionError(f"no caption {answer!r}; the timeline: {said[-6:]}") from None


async def _agent_uses_the_calendar_and_mail(me: UserOnPlatform) -> None:
    """On a call, the user's real OpenClaw calls the platform's calendar and mail tools (the demo
    model's plain words); the event and the draft appear at the provider, and the mail is sent only
    after the owner's own "yes" on the call, which the platform hears (a text asks too)."""
    async with handset(me.settings.carrier_url, me.user.phone_e164) as phone:
        await phone.dial(me.number)
        await _greeted(phone)

        async def ask(words: str, answer: str, timeout: float = 60) -> None:
            await _ask(phone, words, answer, timeout)

        await ask("add lunch with Bob to my calendar tomorrow at noon", "Done, it's on your calendar", timeout=180)
        calendar = await _standin(me, f"/control/google/{ACCOUNT}")
        assert [e["title"] for e in calendar["events"]] == ["lunch with Bob"]  # type: ignore[index]
        await ask("what's on my calendar tomorrow?", "Tomorrow you have 1 event: 12:00–13:00 lunch with Bob")
        await ask("draft a reply to Bob saying see you at noon", "I drafted a reply to Bob Lee")
        mail = await _standin(me, f"/control/google/{ACCOUNT}")
        assert [d["to"] for d in mail["drafts"]] == ["bob@example.com"] and not mail["sent"]  # type: ignore[index]
        await ask("send it", "Shall I send the mail “Re: Lunch on Friday?” to bob@example.com? Say yes or no.")
        asked = await phone.wait_for("sms", lambda e: "Reply YES" in e["body"], timeout=30)  # the text route too
        assert "Re: Lunch on Friday?" in asked["body"] and asked["from"] == me.number
        assert not (await _standin(me, f"/control/google/{ACCOUNT}"))["sent"]  # type: ignore[index]
        await ask("yes", "Sent: the mail “Re: Lunch on Friday?”")  # heard by the platform, not the agent
        [sent] = (await _standin(me, f"/control/google/{ACCOUNT}"))["sent"]  # type: ignore[index]
        assert sent["to"] == "bob@example.com" and "see you at noon" in sent["body"]
        reference = re.search(r"Reply YES (\d{4})", asked["body"])[1]  # type: ignore[index]
        mark = len(phone.events)
        await phone.text(me.number, f"YES {reference}")  # the text's answer comes too late: said so, sent once
        await phone.wait_for("sms", lambda e: "answered already" in e["body"], after=mark, timeout=30)
        assert len((await _standin(me, f"/control/google/{ACCOUNT}"))["sent"]) == 1  # type: ignore[index,arg-type]
        await phone.hangup()


async def test_connect_google_and_microsoft_with_pkce_tokens_only_sealed_and_disconnect_revokes(
    browser: Browser, shared_user: UserOnPlatform, sessions: async_sessionmaker[AsyncSession],
    temporal_env: WorkflowEnvironment, screenshots: Path,
) -> None:
    """On the session's shared user: it ends with both providers disconnected again."""
    me = shared_user
    page = await _signed_in_page(browser, me, sessions)
    with _every_log_line() as lines:
        await page.goto(f"{me.settings.api_base_url}/integrations")
        google = page.locator("#integration-google")
        for scope in GOOGLE_SCOPES:  # what the agent may do, in words, before connecting
            await expect(google).to_contain_text(scope.meaning)
        await shots(page, screenshots, "integrations")

        await _connect(page, "google", allow=False)  # said no at the provider: nothing stored
        await expect(page.locator("main .notice")).to_contain_text("not allowed")
        await _connect(page, "google")
        await expect(page.locator("main .notice")).to_contain_text("Connected")
        await expect(google.locator(".connected")).to_be_visible()
        await _connect(page, "outlook")
        await expect(page.locator("#integration-outlook .connected")).to_be_visible()
        await shots(page, screenshots, "integrations-connected")

        await _agent_uses_the_calendar_and_mail(me)

        issued = await _standin(me, "/control/tokens", account=ACCOUNT)
        assert isinstance(issued, list) and len(issued) == 4, issued  # access + refresh, of each provider
        async with sessions() as session:
            rows = (await session.execute(select(OAuthCredential).where(OAuthCredential.user_id == me.user.id))).scalars().all()
            actions = (await session.execute(select(AuditEvent.action).where(AuditEvent.user_id == me.user.id))).scalars().all()
        assert {r.provider for r in rows} == {"google", "outlook"} and all(r.state == "connected" for r in rows)
        assert "integration.connected" in actions
        stored, history = await _everything_stored(sessions), await _history_of(temporal_env, me.user.id)
        for token in issued:
            assert token not in stored and token.encode().hex() not in stored, "a token in the database"
            assert token.encode() not in history, "a token in Temporal history"
            assert not [line for line in lines if token in line], "a token in the logs"

        await page.click("#disconnect-google")
        await expect(page.locator("main .notice")).to_contain_text("Disconnected")
        await expect(page.locator("#connect-google")).to_be_visible()
    state = await _standin(me, "/control/state")
    assert state["google"]["revoked"] == [ACCOUNT] and state["google"]["live_tokens"] == 0  # type: ignore[index]
    assert await _providers_of(sessions, me) == ["outlook"]
    await page.click("#disconnect-outlook")
    await expect(page.locator("#connect-outlook")).to_be_visible()
    assert await _providers_of(sessions, me) == []


async def _providers_of(sessions: async_sessionmaker[AsyncSession], me: UserOnPlatform) -> list[str]:
    async with sessions() as session:
        return list((await session.execute(select(OAuthCredential.provider).where(
            OAuthCredential.user_id == me.user.id))).scalars().all())


async def test_the_users_own_mcp_server_is_added_on_the_dashboard_and_its_tool_used_on_a_call(
    browser: Browser, shared_user: UserOnPlatform, sessions: async_sessionmaker[AsyncSession],
    model_server: tuple[str, ModelScript], tool_server: str, screenshots: Path, temporal_env: WorkflowEnvironment,
) -> None:
    """A small real MCP server wanting an API key: added on the Integrations page (its tool listed),
    then the user's real OpenClaw calls that tool during a call, through the platform's relay; the
    key is in no file of the platform's (agent configs included) and never reached the agent. On
    the session's shared user: the server is removed on the page at the end."""
    me = shared_user
    _, script = model_server
    # The agent is awake first (a first wake can take 20 s on a loaded machine): a server added
    # meanwhile reaches the agent after that wake, and a call placed in between would be answered
    # by the agent as it was. That race is the platform's ("applied later"), not this test's.
    await temporal_env.client.get_workflow_handle(lifecycle_id(me.user.id)).execute_update(
        AgentLifecycleWorkflow.ensure_awake)
    page = await _signed_in_page(browser, me, sessions)
    await page.goto(f"{me.settings.api_base_url}/integrations#mcp-servers")
    await page.fill("input[name=name]", "notes")
    await page.fill("input[name=url]", tool_server)
    await page.fill("textarea[name=headers]", f"X-Api-Key: {SECRET}")
    await page.click("#add-mcp-server")
    await expect(page.locator("main .notice")).to_contain_text("Server added")
    await expect(page.locator("#mcp-notes")).to_contain_text("answering")
    await expect(page.locator("#mcp-notes .tools")).to_contain_text("shout")
    await shots(page, screenshots, "integrations-mcp-server")

    script.replies.append(ScriptedReply(re.compile("shout hello from the relay"), "", tool_call={
        "name": "tool_call", "arguments": {"id": "notes__shout", "args": {"words": "hello from the relay"}}}))
    async with handset(me.settings.carrier_url, me.user.phone_e164) as phone:
        await phone.dial(me.number)
        await _greeted(phone)
        await _ask(phone, "shout hello from the relay", "HELLO FROM THE RELAY", timeout=180)
        await phone.hangup()

    configs = [path for path in me.settings.data_dir.rglob("*") if path.is_file() and path.suffix == ".json"
               and "mcp-relay" in path.read_text(errors="ignore")]
    assert configs, "the agent's config names the server through the relay"
    leaked = [path for path in me.settings.data_dir.rglob("*") if path.is_file()
              and SECRET.encode() in path.read_bytes()]
    assert not leaked, f"the server's key in {leaked}"

    await page.click("#mcp-notes button.danger")
    await expect(page.locator("main .notice")).to_contain_text("Server removed")
    await expect(page.locator("#mcp-notes")).to_have_count(0)
