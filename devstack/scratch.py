"""A throwaway PostgreSQL (migrated) and Temporal dev server in a folder, for benchmarks and scripts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from core.migrate import upgrade_to_head
from core.process import free_port
from devstack.postgres import EmbeddedPostgres
from devstack.temporal import TemporalDevServer


@dataclass
class ScratchStack:
    postgres: EmbeddedPostgres
    temporal: TemporalDevServer
    database_url: str


@asynccontextmanager
async def scratch_stack(root: Path, database: str = "scratch") -> AsyncIterator[ScratchStack]:
    postgres = EmbeddedPostgres(root / "pg", free_port(), log_path=root / "pg.log")
    await postgres.start()
    temporal = TemporalDevServer(root / "temporal.db", host="127.0.0.1", port=free_port(), ui_port=free_port(),
                                 log_path=root / "temporal.log")
    try:
        await postgres.ensure_database(database)
        await asyncio.to_thread(upgrade_to_head, postgres.url(database))
        await temporal.start()
        yield ScratchStack(postgres, temporal, postgres.url(database))
    finally:
        await temporal.stop()
        await postgres.stop()
