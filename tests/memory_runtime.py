"""An in-memory AgentRuntime for orchestration tests (the real runtimes have tests of their own
against real OpenClaw and a Kubernetes API)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

from core.ports import AgentEndpoint, AgentSpec, ArchiveStore, RuntimeState


class MemoryRuntime:
    """An AgentRuntime that keeps state in memory and counts what it was asked to do."""

    def __init__(self) -> None:
        self.states: dict[uuid.UUID, RuntimeState] = {}
        self.calls: Counter[str] = Counter()
        self.specs: dict[uuid.UUID, AgentSpec] = {}
        self.wake_s = 0.05  # how long a wake takes
        self.lost_archives: set[uuid.UUID] = set()  # whose archive the store no longer has

    async def start(self) -> None: ...
    async def close(self) -> None: ...

    def pool(self) -> dict[str, int]:
        return {}

    async def create(self, spec: AgentSpec) -> None:
        self.calls["create"] += 1
        self.specs[spec.user_id] = spec
        self.states[spec.user_id] = RuntimeState.STOPPED

    async def apply(self, spec: AgentSpec) -> None:
        self.calls["apply"] += 1
        self.specs[spec.user_id] = spec

    async def wake(self, user_id: uuid.UUID) -> AgentEndpoint:
        if self.states.get(user_id, RuntimeState.ABSENT) == RuntimeState.ABSENT:
            raise LookupError(f"no agent for {user_id}")
        self.calls["wake"] += 1
        await asyncio.sleep(self.wake_s)
        self.states[user_id] = RuntimeState.RUNNING
        return AgentEndpoint(base_url=f"http://127.0.0.1:1/{user_id.hex[:6]}", instance="memory")

    async def pause(self, user_id: uuid.UUID) -> None:
        self.calls["pause"] += 1
        self.states[user_id] = RuntimeState.PAUSED

    async def sleep(self, user_id: uuid.UUID) -> None:
        self.calls["sleep"] += 1
        self.states[user_id] = RuntimeState.STOPPED

    async def archive(self, user_id: uuid.UUID, store: ArchiveStore) -> str:
        self.calls["archive"] += 1
        self.states[user_id] = RuntimeState.ARCHIVED
        return f"agents/{user_id.hex}/state.tar.gz"

    async def restore(self, user_id: uuid.UUID, store: ArchiveStore, key: str) -> None:
        if user_id in self.lost_archives:
            raise FileNotFoundError(f"no archive {key}")
        self.calls["restore"] += 1
        self.states[user_id] = RuntimeState.STOPPED

    async def export_memory(self, user_id: uuid.UUID, store: ArchiveStore) -> bool:
        return False  # it keeps no files

    async def delete(self, user_id: uuid.UUID) -> None:
        self.states.pop(user_id, None)

    async def status(self, user_id: uuid.UUID) -> RuntimeState:
        return self.states.get(user_id, RuntimeState.ABSENT)
