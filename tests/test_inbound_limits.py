"""Per-sender limits on what reaches platform numbers: over them a texter gets one polite reply (never
silence, never a second), a caller hears why the call ends, and nothing goes further."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from core import composition
from api.app import create_app as api_app
from api.routes.twilio import HOTLINE_TEXT, TOO_MANY_CALLS, UNKNOWN_NUMBER
from core.process import free_port
from core.serve import serving
from core.settings import Settings
from emulators.carrier.app import create_app as carrier_app
from emulators.carrier.handset import handset
from emulators.speech import SpeechRegistry
from emulators.standins import build_carrier
from tests.conftest import unique_area_code


async def test_a_sender_over_the_limit_gets_one_polite_reply_and_nothing_more(
    database_url: str, temporal_env: WorkflowEnvironment, tmp_path: Path,
) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path, database_url=database_url,
                        temporal_address=temporal_env.client.service_client.config.target_host,
                        api_port=free_port(), carrier_port=free_port(),
                        inbound_text_limits="2/minute", inbound_call_limits="1/minute")
    sender = f"+1555{uuid.uuid4().int % 10**7:07d}"
    carrier = build_carrier(settings, SpeechRegistry())
    async with serving(carrier_app(carrier), "127.0.0.1", settings.carrier_port), \
            serving(api_app(settings), "127.0.0.1", settings.api_port):
        telephony = composition.telephony(settings)
        hotline = next(n for n in await telephony.list_numbers() if n.e164 == settings.hotline_number)
        await telephony.configure_number(hotline.sid, voice_url=f"{settings.api_base_url}/twilio/voice",
                                         sms_url=f"{settings.api_base_url}/twilio/sms")
        [spare] = await telephony.search_numbers(area_code=unique_area_code(), limit=1)
        unassigned = await telephony.buy_number(spare, voice_url=f"{settings.api_base_url}/twilio/voice", sms_url="")
        await telephony.close()
        async with handset(settings.carrier_url, sender) as phone:
            for n in range(2):
                await phone.text(settings.hotline_number, f"hello {n}")
                await phone.wait_for("sms", lambda e, n=n: len(phone.texts()) > n, timeout=20)
            await phone.text(settings.hotline_number, "hello again")
            notice = await phone.wait_for("sms", lambda e: "more texts than I can take" in e["body"], timeout=20)
            assert "won't be read" in notice["body"]
            # The next one over the limit gets no second notice (its webhook answered, with no reply).
            await phone.text(settings.hotline_number, "are you there?")
            for _ in range(200):
                if len([e for e in carrier.webhook_log if e["url"].endswith("/twilio/sms")]) == 4:
                    break
                await asyncio.sleep(0.05)
            assert carrier.webhook_log[-1]["status"] == 200
            await phone.dial(unassigned.e164)  # a platform number nobody has: let through, once a minute
            assert UNKNOWN_NUMBER in (await phone.wait_for("say"))["text"]
            await phone.wait_for("call_state", lambda e: e["state"] == "completed", timeout=20)
            mark = len(phone.events)
            await phone.dial(unassigned.e164)
            assert (await phone.wait_for("say", after=mark))["text"] == TOO_MANY_CALLS
            assert [t["body"] for t in phone.texts()] == [HOTLINE_TEXT, HOTLINE_TEXT, notice["body"]]
