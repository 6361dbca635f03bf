"""Which CPU priority the local runtime's booting spares get (their boots themselves are timed by
tests/activities/test_local_runtime.py and bench/wake.py): low while a user's agent is awake, so a
call on two cores is not slowed by a spare's ~25 CPU-seconds of boot; full speed when nobody is awake
(the platform waits for its first spare) or when a wake is waiting for one."""

from __future__ import annotations

from pathlib import Path

from activities.runtime.agent_users import AgentUsers
from activities.runtime.local_spares import SPARE_NICE, LocalSpares
from activities.runtime.tools import Tools
from core.tokens import Keyring


class BootingGateway:
    """Stands in for a GatewayProcess still booting: records the priority it is given."""

    def __init__(self) -> None:
        self.nice: int | None = None

    def set_priority(self, nice: int) -> None:
        self.nice = nice


async def _discard(_gateway: object) -> None:
    return None


def test_booting_spares_yield_to_awake_agents_and_not_to_a_waiting_wake(tmp_path: Path) -> None:
    awake = [False]
    spares = LocalSpares(Tools(tmp_path), tmp_path, AgentUsers(tmp_path, enabled=False), Keyring.of("k"), target=1,
                         config=lambda port: {}, discard=_discard, agents_awake=lambda: awake[0])
    booting = BootingGateway()
    spares._booting.add(booting)  # type: ignore[arg-type]  (as _start registers a gateway it started)

    spares.reprioritise()
    assert booting.nice == 0, "with no agent awake a spare boots at full speed"
    awake[0] = True  # a user's agent was woken
    spares.reprioritise()
    assert booting.nice == SPARE_NICE
    spares._claiming = 1  # a wake is waiting and no spare is ready
    spares.reprioritise()
    assert booting.nice == 0, "the spare a wake waits for boots at full speed"
