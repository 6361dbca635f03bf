"""Embedded PostgreSQL requires a password: local agents run on the same host as other Unix users."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from core.process import free_port
from devstack.postgres import EmbeddedPostgres


async def test_a_cluster_made_with_trust_auth_is_made_to_require_its_password(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "pg", free_port())
    await server.start()
    await server.stop()
    (server.data_dir / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")  # as older checkouts made it
    await server.start()
    try:
        for password in (None, "guess"):
            with pytest.raises(asyncpg.InvalidPasswordError):
                await asyncpg.connect(host="127.0.0.1", port=server.port, user="postgres", password=password,
                                      database="postgres")
        conn = await asyncpg.connect(server.url().replace("+asyncpg", ""))
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()
        assert server.password_file.stat().st_mode & 0o077 == 0
    finally:
        await server.stop()
