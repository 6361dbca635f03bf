"""`deepclaw migrate --wait`: what a new version's pods run first (an init container), so that none
serves before the migration Job has brought the schema to the version's head."""

import asyncio
import os
import sys
import uuid
from pathlib import Path

from core.migrate import upgrade_to_head
from devstack.postgres import EmbeddedPostgres

ROOT = Path(__file__).parents[1]


async def _wait(url: str, seconds: float, cwd: Path) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPCLAW_")}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "core.cli", "migrate", "--wait", str(seconds), cwd=cwd,
        env={**env, "PYTHONPATH": str(ROOT), "DEEPCLAW_DATABASE_URL": url, "DEEPCLAW_DATA_DIR": str(cwd / "data")},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)


async def test_pods_wait_for_the_migration_and_give_up_on_a_schema_that_never_comes(
    postgres: EmbeddedPostgres, tmp_path: Path,
) -> None:
    name = f"rollout_{uuid.uuid4().hex[:8]}"
    await postgres.ensure_database(name)
    url = postgres.url(name)

    never = await _wait(url, 1, tmp_path)
    output, _ = await asyncio.wait_for(never.communicate(), 60)
    assert never.returncode == 1, output.decode()
    assert b"not at head" in output

    waiting = await _wait(url, 120, tmp_path)
    assert waiting.stdout is not None
    seen = b""
    while b"waiting for the migration" not in seen:  # it polls the empty schema...
        line = await asyncio.wait_for(waiting.stdout.readline(), 60)
        assert line, f"it ended before waiting: {seen.decode()}"
        seen += line
    assert waiting.returncode is None
    await asyncio.to_thread(upgrade_to_head, url)  # ...until the Job migrates
    rest, _ = await asyncio.wait_for(waiting.communicate(), 60)
    assert waiting.returncode == 0, (seen + rest).decode()
    assert b"schema at head" in rest
