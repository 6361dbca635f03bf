"""The local runtime's user state: one folder per user (their spec, workspace and OpenClaw's agent
folder with its sessions), which follows them from gateway process to gateway process; archived as
a tar.gz of that folder in the ArchiveStore, restored byte for byte."""

from __future__ import annotations

import asyncio
import shutil
import tarfile
import tempfile
import uuid
from pathlib import Path

from activities.runtime.wake import personality_prompt
from core.ports import AgentSpec, ArchiveStore, archive_key, export_key


class LocalStates:
    def __init__(self, root: Path) -> None:
        """`root`: the runtime's folder; users' folders go in <root>/users (scratch space in <root>)."""
        self.root = root
        self.folder = root / "users"

    def user_dir(self, user_id: uuid.UUID) -> Path:
        return self.folder / user_id.hex

    def spec(self, user_id: uuid.UUID) -> AgentSpec:
        path = self.user_dir(user_id) / "spec.json"
        if not path.exists():
            raise LookupError(f"no agent for user {user_id}")
        return AgentSpec.model_validate_json(path.read_text())

    def has_agent(self, user_id: uuid.UUID) -> bool:
        return (self.user_dir(user_id) / "spec.json").exists()

    def write(self, spec: AgentSpec, *, personality: bool) -> None:
        """The user's folder and spec; their SOUL.md from the spec if `personality` or if they have none."""
        folder = self.user_dir(spec.user_id)
        folder.mkdir(mode=0o700, exist_ok=True)
        (folder / "workspace").mkdir(parents=True, exist_ok=True)
        (folder / "agent").mkdir(parents=True, exist_ok=True)
        (folder / "spec.json").write_text(spec.model_dump_json(indent=2))
        soul = folder / "workspace" / "SOUL.md"
        if personality or not soul.exists():
            soul.write_text(personality_prompt(spec))

    async def archive(self, user_id: uuid.UUID, store: ArchiveStore) -> str:
        folder = self.user_dir(user_id)
        if not folder.exists():
            raise LookupError(f"no agent state for user {user_id}")
        key = archive_key(user_id)
        with tempfile.TemporaryDirectory(dir=self.root) as tmp:
            bundle = Path(tmp) / "state.tar.gz"
            await asyncio.to_thread(_pack, folder, bundle)
            await store.put(key, bundle)
        shutil.rmtree(folder)
        return key

    async def export_memory(self, user_id: uuid.UUID, store: ArchiveStore) -> bool:
        workspace = self.user_dir(user_id) / "workspace"
        if not workspace.is_dir():
            return False
        with tempfile.TemporaryDirectory(dir=self.root) as tmp:
            bundle = Path(tmp) / "workspace.tar.gz"
            await asyncio.to_thread(_pack, workspace, bundle)
            await store.put(export_key(user_id), bundle)
        return True

    async def restore(self, user_id: uuid.UUID, store: ArchiveStore, key: str) -> None:
        folder = self.user_dir(user_id)
        with tempfile.TemporaryDirectory(dir=self.root) as tmp:
            bundle = Path(tmp) / "state.tar.gz"
            await store.get(key, bundle)
            staging = Path(tmp) / "state"
            await asyncio.to_thread(_unpack, bundle, staging)
            shutil.rmtree(folder, ignore_errors=True)
            folder.parent.mkdir(parents=True, exist_ok=True)
            staging.rename(folder)

    def delete(self, user_id: uuid.UUID) -> None:
        shutil.rmtree(self.user_dir(user_id), ignore_errors=True)


def _pack(folder: Path, bundle: Path) -> None:
    with tarfile.open(bundle, "w:gz") as archive:
        archive.add(folder, arcname=".")


def _unpack(bundle: Path, destination: Path) -> None:
    destination.mkdir()
    with tarfile.open(bundle) as archive:
        archive.extractall(destination, filter="data")
