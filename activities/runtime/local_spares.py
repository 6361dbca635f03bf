"""The local runtime's warm spares: gateway processes booted ahead with no user, one claimed per wake.

Spares boot at low CPU priority while a user's agent is awake, and replacements only a while after a
claim, so that on two cores they never slow the user whose wake or call is in progress; with no one
to yield to, they boot at full speed (the platform waits for its first one). A wake that finds none
ready starts one at once rather than queueing behind another wake's or waiting out a replacement's
delay, and the spares then booting get full priority: someone is waiting for one. A spare that fails
to start is replaced after a back-off, so one failed boot does not leave the pool empty (and a wake
waiting for it without a gateway) until the next claim.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from activities.runtime.agent_users import AgentUsers
from activities.runtime.gateway import GatewayProcess
from activities.runtime.tools import Tools
from activities.runtime.wake import Gateway, warm_up
from core.ports import AgentEndpoint
from core.process import free_port
from core.tokens import Keyring

SPARE_NICE = 15
REPLENISH_DELAY_S = 15.0
CLAIM_TIMEOUT_S = 120.0
# A spare that failed to start is replaced after this, doubled after each failure in a row up to
# the maximum: a machine too busy to boot one in time, or an OpenClaw that cannot start, is not
# asked to boot again and again (each attempt costs up to a minute of CPU).
RETRY_DELAY_S = 5.0
MAX_RETRY_DELAY_S = 300.0

log = logging.getLogger(__name__)


def address(gateway: GatewayProcess) -> Gateway:
    return Gateway(gateway.base_url, gateway.token)


class LocalSpares:
    def __init__(self, tools: Tools, folder: Path, users: AgentUsers, keyring: Keyring, *, target: int,
                 config: Callable[[int], dict[str, Any]], discard: Callable[[GatewayProcess], Awaitable[None]],
                 replenish_delay_s: float = REPLENISH_DELAY_S, agents_awake: Callable[[], bool] = lambda: True) -> None:
        """`folder`: where each spare's home goes; `config(port)`: a spare's config; `discard`: how a
        spare that failed to start is stopped for good; `agents_awake()`: whether any user's agent is
        awake (running, not paused), which booting spares yield to."""
        self.tools = tools
        self.folder = folder
        self.users = users
        self.keyring = keyring  # gateway tokens are derived from it (AgentEndpoint.token)
        self.target = target
        self.config = config
        self.discard = discard
        self.replenish_delay_s = replenish_delay_s
        self.agents_awake = agents_awake
        self._ready: asyncio.Queue[GatewayProcess] = asyncio.Queue()
        self._starting = 0
        self._scheduled = 0
        self._claiming = 0  # wakes waiting for a gateway
        self._failures = 0  # spares that failed to start, in a row
        self._background: set[asyncio.Task[None]] = set()
        self._booting: set[GatewayProcess] = set()  # started, not ready yet

    def counts(self) -> dict[str, int]:
        return {"spares_ready": self._ready.qsize(), "spares_starting": self._starting + self._scheduled,
                "spares_target": self.target}

    def replenish(self, delay: float = 0.0) -> None:
        self._top_up(self.target, delay)

    def _top_up(self, wanted: int, delay: float) -> None:
        missing = wanted - self._ready.qsize() - self._starting - self._scheduled
        for _ in range(max(0, missing)):
            self._launch(delay)

    def _launch(self, delay: float) -> None:
        if delay > 0:
            self._scheduled += 1
            task = asyncio.create_task(self._start_after(delay))
        else:
            self._starting += 1
            task = asyncio.create_task(self._start())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _start_after(self, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
        finally:
            self._scheduled -= 1
        if self._ready.qsize() + self._starting >= max(self.target, self._claiming):
            return  # wakes meanwhile started what was missing
        self._starting += 1
        await self._start()

    async def _start(self) -> None:
        """Counted in `_starting` by whoever launched it. If it fails, another is launched after a
        back-off (a wake waiting for it gets that one)."""
        failed = False
        try:
            port = free_port()
            home = self.folder / f"{port}-{secrets.token_hex(4)}"
            home.mkdir(parents=True)
            endpoint = AgentEndpoint(base_url=f"http://127.0.0.1:{port}", instance=secrets.token_hex(8),
                                     key_id=self.keyring.kid)
            user = await asyncio.to_thread(self.users.acquire)  # may create a Unix user: not on the loop
            gateway = GatewayProcess(self.tools, home, port=port, token=endpoint.token(self.keyring),
                                     config=self.config(port), user=user, instance=endpoint.instance,
                                     key_id=endpoint.key_id)
            self._booting.add(gateway)
            try:
                await gateway.start(nice=self._boot_priority())
                await gateway.wait_ready()
                await warm_up(address(gateway))
            except BaseException:  # cancelled by close() too: never leave a half-started gateway
                await asyncio.shield(self.discard(gateway))
                raise
            finally:
                self._booting.discard(gateway)
            if not self._waited_for():  # a wake raised it, and another spare served that wake
                gateway.set_priority(SPARE_NICE)
            await self._ready.put(gateway)
            self._failures = 0
        except Exception as error:
            failed = True
            self._failures += 1
            log.warning("a spare gateway failed to start (%d in a row): %s", self._failures, error)
        finally:
            self._starting -= 1
        if failed:  # as many as are kept, or as wakes are waiting for
            backoff = min(RETRY_DELAY_S * 2 ** (self._failures - 1), MAX_RETRY_DELAY_S)
            self._top_up(max(self.target, self._claiming), backoff)

    async def claim(self) -> GatewayProcess:
        self._claiming += 1
        try:
            # Every wake waiting has a gateway on its way now: with nothing warm (or no spares kept
            # at all) each pays a cold start.
            for _ in range(self._claiming - self._ready.qsize() - self._starting):
                self._launch(0.0)
            self.reprioritise()
            gateway = await asyncio.wait_for(self._ready.get(), CLAIM_TIMEOUT_S)
        finally:
            self._claiming -= 1
        gateway.set_priority(0)
        self.replenish(delay=self.replenish_delay_s)
        return gateway

    def reprioritise(self) -> None:
        """The booting spares' priority after a change: a wake waiting, a user's agent awake or not."""
        nice = self._boot_priority()
        for booting in self._booting:
            booting.set_priority(nice)

    def _boot_priority(self) -> int:
        return 0 if self._waited_for() or not self.agents_awake() else SPARE_NICE

    def _waited_for(self) -> bool:
        """Wakes are waiting and no spare is ready for them."""
        return self._claiming > self._ready.qsize()

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        while not self._ready.empty():
            await self.discard(self._ready.get_nowait())
