"""Each port's adapters against real peers: the local carrier (through the twilio client), an SMTP
server on loopback, PostgreSQL for the outbox, a folder and an S3 emulator for archives."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import composition
from activities.archive.stores import FolderArchiveStore, S3ArchiveStore
from activities.email.mailers import OutboxMailer, SmtpMailer
from activities.telephony.twilio import TwilioTelephony
from core.db import create_engine, sessionmaker
from core.models import OutboxEmail
from core.ports import MediaUnavailable
from core.serve import serving
from core.settings import Settings
from emulators.carrier.app import create_app
from emulators.carrier.carrier import Carrier
from emulators.carrier.handset import handset
from tests.conftest import free_port, s3_store


async def test_settings_choose_the_adapters(tmp_path: Path) -> None:
    local = Settings(_env_file=None, data_dir=tmp_path)
    assert isinstance(composition.archive_store(local), FolderArchiveStore)
    assert isinstance(composition.mailer(local, sessions=None), OutboxMailer)  # type: ignore[arg-type]
    local_telephony = composition.telephony(local)
    assert local_telephony.client.api.base_url == local.carrier_url
    real = Settings(_env_file=None, archive_store="s3", mailer="smtp", telephony="twilio",
                    s3_endpoint_url="https://nyc3.digitaloceanspaces.com")
    assert isinstance(composition.archive_store(real), S3ArchiveStore)
    assert isinstance(composition.mailer(real, sessions=None), SmtpMailer)  # type: ignore[arg-type]
    real_telephony = composition.telephony(real)
    assert real_telephony.client.api.base_url == "https://api.twilio.com"
    await local_telephony.close()
    await real_telephony.close()


async def test_telephony_adapter_against_the_local_carrier() -> None:
    port = free_port()
    settings = Settings(_env_file=None, carrier_port=port)
    async with serving(create_app(Carrier(settings.twilio_account_sid, "local-auth-token")), "127.0.0.1", port):
        telephony = composition.telephony(settings)
        assert isinstance(telephony, TwilioTelephony)
        try:
            [first, *_] = await telephony.search_numbers(area_code="212", limit=2)
            owned = await telephony.buy_number(first, voice_url="http://x/voice", sms_url="http://x/sms")
            assert owned.e164 == first and [n.sid for n in await telephony.list_numbers()] == [owned.sid]
            await telephony.configure_number(owned.sid, voice_url="http://y/voice", sms_url="http://y/sms")
            assert (await telephony.list_numbers())[0].voice_url == "http://y/voice"
            async with handset(settings.carrier_url, "+15550109999", auto_answer=True) as phone:
                sid = await telephony.send_sms(to=phone.number, from_=owned.e164, body="hi there")
                assert (await phone.wait_for("sms"))["sid"] == sid
                call = await telephony.place_call(to=phone.number, from_=owned.e164,
                                                  twiml="<Response><Say>Reminder</Say><Pause length='20'/></Response>")
                await phone.wait_for("say", lambda e: e["text"] == "Reminder")
                await telephony.redirect_call(call, twiml="<Response><Say>Changed</Say><Pause length='20'/></Response>")
                await phone.wait_for("say", lambda e: e["text"] == "Changed")
                await telephony.hang_up(call)
                await phone.wait_for("call_state", lambda e: e["state"] == "completed")
            with pytest.raises(ValueError):
                await telephony.place_call(to=phone.number, from_=owned.e164)
            await telephony.release_number(owned.sid)
            assert await telephony.list_numbers() == []
        finally:
            await telephony.close()


async def test_mms_attachments_are_fetched_only_from_the_account_with_its_credentials() -> None:
    port = free_port()
    settings = Settings(_env_file=None, carrier_port=port)
    carrier = Carrier(settings.twilio_account_sid, settings.twilio_auth_token.get_secret_value(),
                      public_url=settings.carrier_url)
    async with serving(create_app(carrier), "127.0.0.1", port):
        telephony = composition.telephony(settings)
        try:
            [number] = await telephony.search_numbers(area_code="213", limit=1)
            await telephony.buy_number(number, voice_url="http://x/voice", sms_url="")
            async with handset(settings.carrier_url, "+15550109998") as phone:
                await phone.text(number, "see this", media=[("text/plain", b"locker 4471")])
                message = carrier.messages[(await phone.wait_for("sms_sent"))["sid"]]
            url = settings.carrier_url + message.media_path(settings.twilio_account_sid, message.media[0].sid)
            assert telephony.owns_media_url(url)
            media = await telephony.fetch_media(url)
            assert media.data == b"locker 4471" and media.content_type.startswith("text/plain")
            with pytest.raises(MediaUnavailable) as too_big:
                await telephony.fetch_media(url, max_bytes=4)
            assert too_big.value.status == 413
            with pytest.raises(MediaUnavailable) as gone:
                await telephony.fetch_media(url[:-32] + "0" * 32)
            assert gone.value.status == 404
            other_account = url.replace(settings.twilio_account_sid, "AC" + "1" * 32)
            for foreign in (other_account, url + "/../../../Calls.json", "http://169.254.169.254/latest/meta-data/",
                            url.replace(settings.carrier_url, "https://attacker.example")):
                assert not telephony.owns_media_url(foreign), foreign
                with pytest.raises(MediaUnavailable):
                    await telephony.fetch_media(foreign)
            twilio_url = url.replace(settings.carrier_url, "https://api.twilio.com")
            assert telephony.owns_media_url(twilio_url), "Twilio's own media host, whatever the REST base"
        finally:
            await telephony.close()


async def test_outbox_mailer_writes_the_outbox(sessions: async_sessionmaker[AsyncSession]) -> None:
    await OutboxMailer(sessions).send(to="jane.doe@gmail.com", subject="Your code", body="Code: 123456")
    async with sessions() as session:
        rows = (await session.execute(select(OutboxEmail).where(OutboxEmail.to_address == "jane.doe@gmail.com"))).scalars().all()
    assert [(r.subject, r.body) for r in rows] == [("Your code", "Code: 123456")]


@pytest.fixture
async def smtp_server() -> AsyncIterator[tuple[int, list[str]]]:
    """A minimal SMTP server on loopback that keeps what it receives."""
    received: list[str] = []

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def reply(line: str) -> None:
            writer.write((line + "\r\n").encode())
            await writer.drain()

        await reply("220 localhost ESMTP test")
        while line := (await reader.readline()).decode().strip():
            verb = line.split(" ")[0].upper()
            if verb in ("EHLO", "HELO"):
                await reply("250 localhost")
            elif verb == "DATA":
                await reply("354 go ahead")
                data = []
                while (chunk := (await reader.readline()).decode()) != ".\r\n":
                    data.append(chunk)
                received.append("".join(data))
                await reply("250 queued")
            elif verb == "QUIT":
                await reply("221 bye")
                break
            else:
                await reply("250 ok")
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], received
    server.close()
    await server.wait_closed()


async def test_smtp_mailer_delivers(smtp_server: tuple[int, list[str]]) -> None:
    port, received = smtp_server
    mailer = SmtpMailer(host="127.0.0.1", port=port, sender="DeepClaw <no-reply@deepclaw.local>", starttls=False)
    await mailer.send(to="bob_smith@outlook.com", subject="Verify your email", body="Your code is 904211")
    assert len(received) == 1
    assert "To: bob_smith@outlook.com" in received[0] and "Your code is 904211" in received[0]


def _checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def _round_trip(store: FolderArchiveStore | S3ArchiveStore, tmp_path: Path) -> None:
    bundle = tmp_path / "state.tar.gz"
    bundle.write_bytes(os.urandom(300_000))
    key = "users/6b1f/agent-state.tar.gz"
    assert not await store.exists(key)
    await store.put(key, bundle)
    assert await store.exists(key)
    restored = tmp_path / "restored.tar.gz"
    await store.get(key, restored)
    assert _checksum(restored) == _checksum(bundle)
    await store.delete(key)
    assert not await store.exists(key)
    with pytest.raises(FileNotFoundError):
        await store.get(key, restored)
    with pytest.raises(ValueError):
        await store.put("../escape", bundle)


async def test_folder_archive_round_trip(tmp_path: Path) -> None:
    await _round_trip(FolderArchiveStore(tmp_path / "archive"), tmp_path)


async def test_s3_archive_round_trip_against_an_emulator(s3_emulator: str, tmp_path: Path) -> None:
    await _round_trip(s3_store(s3_emulator), tmp_path)


def test_kubernetes_runtime_from_settings(tmp_path: Path) -> None:
    from activities.runtime.kubernetes import KubernetesAgentRuntime

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://k8s.example:6443'}}]\n"
        "users: [{name: u, user: {token: abc}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n")
    sessions = sessionmaker(create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none"))  # not connected here
    image = "registry.example/deepclaw/agent@sha256:" + "c" * 64
    with pytest.raises(ValueError, match="pinned by digest"):
        composition.agent_runtime(Settings(_env_file=None, agent_runtime="kubernetes", kubeconfig=kubeconfig,
                                        kubernetes_agent_image="ghcr.io/openclaw/openclaw:latest"), sessions)
    with pytest.raises(ValueError, match="ARCHIVE_STORE=s3"):
        composition.agent_runtime(Settings(_env_file=None, agent_runtime="kubernetes", kubeconfig=kubeconfig,
                                        kubernetes_agent_image=image), sessions)
    runtime = composition.agent_runtime(Settings(
        _env_file=None, agent_runtime="kubernetes", kubeconfig=kubeconfig, kubernetes_agent_image=image,
        archive_store="s3", s3_bucket="deepclaw-archive", s3_endpoint_url="https://nyc3.digitaloceanspaces.com",
        kubernetes_agent_spares=3), sessions)
    assert isinstance(runtime, KubernetesAgentRuntime)
    assert runtime.api.api_client.configuration.host == "https://k8s.example:6443"
    assert runtime.cluster.spares == 3 and runtime.cluster.pool == "agents"
