"""Every input bounded: request bodies before parsing (413 with the limit), request rates per token
and per client address (429 with Retry-After), and forwarding headers believed only from a
configured proxy, so a client cannot choose the URL Twilio's signature is checked against."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from temporalio.testing import WorkflowEnvironment

from api.app import create_app as api_app
from core.bounded import BodyLimit
from core.process import free_port
from core.request_limits import RequestLimit
from core.serve import serving
from core.settings import Settings
from emulators.carrier import twiml


async def _echo(scope, receive, send):  # type: ignore[no-untyped-def]
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def test_a_body_is_read_up_to_its_paths_limit_and_refused_past_it() -> None:
    app = BodyLimit(_echo, default=10, limits={"/big/": 100, "/big/small/": 5})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        assert (await http.post("/x", content=b"0123456789")).content == b"0123456789"
        over = await http.post("/x", content=b"0123456789a")
        assert over.status_code == 413 and "limit of 10 bytes" in over.json()["detail"]
        assert (await http.post("/big/x", content=b"a" * 100)).status_code == 200
        assert (await http.post("/big/small/x", content=b"a" * 6)).status_code == 413, "the longest prefix wins"

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
            for _ in range(40):
                yield b"aaaa"
        assert (await http.post("/big/x", content=chunks())).status_code == 413
        lying = await http.post("/x", content=b"0123456789a", headers={"content-length": "3"})
        assert lying.status_code in (400, 413)


async def test_a_nul_character_is_refused_wherever_it_hides() -> None:
    """PostgreSQL cannot store one in text: refused at the edge, never a 500 deep in a handler."""
    app = BodyLimit(_echo, default=1000)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        for refused in (http.get("/history", params={"q": "a\x00b"}), http.get("/x%00y"),
                        http.post("/sms", data={"Body": "a\x00b"}),
                        http.post("/mcp", content=b'{"text": "a\\u0000b"}'), http.post("/raw", content=b"a\x00b")):
            answer = await refused
            assert answer.status_code == 400 and "NUL" in answer.json()["detail"]
        kept = await http.post("/mcp", content=b'{"text": "100%00 sure"}', headers={"content-type": "application/json"})
        assert kept.status_code == 200, "'%00' is only an escape in a form"


async def test_rates_are_counted_per_token_and_per_address() -> None:
    app = RequestLimit(_echo, per_token="3/minute", per_client="5/minute")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("10.0.0.1", 1)),
                                 base_url="http://t") as http:
        for _ in range(3):
            assert (await http.post("/llm/tok-a/v1/chat/completions")).status_code == 200
        refused = await http.post("/llm/tok-a/v1/chat/completions")
        assert refused.status_code == 429 and "this token" in refused.json()["detail"]
        assert int(refused.headers["retry-after"]) >= 1
        assert (await http.post("/llm/tok-b/v1/chat/completions")).status_code == 200, "another token counts apart"
        assert (await http.post("/mcp", headers={"Authorization": "Bearer tok-a"})).status_code == 429, \
            "a bearer is the same token as in a path"
        for _ in range(5):
            assert (await http.get("/signin")).status_code == 200
        assert (await http.get("/signin")).status_code == 429
        for _ in range(10):
            assert (await http.post("/twilio/sms")).status_code == 200, "Twilio's signed webhooks: per sender instead"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("10.0.0.2", 1)),
                                 base_url="http://t") as other:
        assert (await other.get("/signin")).status_code == 200, "another address counts apart"


def test_forwarding_is_believed_only_from_listed_proxies() -> None:
    assert Settings(_env_file=None, forwarded_allow_ips="10.244.0.0/16, 192.168.1.7").forwarded_allow_ips == [
        "10.244.0.0/16", "192.168.1.7"]
    for bad in ("*", "ingress.local"):
        with pytest.raises(ValidationError, match="FORWARDED_ALLOW_IPS"):
            Settings(_env_file=None, forwarded_allow_ips=bad)


@pytest.fixture
async def api(database_url: str, temporal_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Settings]:
    settings = Settings(_env_file=None, data_dir=tmp_path, database_url=database_url, api_port=free_port(),
                        temporal_address=temporal_env.client.service_client.config.target_host,
                        temporal_task_queue=f"bounded-{uuid.uuid4().hex[:6]}")
    async with serving(api_app(settings), "127.0.0.1", settings.api_port):
        yield settings


async def _announce(settings: Settings, path: str, size: int) -> tuple[int, bytes]:
    """Sends only the headers of a POST announcing `size` bytes: the answer comes before any body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", settings.api_port)
    writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {size}\r\n\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    body = await asyncio.wait_for(reader.read(1000), 10)
    writer.close()
    return int(head.split()[1]), body


async def test_every_endpoint_family_refuses_an_oversized_body(api: Settings) -> None:
    for path, limit in (("/twilio/sms", 64 * 1024), ("/signin", 64 * 1024), ("/mcp", 64 * 1024),
                        ("/hotline/tok/v1/chat/completions", 1024 * 1024), ("/mcp-relay/x", 1024 * 1024),
                        ("/codec/decode", 8 * 1024 * 1024)):
        status, body = await _announce(api, path, limit + 1)
        assert status == 413 and f"limit of {limit} bytes".encode() in body, (path, status, body)
    async with httpx.AsyncClient(base_url=api.api_base_url, timeout=20) as http:
        sent = await http.post("/signin", content=b"a" * (64 * 1024 + 1))  # sent whole, without announcing
        assert sent.status_code == 413


async def test_a_forged_forwarded_host_does_not_pass_the_signature_check(api: Settings) -> None:
    token = api.twilio_auth_token.get_secret_value()
    form = {"From": "+15550001234", "To": api.hotline_number, "Body": "hi", "MessageSid": f"SM{uuid.uuid4().hex}"}
    forged_url = "https://attacker.example/twilio/sms"
    async with httpx.AsyncClient(base_url=api.api_base_url, timeout=20) as http:
        forged = await http.post("/twilio/sms", data=form, headers={
            "X-Twilio-Signature": twiml.signature(token, forged_url, form),
            "X-Forwarded-Host": "attacker.example", "X-Forwarded-Proto": "https"})
        assert forged.status_code == 403, "the URL checked is the server's own, not one the client names"
        honest = await http.post("/twilio/sms", data=form, headers={
            "X-Twilio-Signature": twiml.signature(token, f"{api.api_base_url}/twilio/sms", form)})
        assert honest.status_code == 200
