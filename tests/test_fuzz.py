"""The platform fuzzed from outside with a small budget (tests/fuzzing.py; bench/fuzz.py runs the same
far longer): no 5xx anywhere, no 2xx without authentication on a protected route, every property of
the parsers holds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import httpx
import pytest
import websockets
from temporalio.testing import WorkflowEnvironment

from api.sign_in import SESSION_AUDIENCE, SESSION_COOKIE
from core.callbacks import MCP_AUDIENCE, MEDIA_AUDIENCE, PURPOSE_AUDIENCE
from core.db import create_engine, sessionmaker
from core.streams import THINK_AUDIENCES
from core.tokens import TokenKind
from emulators.carrier import twiml
from tests.fuzzing import Target, fuzz, fuzz_settings, start_target
from voice.media import MAX_MESSAGE_BYTES

EXAMPLES = 4  # per schema operation; the properties take a few times as many
SEALED = [TokenKind.THINK, TokenKind.HOTLINE, TokenKind.MESSAGE, TokenKind.PURPOSE, TokenKind.MCP, TokenKind.MEDIA,
          TokenKind.SESSION, TokenKind.OAUTH_STATE]


@pytest.fixture(scope="module")
async def target(database_url: str, temporal_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
                 ) -> AsyncIterator[Target]:
    settings = fuzz_settings(database_url, temporal_env.client.service_client.config.target_host,
                             tmp_path_factory.mktemp("fuzz"))
    engine = create_engine(database_url)
    async with AsyncExitStack() as stack:
        yield await start_target(stack, settings, sessionmaker(engine))
    await engine.dispose()


async def test_fuzzing_finds_no_server_error_and_no_open_door(target: Target) -> None:
    tally = await fuzz(target, examples=EXAMPLES)
    assert tally.cases >= 200, tally.summary()
    assert tally.failures == [], "\n".join(tally.failures)
    assert tally.summary() == {"cases": tally.cases, "failures": 0, "unauthenticated_2xx": 0, "server_errors": 0}


async def test_a_token_of_one_kind_opens_no_endpoint_of_another(target: Target) -> None:
    """Every endpoint that takes a token, given a token of every other kind sealed for its very audience
    and naming the same user and stream: refused. Its own kind, as a control, is accepted."""
    settings = target.settings
    claims = {"user": str(target.user_id), "stream": str(target.stream_id), "call": target.call_sid,
              "caller": target.user_phone, "gen": 0, "sid": "x", "url": "https://api.twilio.com/x"}
    voice = settings.voice_base_url
    chat = {"messages": [{"role": "user", "content": "hello"}]}
    twilio_token = settings.twilio_auth_token.get_secret_value()

    async def status(http: httpx.AsyncClient, kind: TokenKind, token: str) -> int:
        if kind in THINK_AUDIENCES:
            base = voice if kind != TokenKind.HOTLINE else settings.api_base_url
            path = {TokenKind.THINK: "llm", TokenKind.HOTLINE: "hotline", TokenKind.MESSAGE: "message"}[kind]
            return (await http.post(f"{base}/{path}/{token}/v1/chat/completions", json=chat)).status_code
        if kind == TokenKind.MCP:
            return (await http.post(f"{settings.api_base_url}/mcp", headers={
                "Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"},
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})).status_code
        if kind == TokenKind.MEDIA:
            return (await http.get(f"{settings.api_base_url}/media/{token}")).status_code
        if kind == TokenKind.PURPOSE:
            url = f"{settings.api_base_url}/twilio/outbound?purpose={token}"
            form = {"CallSid": "CAx", "From": target.number, "To": target.user_phone}
            answer = await http.post(url, data=form, headers={"X-Twilio-Signature": twiml.signature(
                twilio_token, url, form)})
            return 401 if "<Hangup" in answer.text or answer.status_code >= 400 else answer.status_code
        assert kind == TokenKind.SESSION
        http.cookies.set(SESSION_COOKIE, token)
        try:
            return (await http.get(f"{settings.api_base_url}/agent")).status_code
        finally:
            http.cookies.clear()

    audiences = {**THINK_AUDIENCES, TokenKind.MCP: MCP_AUDIENCE, TokenKind.MEDIA: MEDIA_AUDIENCE,
                 TokenKind.PURPOSE: PURPOSE_AUDIENCE, TokenKind.SESSION: SESSION_AUDIENCE}
    async with httpx.AsyncClient(timeout=30) as http:
        for endpoint, audience in audiences.items():
            for kind in SEALED:
                if kind == endpoint:
                    continue
                forged = settings.keyring.seal(kind, claims, audience=audience, ttl_s=600)
                answer = await status(http, endpoint, forged)
                assert answer in (401, 403, 303, 404), (endpoint.value, kind.value, answer)
        own = {TokenKind.MCP: target.mcp_bearer, TokenKind.HOTLINE: target.hotline_token}
        for endpoint, token in own.items():
            assert await status(http, endpoint, token) == 200, f"the {endpoint.value} endpoint takes its own kind"


async def test_an_oversized_media_streams_message_closes_its_connection(target: Target) -> None:
    settings = target.settings
    signature = twiml.signature(settings.twilio_auth_token.get_secret_value(), settings.media_stream_url, {})
    url = f"ws://127.0.0.1:{settings.voice_media_port}/twilio/media"
    async with websockets.connect(url, additional_headers={"X-Twilio-Signature": signature},
                                  max_size=None) as socket:
        await socket.send("x" * (MAX_MESSAGE_BYTES + 1))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009, closed.value  # message too big
    async with httpx.AsyncClient() as http:  # and the server goes on serving
        assert (await http.get(f"http://127.0.0.1:{settings.voice_media_port}/healthz")).status_code == 200
