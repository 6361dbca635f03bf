"""`deepclaw standins`: the carrier (with the softphone), the voice agent, the model, web search and
the calendar and mail providers (with their OAuth servers), in one
process so that typed turns spoken through the carrier are recognised exactly by the voice agent."""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import AsyncExitStack
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route

from core.serve import serving
from core.settings import Settings, StandinVoice
from emulators import llm, providers, search
from emulators.carrier.app import create_app as carrier_app
from emulators.carrier.carrier import Carrier
from emulators.carrier.store import OwnedNumber, new_sid
from emulators.speech import SpeechRegistry
from emulators.piper import PiperSpeech
from emulators.voice_agent import VoiceAgentServer
from emulators.voices import AgentVoices
from emulators.whisper import WhisperRecognizer
from workflows.onboarding_lines import HOTLINE_VOICE

log = logging.getLogger(__name__)

SOFTPHONE = Path(__file__).parent / "softphone.html"


def build_carrier(settings: Settings, speech: SpeechRegistry) -> Carrier:
    carrier = Carrier(settings.twilio_account_sid, settings.twilio_auth_token.get_secret_value(), speech=speech,
                      public_url=settings.carrier_url)
    # The hotline number is on the account from the start, as one bought in Twilio's console: not yet
    # pointed anywhere. The platform's worker points it at the API when it starts (HotlineSetupWorkflow).
    hotline = OwnedNumber(new_sid("PN"), settings.hotline_number, friendly_name="DeepClaw hotline")
    carrier.numbers.owned[hotline.sid] = hotline
    return carrier


def softphone_routes(settings: Settings) -> list[Route]:
    """The softphone page, and what it shows before any call: the hotline's number, the agents' model."""
    async def page(request: Request) -> FileResponse:
        return FileResponse(SOFTPHONE, media_type="text/html")

    async def info(request: Request) -> JSONResponse:
        return JSONResponse({"hotline": settings.hotline_number, "model": settings.model_summary()})

    return [Route("/phone", page), Route("/phone/info", info)]


LAG_REPORT_S = 10.0  # at most one line per this long
LAG_WARN_MS = 200.0


async def report_loop_lag(every_s: float = 0.5) -> None:
    """A line when this process's event loop runs late: every call's audio passes through here, so
    a late loop is late audio (and, past 20 s, sockets whose keepalive pings went unanswered)."""
    loop = asyncio.get_running_loop()
    worst, since = 0.0, loop.time()
    while True:
        before = loop.time()
        await asyncio.sleep(every_s)
        worst = max(worst, (loop.time() - before - every_s) * 1000)
        if loop.time() - since >= LAG_REPORT_S:
            if worst >= LAG_WARN_MS:
                log.warning("the stand-ins' event loop ran up to %.0f ms late in the last %.0f s (saturated)",
                            worst, loop.time() - since)
            worst, since = 0.0, loop.time()


async def _warm_up(agent: VoiceAgentServer) -> None:
    """What the first caller would otherwise wait for: the hotline's voice (a Piper process and its
    model) and Whisper (joined from its wheels the first time, then loaded)."""
    try:
        await asyncio.gather(agent.voices.say("Hello.", HOTLINE_VOICE), asyncio.to_thread(agent.recognizer.load))
    except Exception:  # the first caller pays it instead; the log says why
        log.exception("warming up the voice agent's voice and recogniser failed")


async def run_standins(settings: Settings) -> None:
    speech = SpeechRegistry()
    carrier = build_carrier(settings, speech)
    agent = VoiceAgentServer(registry=speech, recognizer=WhisperRecognizer(settings.tools_dir),
                             voices=AgentVoices(PiperSpeech(settings.data_dir / "piper")
                                                if settings.voice_agent_voice == StandinVoice.PIPER else None),
                             pause_ms=settings.voice_agent_pause_ms, turn_end_ms=settings.voice_agent_turn_end_ms)
    warming = asyncio.create_task(_warm_up(agent))
    host = settings.standins_host
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(serving(
            carrier_app(carrier, extra_routes=softphone_routes(settings)), host, settings.carrier_port))
        await stack.enter_async_context(serving(agent.app(), host, settings.voice_agent_port))
        await stack.enter_async_context(serving(llm.create_app(), host, settings.llm_port))
        await stack.enter_async_context(serving(search.create_app(), host, settings.search_port))
        await stack.enter_async_context(serving(providers.create_app(providers.Providers(settings.api_base_url)),
                                                host, settings.providers_port))
        log.info("softphone at %s/phone; hotline %s", settings.carrier_url, settings.hotline_number)
        lag = asyncio.create_task(report_loop_lag())
        await stop.wait()
        lag.cancel()
        warming.cancel()
