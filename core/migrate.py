"""Schema migrations with Alembic, runnable from the CLI (`deepclaw migrate`) and from tests."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import pool
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # '%' is ConfigParser's interpolation character; URLs may contain it (escaped passwords).
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade_to_head(database_url: str) -> None:
    """Blocking; it runs its own event loop, so call it from a thread inside async code."""
    command.upgrade(alembic_config(database_url), "head")


def current_revision(database_url: str) -> str | None:
    """Blocking, like upgrade_to_head."""
    async def read() -> str | None:
        engine = create_async_engine(database_url, poolclass=pool.NullPool)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
        finally:
            await engine.dispose()

    return asyncio.run(read())


def wait_for_head(database_url: str, *, timeout_s: float, every_s: float = 2.0) -> bool:
    """Whether the schema reached the code's head within `timeout_s`: what a new version's pods wait
    for (an init container) while the migration Job runs, so none serves on an older schema."""
    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            revision = current_revision(database_url)
        except (SQLAlchemyError, OSError) as error:  # the database not reachable yet
            revision, reason = None, f"database unreachable ({type(error).__name__})"
        else:
            reason = f"schema at {revision or 'nothing'}"
        if revision == head:
            log.info("database schema at head %s", head)
            return True
        if time.monotonic() >= deadline:
            log.error("database schema not at head %s after %.0f s: %s", head, timeout_s, reason)
            return False
        log.info("waiting for the migration to head %s: %s", head, reason)
        time.sleep(every_s)
