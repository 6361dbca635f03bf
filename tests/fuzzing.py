"""The platform fuzzed from outside (tests/test_fuzz.py with a small budget, bench/fuzz.py with a large
one): schemathesis over the API's OpenAPI schema, once as a stranger (unsigned, no session) and once
with valid signatures, sessions and tokens so the cases reach the handlers; and Hypothesis properties
on what the schema does not describe: Twilio's signed forms, the MCP endpoint, Media Streams frames,
think bodies and the spoken-input parsers.

Every runner counts into a `Tally` instead of stopping at the first failure, so one run reports
every distinct problem. A failure is a 5xx, a 2xx without authentication on a protected route, or a
property that does not hold."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from websockets.sync.client import connect as ws_connect

from api.app import create_app as api_app
from api.sign_in import SESSION_AUDIENCE, SESSION_COOKIE, csrf_token, open_session
from core import spoken
from core.callbacks import mcp_token
from core.db import transaction
from core.models import MediaStream, PhoneNumber, User, utcnow
from core.process import free_port
from core.serve import serving
from core.settings import Settings
from core.streams import seal_think_token
from core.texts import keyword, split_reply
from core.think import ChatBody
from core.tokens import TokenKind
from emulators.carrier import twiml
from emulators.carrier.app import create_app as carrier_app
from emulators.speech import SpeechRegistry
from emulators.standins import build_carrier
from voice.server import voice_serving
from workers.main import run_worker

# Routes anyone may call (2xx without authentication is right there); every other route of the schema
# needs a session, a signature or a token. /dev/outbox exists on a local platform only.
PUBLIC = {("GET", "/healthz"), ("GET", "/signin"), ("POST", "/signin"), ("POST", "/signin/code"),
          ("GET", "/dev/outbox"), ("OPTIONS", "/codec/{action}")}  # a CORS preflight carries no credentials
# Deliberate 5xx answers: health says 503 while a part of the platform is not ready.
DELIBERATE = {("GET", "/healthz", 503)}
# Not fuzzed with the fuzzing user's own session: they would end it (their own tests cover them).
ENDS_THE_SESSION = {("POST", "/signout"), ("POST", "/account/delete")}
OPERATOR = "ops@example.com"
NO_HEALTH_CHECKS = list(HealthCheck)


@dataclass
class Tally:
    cases: int = 0
    server_errors: int = 0
    unauthenticated_2xx: int = 0
    failures: list[str] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)  # "<family> <status>": how far cases reached
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, what: str, status: int | None, *, protected: bool = False, signed: bool = True,
              broken: str | None = None, family: str = "") -> None:
        with self.lock:
            self.cases += 1
            if family:
                self.statuses[f"{family} {status}"] += 1
            if status is not None and status >= 500:
                self.server_errors += 1
                self._fail(f"{what}: {status}")
            if status is not None and not signed and protected and 200 <= status < 300:
                self.unauthenticated_2xx += 1
                self._fail(f"{what}: {status} without authentication")
            if broken:
                self._fail(f"{what}: {broken}")

    def _fail(self, text: str) -> None:
        if len(self.failures) < 50 and text not in self.failures:
            self.failures.append(text)

    def summary(self) -> dict[str, int]:
        return {"cases": self.cases, "failures": len(self.failures), "unauthenticated_2xx": self.unauthenticated_2xx,
                "server_errors": self.server_errors}


@dataclass
class Target:
    """A platform to fuzz: the API, the voice bridge's Media Streams, a user with a number, and the
    credentials that reach the handlers (sessions, CSRF tokens, an MCP bearer, a hotline token)."""

    settings: Settings
    openapi: dict[str, Any]
    user_cookie: str
    user_csrf: str
    operator_cookie: str
    operator_csrf: str
    mcp_bearer: str
    hotline_token: str
    number: str
    user_id: uuid.UUID
    user_phone: str
    stream_id: uuid.UUID
    call_sid: str

    @property
    def base_url(self) -> str:
        return self.settings.api_base_url


def fuzz_settings(database_url: str, temporal_address: str, data_dir: Path) -> Settings:
    return Settings(_env_file=None, data_dir=data_dir, database_url=database_url, temporal_address=temporal_address,
                    temporal_task_queue=f"fuzz-{uuid.uuid4().hex[:6]}", api_port=free_port(),
                    carrier_port=free_port(), voice_port=free_port(), voice_media_port=free_port(),
                    worker_metrics_port=free_port(),
                    operators=[OPERATOR], local_agent_spares=0, number_pool_target=0,
                    # The fuzzer is one client sending as fast as it can: limits would only hide handlers.
                    token_request_limits="100000/second", client_request_limits="100000/second",
                    sign_in_address_limits="100000/minute", sign_in_client_limits="100000/minute",
                    inbound_text_limits="100000/minute", inbound_call_limits="100000/minute")


async def start_target(stack: AsyncExitStack, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> Target:
    carrier = build_carrier(settings, SpeechRegistry())
    await stack.enter_async_context(serving(carrier_app(carrier), "127.0.0.1", settings.carrier_port))
    await stack.enter_async_context(serving(api_app(settings), "127.0.0.1", settings.api_port))
    await stack.enter_async_context(voice_serving(settings))
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, stop))  # workflows the handlers start do run
    stack.push_async_callback(asyncio.wait_for, worker, 60)
    stack.callback(stop.set)
    user = User(phone_e164=f"+1555{uuid.uuid4().int % 10**7:07d}", phone_verified=True, agent_name="Fuzz",
                email=f"fuzz.{uuid.uuid4().hex[:6]}@example.com", email_verified=True)
    number = f"+1555{uuid.uuid4().int % 10**7:07d}"
    stream_id, call_sid = uuid.uuid4(), f"CA{uuid.uuid4().hex}"
    async with transaction(sessions) as session:
        session.add(user)
        await session.flush()
        session.add(PhoneNumber(e164=number, provider_sid=f"PN{uuid.uuid4().hex}", state="assigned", user_id=user.id))
        session.add(MediaStream(id=stream_id, ticket_digest=uuid.uuid4().hex, call_sid=call_sid,
                                kind="hotline", expires_at=utcnow() + timedelta(hours=2), connected_at=utcnow()))
    user_cookie = await open_session(settings, sessions, user_id=user.id, operator=None, user_agent="fuzz")
    operator_cookie = await open_session(settings, sessions, user_id=None, operator=OPERATOR, user_agent="fuzz")
    async with httpx.AsyncClient(base_url=settings.api_base_url) as http:
        openapi = (await http.get("/openapi.json")).json()
    return Target(settings=settings, openapi=openapi, user_cookie=user_cookie,
                  user_csrf=_csrf_of(settings, user_cookie), operator_cookie=operator_cookie,
                  operator_csrf=_csrf_of(settings, operator_cookie), mcp_bearer=mcp_token(settings, user.id, 0),
                  hotline_token=seal_think_token(settings.keyring, TokenKind.HOTLINE, stream_id, call_sid=call_sid,
                                                 ttl_s=7200, caller=user.phone_e164),
                  number=number, user_id=user.id, user_phone=user.phone_e164, stream_id=stream_id, call_sid=call_sid)


def _csrf_of(settings: Settings, cookie: str) -> str:
    claims = settings.keyring.open(TokenKind.SESSION, cookie, audience=SESSION_AUDIENCE)
    return csrf_token(settings.keyring, str(claims["sid"]))


def _budget(examples: int) -> Callable[[Any], Any]:
    return hypothesis_settings(max_examples=examples, deadline=None, database=None,
                               suppress_health_check=NO_HEALTH_CHECKS, print_blob=False)


# ---- the API from its OpenAPI schema ---------------------------------------------------------------


def fuzz_schema(target: Target, tally: Tally, *, signed: bool, examples: int) -> None:
    """Every operation of the schema, `examples` cases each (schemathesis' own generation)."""
    schema = schemathesis.openapi.from_dict(target.openapi)
    http = requests.Session()
    for operation in schema.get_all_operations():
        operation = operation.ok()
        key = (operation.method.upper(), operation.path)
        if signed and key in ENDS_THE_SESSION:
            continue

        @_budget(examples)
        @given(case=operation.as_strategy())
        def one(case: Any) -> None:
            headers, cookies = _credentials(target, case, signed)
            try:
                response = case.call(base_url=target.base_url, session=http, headers=headers, cookies=cookies,
                                     timeout=30, allow_redirects=False)
                status: int | None = response.status_code
                broken = None
            except requests.RequestException as error:
                status, broken = None, f"no answer ({type(error).__name__})"
            if status is not None and status >= 500:
                broken = f"query {case.query!r} body {str(case.body)[:100]!r}"
            if (*key, status) in DELIBERATE:
                status = None
            tally.count(f"{case.method} {case.formatted_path}", status, protected=key not in PUBLIC,
                        signed=signed, broken=broken, family=f"schema {'signed' if signed else 'unsigned'}")

        one()


def _credentials(target: Target, case: Any, signed: bool) -> tuple[dict[str, str], dict[str, str]]:
    if not signed:
        return {}, {}
    path = case.formatted_path
    if path.startswith("/hotline/"):
        case.path_parameters["token"] = target.hotline_token
    operator = path.startswith(("/operator", "/codec"))
    headers = {"X-CSRF-Token": target.operator_csrf if operator else target.user_csrf}
    if path.startswith("/twilio/"):
        form = case.body if isinstance(case.body, dict) else {}
        query = f"?{urlencode(case.query, doseq=True)}" if case.query else ""
        url = f"{target.base_url}{case.formatted_path}{query}"
        headers["X-Twilio-Signature"] = twiml.signature(
            target.settings.twilio_auth_token.get_secret_value(), url, {k: str(v) for k, v in form.items()})
    return headers, {SESSION_COOKIE: target.operator_cookie if operator else target.user_cookie}


# ---- Twilio's webhooks: signed forms the schema does not describe --------------------------------

TWILIO_PATHS = ["/twilio/voice", "/twilio/sms", "/twilio/calls/status", "/twilio/sms/status", "/twilio/outbound"]
TWILIO_FIELDS = ["From", "To", "Body", "MessageSid", "SmsSid", "CallSid", "CallStatus", "NumMedia", "MediaUrl0",
                 "MediaContentType0", "MessageStatus", "ErrorCode", "StirVerstat", "AnsweredBy", "Digits",
                 "AccountSid", "CallDuration", "Direction"]
_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)
_phoneish = st.one_of(st.from_regex(r"\+1555[0-9]{7}", fullmatch=True), _text)


def fuzz_twilio_forms(target: Target, tally: Tally, *, examples: int) -> None:
    http = requests.Session()
    token = target.settings.twilio_auth_token.get_secret_value()
    forms = st.dictionaries(st.one_of(st.sampled_from(TWILIO_FIELDS), _text),
                            st.one_of(_phoneish, _text, st.just(target.number)), max_size=10)

    @_budget(examples)
    @given(path=st.sampled_from(TWILIO_PATHS), form=forms, query=st.dictionaries(_text, _text, max_size=2),
           signed=st.booleans())
    def one(path: str, form: dict[str, str], query: dict[str, str], signed: bool) -> None:
        url = f"{target.base_url}{path}" + (f"?{urlencode(query)}" if query else "")
        headers = {"X-Twilio-Signature": twiml.signature(token, url, form) if signed else "forged"}
        response = http.post(url, data=form, headers=headers, timeout=30, allow_redirects=False)
        # Unsigned: refused, with 403 (or 400 where the input is refused before the signature is read).
        broken = None if signed or response.status_code in (400, 403) else f"unsigned form answered {response.status_code}"
        tally.count(f"POST {path}", response.status_code, broken=broken,
                    family=f"twilio {'signed' if signed else 'unsigned'}")

    one()


# ---- the platform MCP server ----------------------------------------------------------------------

TOOLS = ["schedule_reminder", "list_reminders", "cancel_reminder", "send_sms", "call_me", "web_search",
         "calendar_events", "create_event", "find_free_time", "search_mail", "read_mail", "draft_reply",
         "send_draft", "move_event", "cancel_event"]
_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text,
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
                     max_leaves=12)


def fuzz_mcp(target: Target, tally: Tally, *, examples: int) -> None:
    http = requests.Session()
    calls = st.fixed_dictionaries({"name": st.one_of(st.sampled_from(TOOLS), _text),
                                   "arguments": st.one_of(st.dictionaries(_text, _json, max_size=5), _json)})
    bodies = st.one_of(
        st.fixed_dictionaries({"jsonrpc": st.just("2.0"), "id": st.integers(), "method": st.just("tools/call"),
                               "params": calls}),
        st.fixed_dictionaries({"jsonrpc": st.one_of(st.just("2.0"), _text), "id": _json,
                               "method": st.one_of(st.sampled_from(["initialize", "tools/list", "ping"]), _text),
                               "params": _json}),
        _json)

    @_budget(examples)
    @given(body=bodies, bearer=st.sampled_from(["valid", "none", "forged"]))
    def one(body: Any, bearer: str) -> None:
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        if bearer != "none":
            headers["Authorization"] = f"Bearer {target.mcp_bearer if bearer == 'valid' else 'forged.token'}"
        response = http.post(f"{target.base_url}/mcp", data=json.dumps(body), headers=headers, timeout=60)
        broken = None
        if bearer != "valid" and 200 <= response.status_code < 300:
            broken = "answered without a valid bearer"
        tally.count("POST /mcp", response.status_code, protected=True, signed=bearer == "valid", broken=broken,
                    family=f"mcp {bearer}")

    one()


# ---- Media Streams frames -------------------------------------------------------------------------

MEDIA_EVENTS = ["connected", "start", "media", "mark", "dtmf", "stop", "closed", "unknown"]


def fuzz_media_streams(target: Target, tally: Tally, *, examples: int) -> None:
    settings = target.settings
    url = f"ws://127.0.0.1:{settings.voice_media_port}/twilio/media"
    signature = twiml.signature(settings.twilio_auth_token.get_secret_value(), settings.media_stream_url, {})
    messages = st.one_of(
        st.builds(lambda event, extra: json.dumps({"event": event, **extra}), st.sampled_from(MEDIA_EVENTS),
                  st.dictionaries(st.sampled_from(["streamSid", "start", "media", "mark", "dtmf", "sequenceNumber"]),
                                  _json, max_size=4)),
        _text, st.binary(max_size=300))

    @_budget(examples)
    @given(frames=st.lists(messages, min_size=1, max_size=6))
    def one(frames: list[str | bytes]) -> None:
        broken = None
        try:
            with ws_connect(url, additional_headers={"X-Twilio-Signature": signature}, open_timeout=10,
                            close_timeout=2) as socket:
                for frame in frames:
                    socket.send(frame)
        except Exception:  # the bridge may close on a bad frame: that is an answer, not a failure
            pass
        try:
            alive = httpx.get(f"http://127.0.0.1:{settings.voice_media_port}/healthz", timeout=10).status_code
        except httpx.HTTPError as error:
            alive, broken = None, f"the Media Streams server stopped answering ({type(error).__name__})"
        tally.count("Media Streams frames", alive, broken=broken)

    one()


# ---- what needs no server: think bodies and spoken input --------------------------------------------


def fuzz_parsers(tally: Tally, *, examples: int) -> None:
    said = st.one_of(_text, st.lists(st.sampled_from(
        "oh zero one two three four five six seven eight nine at dot dash underscore yes no skip new code "
        "jane doe gmail com formal casual friendly".split()), max_size=12).map(" ".join))

    @_budget(examples)
    @given(text=said)
    def spoken_input(text: str) -> None:
        problems = []
        digits = spoken.parse_digits(text)
        if not digits.isdigit() and digits:
            problems.append(f"parse_digits gave {digits!r}")
        code = spoken.parse_code(text)
        if code is not None and not (len(code) == 6 and code.isdigit()):
            problems.append(f"parse_code gave {code!r}")
        email = spoken.parse_email(text)
        if email is not None and (email.count("@") != 1 or " " in email):
            problems.append(f"parse_email gave {email!r}")
        spoken.parse_confirmation(text), spoken.parse_personality(text), spoken.parse_name(text)
        spoken.wants_skip(text), spoken.wants_new_code(text), spoken.wants_different_email(text)
        keyword(text)
        parts = split_reply(text * 40)
        if len(parts) > 3 or any(len(p) > 1600 for p in parts):
            problems.append("split_reply broke its limits")
        tally.count("spoken input", None, broken="; ".join(problems) or None)

    @_budget(examples)
    @given(body=st.one_of(_json.map(json.dumps), _text, st.fixed_dictionaries(
        {"messages": st.lists(_json, max_size=5), "stream": _json}).map(json.dumps)))
    def think_body(body: str) -> None:
        from pydantic import ValidationError

        from core.think import ThinkRequest
        broken = None
        try:
            parsed = ChatBody.model_validate_json(body)
            request = ThinkRequest({}, parsed.messages, bool(parsed.stream))
            request.said, request.after_function  # noqa: B018 (what every think endpoint reads)
        except ValidationError:
            pass
        except Exception as error:  # anything else would be a 500 on a think endpoint
            broken = f"{type(error).__name__}: {error}"[:200]
        tally.count("think body", None, broken=broken)

    spoken_input()
    think_body()


def run_all(target: Target, tally: Tally, *, examples: int) -> None:
    """Every runner, one after another (in a thread: the servers run on the caller's event loop)."""
    fuzz_parsers(tally, examples=examples * 5)
    fuzz_schema(target, tally, signed=False, examples=examples)
    fuzz_schema(target, tally, signed=True, examples=examples)
    fuzz_twilio_forms(target, tally, examples=examples * 5)
    fuzz_mcp(target, tally, examples=examples * 5)
    fuzz_media_streams(target, tally, examples=examples)


async def fuzz(target: Target, *, examples: int) -> Tally:
    tally = Tally()
    await asyncio.to_thread(run_all, target, tally, examples=examples)
    return tally

