"""The voice bridge process (`deepclaw voice`): Media Streams on one port, HTTP on another, one loop.

On SIGTERM it stops taking new calls and lets the calls in progress finish (up to
`voice_drain_s`), so a rollout does not cut anyone off.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from core import composition
from activities.integrations.actions import PendingActions
from activities.integrations.credentials import Credentials
from core.db import create_engine, sessionmaker
from core.http import client as http_client
from core.serve import serving
from core.settings import Settings
from core.limits import UserLimiter, PostgresStorage
from core.streams import LiveStreams
from core.temporal import connect
from voice.app import create_app
from voice.bridge import BridgeDeps
from voice.confirmations import SpokenConfirmations
from voice.media import serve_media
from voice.messages import MessageTaker
from voice.proxy import LlmProxy

log = logging.getLogger(__name__)


@dataclass
class VoiceBridge:
    deps: BridgeDeps
    media: asyncio.Server

    def stop_taking_calls(self) -> None:
        self.media.close()  # the listening socket only: calls in progress go on


@asynccontextmanager
async def voice_serving(settings: Settings) -> AsyncIterator[VoiceBridge]:
    """Serves the bridge until the block exits; calls still in progress are then cut."""
    engine = create_engine(settings.database_url)
    telephony = composition.telephony(settings)
    try:
        async with http_client(httpx.Timeout(120.0, connect=5.0)) as http:
            sessions = sessionmaker(engine)
            live = LiveStreams(sessions)
            limiter = UserLimiter(PostgresStorage(sessions), settings.user_limits())
            temporal = await connect(settings)
            confirmations = SpokenConfirmations(PendingActions(Credentials(settings, sessions), sessions))
            proxy = LlmProxy(keyring=settings.keyring, temporal=temporal, http=http, live=live, limiter=limiter,
                             task_queue=settings.temporal_task_queue, confirmations=confirmations,
                             answer_timeout_s=settings.think_timeout_s)
            deps = BridgeDeps(settings=settings, sessions=sessions, telephony=telephony, live=live, temporal=temporal,
                              ask_agent=proxy.ask)
            messages = MessageTaker(keyring=settings.keyring, live=live, telephony=telephony, limiter=limiter)
            async with serving(create_app(deps, proxy, messages), settings.voice_host, settings.voice_port,
                               forwarded_allow_ips=settings.forwarded_allow_ips, reuse_port=settings.voice_reuse_port):
                media = await serve_media(deps, settings.voice_host, settings.voice_media_port,
                                          reuse_port=settings.voice_reuse_port)
                try:
                    yield VoiceBridge(deps, media)
                finally:
                    media.close()
                    running = [*deps.calls, *deps.background, *proxy.tasks()]
                    for task in running:
                        task.cancel()
                    await asyncio.gather(*running, return_exceptions=True)
                    await media.wait_closed()
    finally:
        await telephony.close()
        await engine.dispose()


def settle_heap() -> None:
    """Moves everything start-up made (modules, clients, pools) out of the garbage collector's sight.

    A full collection walks every tracked object; with the libraries loaded that is a few hundred
    thousand, and the walk (tens of milliseconds) stops every call's audio at once. Frozen objects
    are never walked, so later collections see only the calls' own objects.
    """
    gc.collect()
    gc.freeze()
    log.debug("garbage collector: %d start-up objects frozen", gc.get_freeze_count())


async def run_voice(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with voice_serving(settings) as bridge:
        settle_heap()
        log.info("voice bridge: HTTP on %s:%d, Media Streams on %s:%d", settings.voice_host, settings.voice_port,
                 settings.voice_host, settings.voice_media_port)
        await stop.wait()
        bridge.stop_taking_calls()
        if calls := list(bridge.deps.calls):
            stop.clear()
            log.info("draining %d call(s) for up to %.0fs (signal again to cut them)", len(calls), settings.voice_drain_s)
            every_call = asyncio.gather(*calls, return_exceptions=True)
            signalled_again = asyncio.ensure_future(stop.wait())
            await asyncio.wait([every_call, signalled_again], timeout=settings.voice_drain_s,
                               return_when=asyncio.FIRST_COMPLETED)
            signalled_again.cancel()
