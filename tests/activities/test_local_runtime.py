"""The local runtime with real OpenClaw processes: warm spares, pause/wake, sleep/wake with the
user's memory following them, archive and restore byte for byte, and no process left behind."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from pathlib import Path

import httpx
import psutil
import pytest

from activities.archive.stores import FolderArchiveStore
from activities.runtime.local import LocalAgentRuntime
from activities.runtime.openclaw_config import ModelProvider, agent_id
from emulators.demo_model import DEMO_NOTICE
from core.ports import AgentEndpoint, AgentSpec, RuntimeState
from core.tokens import Keyring
from activities.runtime.tools import Tools
from emulators.llm import MODEL_ID, ModelScript
from tests.activities.test_openclaw_warmth import CHECK_LATER, FORKED_AHEAD, REUSED, integrity_checks_ahead
from tests.polling import until


KEYRING = Keyring.of("test-platform-secret")


async def _chat(endpoint: AgentEndpoint, user_id: uuid.UUID, text: str) -> str:
    async with httpx.AsyncClient(timeout=60) as http:
        response = await http.post(
            f"{endpoint.base_url}/v1/chat/completions",
            headers={**endpoint.authorization(KEYRING), "x-openclaw-session-key": "call-1"},
            json={"model": f"openclaw/{agent_id(user_id)}", "messages": [{"role": "user", "content": text}]},
        )
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


# No spare is replaced while a test runs: each wake boots what it takes (a gateway's boot is ~10 s of
# both cores here), and none boots only to be stopped at the end.
NO_REPLACEMENT_S = 3600.0


def _checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _gateway_log(tmp_path: Path, endpoint: AgentEndpoint) -> Path:
    [log] = (tmp_path / "agents" / "gateways").glob(f"{httpx.URL(endpoint.base_url).port}-*/gateway.log")
    return log  # (in each gateway's home)


def _gateways() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if "gateway" in " ".join(p.cmdline())]


async def test_sleep_wake_pause_archive_restore(
    tools: Tools, model_server: tuple[str, ModelScript], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base_url, _ = model_server
    runtime = LocalAgentRuntime(tools, tmp_path / "agents", ModelProvider(base_url=base_url, api_key="local", model=MODEL_ID),
                                 keyring=KEYRING, replenish_delay_s=NO_REPLACEMENT_S)
    user = uuid.uuid4()
    before = {p.pid for p in _gateways()}
    # The first spare cannot start (OpenClaw refuses a config with a key it does not know): it is
    # replaced after a back-off, and the wake waiting meanwhile gets the replacement.
    config, broken = runtime.spares.config, []

    def first_broken(port: int) -> dict[str, object]:
        if broken:
            return config(port)
        broken.append(port)
        return {**config(port), "notAnOpenClawKey": True}

    runtime.spares.config = first_broken
    try:
        runtime.spares.replenish()
        await runtime.create(AgentSpec(user_id=user, agent_name="Nova", personality="formal"))
        assert await runtime.status(user) == RuntimeState.STOPPED
        assert "Nova" in (runtime.user_dir(user) / "workspace" / "SOUL.md").read_text()

        endpoint = await runtime.wake(user)
        assert len(broken) == 1 and "a spare gateway failed to start (1 in a row)" in caplog.text
        assert await _chat(endpoint, user, "my locker code is 4471") == f"You said: my locker code is 4471. {DEMO_NOTICE}"
        # The agent's database opened in the thread the spare's warm-up had used (the warmth preload).
        assert REUSED in _gateway_log(tmp_path, endpoint).read_text(errors="replace")

        await runtime.pause(user)
        assert await runtime.status(user) == RuntimeState.PAUSED
        # New settings reach a paused agent (it is not left hanging on a stopped process) and it stays paused.
        await asyncio.wait_for(runtime.apply(AgentSpec(user_id=user, agent_name="Nova", personality="casual")), 30)
        assert "relaxed and friendly" in (runtime.user_dir(user) / "workspace" / "SOUL.md").read_text()
        assert await runtime.status(user) == RuntimeState.PAUSED
        assert await runtime.wake(user) == endpoint  # the same process, resumed (bench/wake.py times it)
        assert (await _chat(endpoint, user, "still there?")).startswith("You said: still there?")

        # Sleep frees the process and keeps the state; archiving takes it away, restoring gives it back
        # byte for byte; the next wake is another gateway, and the memory came along. One wake proves
        # both: each costs a gateway's boot.
        await runtime.sleep(user)
        assert await runtime.status(user) == RuntimeState.STOPPED
        state = _checksums(runtime.user_dir(user))
        assert any(name.startswith("agent/") for name in state), "sessions live in the user's folder"
        store = FolderArchiveStore(tmp_path / "archive")
        key = await runtime.archive(user, store)
        assert await runtime.status(user) == RuntimeState.ABSENT and await store.exists(key)
        await runtime.restore(user, store, key)
        assert _checksums(runtime.user_dir(user)) == state, "restore gives back byte-identical state"
        assert await runtime.status(user) == RuntimeState.STOPPED
        # A spare ready with its integrity-check process forked ahead, as one is some seconds after boot
        # (the replacement scheduled after the first wake is an hour away: one more is kept instead).
        runtime.spares.target = 2
        runtime.spares.replenish()

        async def spare_forked_ahead() -> bool:
            return any(integrity_checks_ahead(p.pid) for p in _gateways() if p.pid not in before)

        await until(spare_forked_ahead, "a spare with its integrity check forked ahead", timeout=120, every=0.5)
        woken = await runtime.wake(user)
        assert woken.base_url != endpoint.base_url
        assert await _chat(woken, user, "what did I say?") == "Earlier you said: still there?"
        # Its first turn checked the returning user's database in that process, and left the
        # spare's own database's quick check for later.
        woken_log = _gateway_log(tmp_path, woken).read_text(errors="replace")
        assert FORKED_AHEAD in woken_log and CHECK_LATER in woken_log

        await runtime.delete(user)
        assert await runtime.status(user) == RuntimeState.ABSENT
    finally:
        await runtime.close()
    leftover = [p for p in _gateways() if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE]
    assert leftover == [], "every gateway process is gone"


async def test_archive_and_restore_through_the_s3_emulator(tools: Tools, s3_emulator: str, tmp_path: Path) -> None:
    from tests.conftest import s3_store

    runtime = LocalAgentRuntime(tools, tmp_path / "agents", ModelProvider(base_url="http://127.0.0.1:1/v1", api_key="k",
                                                                          model=MODEL_ID), keyring=KEYRING, spares=0)
    user = uuid.uuid4()
    await runtime.create(AgentSpec(user_id=user, agent_name="Nova"))
    folder = runtime.user_dir(user)
    (folder / "workspace" / "memory").mkdir()
    (folder / "workspace" / "memory" / "2026-11-24.md").write_text("Locker code 4471.\n")
    (folder / "agent" / "openclaw-agent.sqlite").write_bytes(bytes(range(256)) * 400)
    state = _checksums(folder)

    store = s3_store(s3_emulator)
    key = await runtime.archive(user, store)
    assert not folder.exists() and await store.exists(key)
    await runtime.restore(user, store, key)
    assert _checksums(folder) == state
    assert await runtime.status(user) == RuntimeState.STOPPED


def _uid_processes(uid: int) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real == uid
            and p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.skipif(os.geteuid() != 0, reason="confining agents to Unix users of their own needs root (CI is root)")
async def test_each_agent_executes_code_as_its_own_unix_user(
    tools: Tools, model_server: tuple[str, ModelScript], tmp_path: Path
) -> None:
    """The agent's own `exec` tool, driven by the model: it reads its user's files, not another user's,
    nothing of the platform's, and what it leaves running dies with its gateway."""
    import re

    from emulators.llm import ScriptedReply

    base_url, script = model_server
    runtime = LocalAgentRuntime(tools, tmp_path / "agents", ModelProvider(base_url=base_url, api_key="local", model=MODEL_ID),
                                keyring=KEYRING, spares=2, replenish_delay_s=NO_REPLACEMENT_S)
    alice, bob = uuid.uuid4(), uuid.uuid4()
    secret_file = tmp_path / "platform-secret.txt"
    secret_file.write_text("platform secret\n")
    secret_file.chmod(0o600)
    try:
        runtime.spares.replenish()
        for user, name in ((alice, "Alice"), (bob, "Bob")):
            await runtime.create(AgentSpec(user_id=user, agent_name=name))
        alice_endpoint, bob_endpoint = await runtime.wake(alice), await runtime.wake(bob)
        uids = {}
        for user in (alice, bob):
            folder = runtime.user_dir(user)
            gateway = runtime._running[user].gateway  # noqa: SLF001
            uids[user] = gateway.user.uid
            assert psutil.Process(gateway.child.pid).uids().real == gateway.user.uid != 0
            assert folder.stat().st_uid == gateway.user.uid and folder.stat().st_mode & 0o777 == 0o700
        assert uids[alice] != uids[bob]

        alice_soul = runtime.user_dir(alice) / "workspace" / "SOUL.md"
        platform_service = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)  # as Temporal, Postgres
        service_port = platform_service.sockets[0].getsockname()[1]
        probe = "curl -s -m 5 -o /dev/null -w '{0}:%{{http_code}}' {1}; echo \" {0}-exit:$?\""
        command = (f"id -u; cat SOUL.md | head -1; cat {alice_soul} || echo ALICE-DENIED; "
                   f"cat {secret_file} || echo PLATFORM-DENIED; (setsid sleep 600 >/dev/null 2>&1 &); "
                   + probe.format("MODEL", f"{base_url}/models") + "; "
                   + probe.format("SERVICE", f"http://127.0.0.1:{service_port}/"))
        script.replies.append(ScriptedReply(re.compile("run the check"), "", tool_call={
            "name": "exec", "arguments": {"command": command}}))
        await _chat(bob_endpoint, bob, "run the check")
        outputs = [str(m["content"]) for request in script.requests for m in request["messages"]
                   if m.get("role") == "tool" and "ALICE-DENIED" in str(m.get("content"))]
        assert outputs, f"the exec result reached the model: {script.requests[-1]['messages'][-3:]}"
        output = outputs[0]  # later requests of the session repeat it
        assert str(uids[bob]) in output and "# Bob" in output, output
        assert "Permission denied" in output and "PLATFORM-DENIED" in output and "platform secret" not in output, output
        assert "You are Alice" not in output, output
        assert "MODEL:200" in output, f"the model is reachable: {output}"
        assert "SERVICE-exit:7" in output, f"the platform's other loopback services are not: {output}"
        platform_service.close()
        assert _uid_processes(uids[bob]), "the daemonised sleep runs as Bob's Unix user"

        await runtime.sleep(bob)
        assert runtime.user_dir(bob).stat().st_uid == 0, "a sleeping user's folder is root's again"
        assert _uid_processes(uids[bob]) == [], "nothing Bob's agent started outlives its gateway"
        assert await _chat(alice_endpoint, alice, "still there?")
    finally:
        await runtime.close()
