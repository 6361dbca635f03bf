"""The softphone in a real headless Chromium, as a new user meets DeepClaw with `make run`: call the
hotline, set up by typing and the keypad (each hotline line a caption), call the new number, and ask
the demo model for a text and a reminder, which arrive in the timeline. Screenshots at phone and
desktop width go to the test run's directory (DEEPCLAW_SCREENSHOTS to keep them elsewhere)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

from playwright.async_api import Browser, Page, expect

from emulators.voice_agent import VoiceAgentServer
from tests.voice.conftest import DESKTOP, PHONE, SharedPlatform
from tests.voice.platform import email_code

LINE_S = 120.0  # longest wait for one line (the first agent's wake on a fresh machine is the slowest)


class Softphone:
    """The page, driven as a person would: taps, typing, reading the timeline."""

    def __init__(self, page: Page, agent: VoiceAgentServer) -> None:
        self.page = page
        self.agent = agent  # only to know when a line has finished playing (a caller waits for that)

    def entry(self, kind: str, text: str) -> Any:
        return self.page.locator(f"#timeline .entry.{kind}", has_text=text).last

    async def sees(self, kind: str, text: str, timeout: float = LINE_S) -> str:
        entry = self.entry(kind, text)
        await expect(entry).to_be_visible(timeout=timeout * 1000)
        return await entry.inner_text()

    async def line_played(self) -> None:
        """The voice agent's current line has gone out (talking over it would interrupt it)."""
        session = self.agent.sessions[-1]
        for _ in range(int(LINE_S * 20)):
            kinds = [e["type"] for e in session.events]
            started = max((i for i, k in enumerate(kinds) if k == "AgentStartedSpeaking"), default=-1)
            if started >= 0 and "AgentAudioDone" in kinds[started:]:
                return
            await self.page.wait_for_timeout(50)
        raise AssertionError("the line never finished playing")

    async def say(self, words: str, then_hears: str, kind: str = "hotline") -> str:
        await self.line_played()
        await self.page.fill("#turn", words)
        await self.page.press("#turn", "Enter")
        await self.sees("caller", words)
        return await self.sees(kind, then_hears)

    async def key(self, digits: str) -> None:
        for digit in digits:
            await self.page.click(f"#pad button[aria-label='Key {digit}']")


async def test_a_new_user_tries_deepclaw_from_the_softphone(
    browser: Browser, hotline_platform: SharedPlatform, screenshots: Path
) -> None:
    caller = f"+1555{uuid.uuid4().int % 10**7:07d}"
    address = f"new.{uuid.uuid4().hex[:6]}@example.com"
    settings, agent = hotline_platform.settings, hotline_platform.agent
    context = await browser.new_context(viewport=PHONE)
    page = await context.new_page()
    problems: list[str] = []  # the page's own errors fail the test
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    phone = Softphone(page, agent)
    await page.goto(f"{settings.carrier_url}/phone?number={quote(caller)}")
    await expect(page.locator("#status")).to_have_text(f"online as {caller}"), problems
    await expect(page.locator("#hotline-number")).to_have_text(settings.hotline_number)
    # Which model answers (the session's model stand-in here; `make run`'s demo model: test_dev_stack).
    await expect(page.locator("#model")).to_contain_text(settings.model_summary())
    await page.screenshot(path=screenshots / "softphone-phone-idle.png", full_page=True)

    # The hotline, one tap away; its lines are captions; the SMS code arrives in the timeline.
    await page.click("#call-hotline")
    await phone.sees("hotline", "Welcome to DeepClaw!")
    sms = await phone.sees("sms-in", "Your DeepClaw code")
    code = re.findall(r"\b\d{6}\b", sms)[0]
    await phone.line_played()
    await phone.key(code + "#")
    await phone.sees("keypad", "#")
    await phone.sees("hotline", "your phone is verified")
    await phone.say(address.replace(".", " dot ").replace("@", " at "), "Is that right?")
    await phone.say("yes", "emailed you a six-digit code")
    await phone.say(" ".join(await email_code(settings.api_base_url, address)), "Your email is verified")
    await phone.say("Luna", "Luna it is")
    await phone.say("casual", "Casual, got it")
    await phone.say("call it Nova", "Nova, lovely")
    all_set = await phone.say("skip", "All set!")
    assert "Nova's number is" in all_set
    await phone.sees("agent", "Hi, I'm Nova")  # the hand-off: the new agent on the same call
    welcome = await phone.sees("sms-in", "Save this number")
    number = re.findall(r"\+\d{11}", welcome)[0]
    await page.screenshot(path=screenshots / "softphone-phone-onboarded.png", full_page=True)
    await phone.line_played()
    await page.click("#hangup")
    await phone.sees("event", "call completed")

    # The new number: the demo model texts a word and sets a reminder, and both arrive here.
    await page.fill("#to", number)
    await page.click("#call")
    await phone.sees("agent", "Hi, it's Nova")  # its greeting on the new call (the hand-off's was "Hi, I'm")
    await phone.say("text me pineapple", "Done, I've texted you.", kind="agent")
    await phone.sees("sms-in", "pineapple")
    await phone.say("remind me in 6 seconds to stretch", "Okay, I'll text you in 6 seconds: stretch.", kind="agent")
    await phone.say("goodbye", "Goodbye!", kind="agent")
    await phone.sees("event", "call completed")
    # The agent phrases it ("Hi! Here's your reminder: stretch.").
    await phone.sees("sms-in", "Here's your reminder: stretch")
    await page.screenshot(path=screenshots / "softphone-phone-after-calls.png", full_page=True)
    await page.set_viewport_size(DESKTOP)
    await page.screenshot(path=screenshots / "softphone-desktop-after-calls.png", full_page=True)
    await context.close()
    assert problems == [], f"the page reported errors: {problems}"
    for shot in ("phone-idle", "phone-onboarded", "phone-after-calls", "desktop-after-calls"):
        assert (screenshots / f"softphone-{shot}.png").stat().st_size > 10_000, f"{shot} screenshot is empty"
