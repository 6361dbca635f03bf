"""Every knob of the platform, read from `DEEPCLAW_*` environment variables (or `.env`).

Local adapters are the default everywhere, so a fresh machine runs with no accounts;
production switches each port to its real adapter by setting, never by code change.
"""

from __future__ import annotations

import ipaddress
from datetime import time
from enum import StrEnum
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from limits import parse_many
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url

from core.limits import Limit
from core.timezones import parse_quiet_hours
from core.keyring import DataKeyring, derived_key_entry, parse_key
from core.tokens import Keyring


DEV_PLATFORM_SECRET = "local-development-secret"
DEV_TWILIO_AUTH_TOKEN = "local-auth-token"  # what the carrier stand-in accepts
MIN_SECRET_CHARS = 32  # a Twilio auth token is 32 characters
MIN_DATABASE_PASSWORD_CHARS = 16
WEAK_DATABASE_PASSWORDS = {"", "postgres", "password", "deepclaw", "changeme"}


class TelephonyAdapter(StrEnum):
    LOCAL = "local"  # the twilio client pointed at the local carrier
    TWILIO = "twilio"


class VoiceAgentAdapter(StrEnum):
    LOCAL = "local"  # the Deepgram-protocol emulator on loopback
    DEEPGRAM = "deepgram"


class AgentRuntimeAdapter(StrEnum):
    LOCAL = "local"  # one OpenClaw subprocess per user
    KUBERNETES = "kubernetes"


class ArchiveStoreAdapter(StrEnum):
    LOCAL = "local"  # a folder under the data dir
    S3 = "s3"


class WebSearchAdapter(StrEnum):
    LOCAL = "local"  # the DuckDuckGo-shaped stand-in on loopback
    DUCKDUCKGO = "duckduckgo"  # keyless: DuckDuckGo's HTML endpoint


class StandinVoice(StrEnum):
    PIPER = "piper"  # the packaged natural voice: a person trying the platform hears it
    ESPEAK = "espeak"  # espeak-ng: a line in milliseconds, for many calls at once (bench/load.py)


class MailerAdapter(StrEnum):
    LOCAL = "local"  # an outbox table shown in the dashboard
    SMTP = "smtp"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DEEPCLAW_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # Where local state lives: embedded PostgreSQL, Temporal's SQLite file, tools, agents.
    data_dir: Path = Path(".data")
    # Pinned Node + OpenClaw, shared by every checkout on the machine (`python -m devstack tools`).
    tools_dir: Path = Path.home() / ".cache" / "deepclaw" / "tools"

    # Processes
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    voice_host: str = "127.0.0.1"
    voice_port: int = 8001  # HTTP: /healthz and the LLM proxy
    voice_media_port: int = 8011  # Twilio Media Streams (websockets only, the hot path)
    # Both bridge ports with SO_REUSEPORT: a second bridge on this machine takes new calls while a
    # draining one finishes its own (the local twin of a rolling update; bench/chaos.py).
    voice_reuse_port: bool = False
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = 8003  # the worker's /metrics (the API's and the bridge's are on their ports)

    # Observability (core/metrics.py, core/tracing.py). /metrics answers a bearer of this token; unset,
    # loopback only. Spans go to this OTLP/HTTP collector (e.g. http://otel-collector:4318) when set.
    metrics_token: SecretStr | None = None
    otlp_endpoint: str | None = None
    public_base_url: str | None = Field(
        default=None, description="URL Twilio reaches the API at; defaults to http://api_host:api_port"
    )

    # Retention (activities/retention.py, daily): call transcripts, texts (and what was sent to users,
    # answered confirmations), and audit events are removed this many days after they were made.
    retain_call_transcripts_days: int = Field(default=365, ge=1)
    retain_texts_days: int = Field(default=365, ge=1)
    retain_audit_days: int = Field(default=730, ge=1)
    # Request rates (core/request_limits.py; `limits` notation, ';'-separated): per token (a call's
    # think URL, an agent's MCP bearer) and per client address for everything else but Twilio's
    # signed webhooks. Over them: 429 with Retry-After. Counted per replica, in memory.
    token_request_limits: str = "60/second;1800/minute"
    client_request_limits: str = "100/second;3000/minute"
    # Addresses of the proxies in front (an ingress, a load balancer), comma-separated IPs or CIDRs:
    # only their X-Forwarded-For/-Proto are believed (uvicorn's forwarded_allow_ips). Empty: none is,
    # the connecting address is the client (per-client limits count it).
    forwarded_allow_ips: Annotated[list[str], NoDecode] = []

    # Public URLs of the voice bridge: HTTP (Deepgram calls the LLM proxy there) and Media Streams.
    voice_public_base_url: str | None = None  # default http://voice_host:voice_port
    media_public_url: str | None = None  # Media Streams; default ws://voice_host:voice_media_port/twilio/media
    # Every token's key is derived from this (core.tokens). Set a long random value in production.
    platform_secret: SecretStr = SecretStr(DEV_PLATFORM_SECRET)
    # Earlier platform secrets, comma-separated: tokens they made are still accepted while listed.
    platform_secrets_previous: Annotated[list[SecretStr], NoDecode] = []
    # Keys that encrypt what is kept at rest (core/keyring.py: OAuth tokens, MCP server headers):
    # comma-separated '<key id>:<base64 of 32 bytes>' (`deepclaw new-key ID` makes one), the first
    # current. Rotate: put a new key first, run `deepclaw rotate-keys`, then drop the old one.
    # Unset: one key derived from the platform secret (development only).
    encryption_keys: Annotated[list[SecretStr], NoDecode] = []

    # What a user's agent may send its user on its own (`limits` syntax, every limit applies; reminders
    # the user asked for are not counted).
    agent_sms_limits: str = "3/minute;10/hour;30/day"
    agent_call_limits: str = "1/minute;3/hour"
    # Messages callers other than the user may leave for them (texted to the user), per user.
    caller_message_limits: str = "5/hour;20/day"
    # Wrong PINs said on calls to a user's number, per user (then calls needing the PIN are refused).
    wrong_pin_limits: str = "5/hour;10/day"
    # What one sender may send to platform numbers (texts) or place (calls), whoever they are; over it,
    # they get one polite reply per over_limit_notice_limits and nothing reaches an agent.
    inbound_text_limits: str = "20/minute;120/hour;500/day"
    inbound_call_limits: str = "5/minute;30/hour;100/day"
    over_limit_notice_limits: str = "1/hour"

    # What users pay (core/billing.py): a price plan file; None: the packaged standard plan.
    price_plan: Path | None = None

    # The dashboard (api/routes/dashboard.py). Operators sign in like users, by phone or email
    # (comma-separated), and may view any user, suspend or resume one, and block a calling number.
    operators: Annotated[list[str], NoDecode] = []
    session_hours: float = Field(default=336.0, gt=0)  # a sign-in lasts two weeks
    sign_in_code_ttl_s: float = Field(default=600.0, gt=0)
    sign_in_code_attempts: int = Field(default=5, ge=1)  # wrong guesses, then that code is void
    # Codes asked for, per address (phone or email) and per client (IP address).
    sign_in_address_limits: str = "3/10 minutes;10/day"
    sign_in_client_limits: str = "10/hour;30/day"

    # Calls
    max_call_s: float = 1800.0  # hang up after 30 minutes
    voice_drain_s: float = 570.0  # on SIGTERM the bridge lets calls in progress finish this long
    # Say goodbye after two minutes without a word from the caller, counted from the end of the agent's
    # own words when those came later (a slow answer is not the caller's silence).
    silent_caller_hangup_s: float = 120.0
    # A turn whose answer has not started this long after it reached the user's OpenClaw is given up
    # on the call (an apology, fillers until then); the agent finishes it and texts the answer.
    think_timeout_s: float = Field(default=60.0, gt=0)

    # Reaching the user: reminders, and the agent's texts and calls (workflows/delivery.py).
    # A user's time zone defaults to their phone number's; this when the number says nothing.
    default_time_zone: str = "America/New_York"
    quiet_hours: str = "21:00-08:00"  # local; a call due then is sent as a text ("off": none; users can set their own)
    reminder_lead_s: float = 60.0  # this long before a reminder is due, wake the agent to phrase it
    call_ring_timeout_s: int = Field(default=30, ge=5, le=600)  # then a placed call counts as unanswered

    # Temporal
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_task_queue: str = "deepclaw"
    temporal_tls: bool = False
    temporal_tls_cert_path: Path | None = None
    temporal_tls_key_path: Path | None = None
    temporal_api_key: SecretStr | None = None
    temporal_ui_port: int = 8233
    # Where operators open Temporal UI (links from the operator pages; the codec server's CORS origin).
    # Default: http://<temporal host>:<temporal_ui_port>, the dev server's UI.
    temporal_ui_public_url: str | None = None
    # `python -m devstack run` starts a Temporal dev server unless this is off (e.g. pointing at a cluster).
    local_temporal: bool = True

    # PostgreSQL
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5433/deepclaw"
    # `python -m devstack run` starts embedded PostgreSQL on the database_url's port unless this is off.
    local_postgres: bool = True

    # Telephony: Twilio's credentials, or the local carrier's (which accepts these defaults).
    twilio_account_sid: str = "AC" + "0" * 32
    twilio_auth_token: SecretStr = SecretStr(DEV_TWILIO_AUTH_TOKEN)
    # Twilio's REST API: a base URL (e.g. a test double or a proxy), or Twilio's edge and region
    # (e.g. edge=dublin, region=ie1). Unset: api.twilio.com (locally: the carrier stand-in).
    twilio_api_url: str | None = None
    twilio_edge: str | None = None
    twilio_region: str | None = None
    # The number strangers call to get set up.
    hotline_number: str = "+15550000100"

    # Voice agent: Deepgram's endpoint and key (used when voice_agent=deepgram).
    deepgram_url: str = "wss://agent.deepgram.com/v1/agent/converse"
    deepgram_speak_url: str = "https://api.deepgram.com"  # TTS REST (the dashboard's voice samples)
    deepgram_api_key: SecretStr | None = None

    # The model behind every user's OpenClaw: an OpenAI-compatible provider, or the local stand-in.
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_model: str = "deepclaw-local"

    # Local stand-ins (`deepclaw standins`, started by `make run` unless turned off)
    local_standins: bool = True
    standins_host: str = "127.0.0.1"
    carrier_port: int = 8002
    voice_agent_port: int = 8003
    llm_port: int = 8004
    search_port: int = 8005
    providers_port: int = 8006  # the OAuth server and Calendar / Gmail / Graph stand-ins
    # The voice-agent stand-in's turns: a pause this short stays in the caller's turn, and this much
    # silence ends it (Deepgram decides these itself).
    voice_agent_pause_ms: int = Field(default=400, ge=100, le=2000)
    voice_agent_turn_end_ms: int = Field(default=700, ge=200, le=5000)
    # How the voice-agent stand-in speaks. Piper makes one sentence at a time per voice, at ~0.06 of
    # its length on a free core: right for a person, a queue of seconds under a crowd of calls.
    voice_agent_voice: StandinVoice = StandinVoice.PIPER

    # Integrations (api/routes/integrations.py): OAuth clients registered with Google and Microsoft.
    # Unset: the local stand-ins above, with the same code.
    google_client_id: str | None = None
    google_client_secret: SecretStr | None = None
    microsoft_client_id: str | None = None
    microsoft_client_secret: SecretStr | None = None
    microsoft_tenant: str = "common"  # or the tenant id, for one organisation's accounts only

    # Mailer (mailer=smtp)
    smtp_host: str = "localhost"
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    mail_from: str = "DeepClaw <no-reply@deepclaw.local>"

    # Archive store (archive_store=s3): DigitalOcean Spaces or any S3-compatible store.
    s3_bucket: str = "deepclaw-archive"
    s3_endpoint_url: str | None = None  # e.g. https://nyc3.digitaloceanspaces.com
    s3_region: str = "us-east-1"
    s3_access_key: str | None = None
    s3_secret_key: SecretStr | None = None

    # Adapters per port
    telephony: TelephonyAdapter = TelephonyAdapter.LOCAL
    voice_agent: VoiceAgentAdapter = VoiceAgentAdapter.LOCAL
    agent_runtime: AgentRuntimeAdapter = AgentRuntimeAdapter.LOCAL
    archive_store: ArchiveStoreAdapter = ArchiveStoreAdapter.LOCAL
    mailer: MailerAdapter = MailerAdapter.LOCAL
    web_search: WebSearchAdapter = WebSearchAdapter.LOCAL

    # Web search for every agent (web_search=duckduckgo): keyless, no account.
    duckduckgo_url: str = "https://html.duckduckgo.com/html/"
    web_search_region: str = "us-en"

    # Kubernetes agent runtime (agent_runtime=kubernetes): warm spare pods claimed by users on wake,
    # their state in the archive store (archive_store=s3) while they sleep.
    kubeconfig: Path | None = None  # None: in-cluster service account
    kubernetes_namespace: str = "users"
    kubernetes_platform_namespace: str = "deepclaw"  # where api/voice/worker pods run (ingress allowed from them)
    kubernetes_agent_image: str | None = None  # pinned by digest: registry.../deepclaw/agent@sha256:...
    kubernetes_agent_pool: str = "agents"  # the node pool agent pods run on
    kubernetes_agent_spares: int = Field(default=2, ge=0)  # warm pods kept in that pool

    # Warm pool of phone numbers kept available for new users (0 turns the pool off).
    number_pool_target: int = 5
    # Keep the target in each of these area codes (comma-separated); empty: the target in total.
    number_pool_area_codes: Annotated[list[str], NoDecode] = []
    # A number whose user's agent has been archived this long leaves them: back to the pool or released.
    number_release_after_days: float = 90.0
    archived_numbers: Literal["pool", "release"] = "pool"

    # Local agent runtime: warm OpenClaw gateways kept ready for the next wake (each ~1 GB).
    local_agent_spares: int = 1

    # Logging
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"

    # How long a worker heartbeat stays fresh for /healthz.
    worker_heartbeat_interval_s: float = 5.0
    worker_heartbeat_stale_s: float = 20.0

    @field_validator("number_pool_area_codes", "platform_secrets_previous", "operators", "encryption_keys",
                     "forwarded_allow_ips",
                     mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        for entry in value:
            if entry == "*":
                raise ValueError("FORWARDED_ALLOW_IPS='*' would let any client forge its address and scheme: "
                                 "list the proxies' addresses or CIDRs")
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"FORWARDED_ALLOW_IPS: {entry!r} is not an IP address or CIDR") from None
        return value

    @field_validator("default_time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"not an IANA time zone: {value!r}") from None
        return value

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_hours(cls, value: str) -> str:
        parse_quiet_hours(value)
        return value

    @property
    def quiet_hours_range(self) -> tuple[time, time] | None:
        return parse_quiet_hours(self.quiet_hours)

    @field_validator("agent_sms_limits", "agent_call_limits", "caller_message_limits", "wrong_pin_limits",
                     "inbound_text_limits", "inbound_call_limits", "over_limit_notice_limits",
                     "sign_in_address_limits", "sign_in_client_limits", "token_request_limits",
                     "client_request_limits")
    @classmethod
    def _rate_limits(cls, value: str) -> str:
        try:
            parse_many(value)
        except ValueError as error:
            raise ValueError(f"not a list of limits like '3/minute;10/hour': {error}") from None
        return value

    def user_limits(self) -> dict[Limit, str]:
        return {Limit.SMS: self.agent_sms_limits, Limit.CALL: self.agent_call_limits,
                Limit.MESSAGE: self.caller_message_limits, Limit.WRONG_PIN: self.wrong_pin_limits,
                Limit.INBOUND_TEXT: self.inbound_text_limits, Limit.INBOUND_CALL: self.inbound_call_limits,
                Limit.OVER_LIMIT_NOTICE: self.over_limit_notice_limits,
                Limit.SIGN_IN_ADDRESS: self.sign_in_address_limits, Limit.SIGN_IN_CLIENT: self.sign_in_client_limits}

    @cached_property
    def keyring(self) -> Keyring:
        """The keys of every kind of token, from the platform secret (and the previous ones)."""
        return Keyring.of(self.platform_secret.get_secret_value(),
                          [s.get_secret_value() for s in self.platform_secrets_previous])

    @field_validator("encryption_keys")
    @classmethod
    def _encryption_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        if value:  # a malformed key refuses to start, naming the setting
            DataKeyring.of(parse_key(key.get_secret_value()) for key in value)
        return value

    @cached_property
    def data_keyring(self) -> DataKeyring:
        """The keys of data at rest (the configured ones, else the development key)."""
        if self.encryption_keys:
            return DataKeyring.of(parse_key(key.get_secret_value()) for key in self.encryption_keys)
        return DataKeyring.of([derived_key_entry(self.platform_secret.get_secret_value())])

    def as_env(self) -> dict[str, str]:
        """The settings given explicitly, as the DEEPCLAW_* variables a child process reads them from
        (the chaos bench and the fault tests start the platform's processes with them)."""
        env = {}
        for name in self.model_fields_set:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, list):
                value = ",".join(v.get_secret_value() if isinstance(v, SecretStr) else str(v) for v in value)
            elif isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, bool):
                value = "true" if value else "false"
            env[f"DEEPCLAW_{name.upper()}"] = str(value)
        return env

    @property
    def local_mode(self) -> bool:
        """Every port on its local stand-in: a development machine (no Secure cookies over http)."""
        return not self.real_adapters

    @property
    def api_base_url(self) -> str:
        return self.public_base_url or f"http://{self.api_host}:{self.api_port}"

    @property
    def voice_base_url(self) -> str:
        return (self.voice_public_base_url or f"http://{self.voice_host}:{self.voice_port}").rstrip("/")

    @property
    def media_stream_url(self) -> str:
        return self.media_public_url or f"ws://{self.voice_host}:{self.voice_media_port}/twilio/media"

    @property
    def carrier_url(self) -> str:
        return f"http://{self.standins_host}:{self.carrier_port}"

    @property
    def twilio_api_base_url(self) -> str | None:
        """None means Twilio itself (at its edge and region); locally, the carrier stand-in."""
        if self.twilio_api_url:
            return self.twilio_api_url.rstrip("/")
        return self.carrier_url if self.telephony == TelephonyAdapter.LOCAL else None

    @property
    def real_adapters(self) -> list[str]:
        """The ports switched to a real provider (each its setting's name)."""
        ports = {"telephony": self.telephony, "voice_agent": self.voice_agent, "agent_runtime": self.agent_runtime,
                 "archive_store": self.archive_store, "mailer": self.mailer, "web_search": self.web_search}
        return [name for name, adapter in ports.items() if adapter != "local"]

    def deployment_problems(self) -> list[str]:
        """What makes these settings unfit to run with a real provider, each naming its setting.
        Empty when every port is local (a development machine) or nothing is wrong."""
        if not self.real_adapters:
            return []
        problems = []
        for name, value, default in (("PLATFORM_SECRET", self.platform_secret, DEV_PLATFORM_SECRET),
                                     ("TWILIO_AUTH_TOKEN", self.twilio_auth_token, DEV_TWILIO_AUTH_TOKEN)):
            secret = value.get_secret_value()
            if secret == default or len(secret) < MIN_SECRET_CHARS:
                problems.append(f"DEEPCLAW_{name} is the development default or shorter than {MIN_SECRET_CHARS} "
                                "characters")
        if not self.encryption_keys:
            problems.append("DEEPCLAW_ENCRYPTION_KEYS is unset: tokens at rest would be sealed with a key "
                            "derived from the platform secret (`deepclaw new-key k1` makes one)")
        password = make_url(self.database_url).password or ""
        if password.lower() in WEAK_DATABASE_PASSWORDS or len(password) < MIN_DATABASE_PASSWORD_CHARS:
            problems.append("DEEPCLAW_DATABASE_URL has no password, a default one or one shorter than "
                            f"{MIN_DATABASE_PASSWORD_CHARS} characters")
        # Twilio signs what it calls, and we check those signatures, against these URLs.
        for name, value in (("PUBLIC_BASE_URL", self.public_base_url),
                            ("VOICE_PUBLIC_BASE_URL", self.voice_public_base_url),
                            ("MEDIA_PUBLIC_URL", self.media_public_url)):
            if not value:
                problems.append(f"DEEPCLAW_{name} is unset: providers call it, and signatures are checked against it")
        return problems

    def require_deployable(self) -> None:
        """Refuses to run (SystemExit naming each setting) what deployment_problems finds."""
        if problems := self.deployment_problems():
            raise SystemExit("refusing to start with real adapters (" + ", ".join(self.real_adapters) + "):\n  "
                             + "\n  ".join(problems))

    @property
    def web_search_url(self) -> str:
        if self.web_search == WebSearchAdapter.LOCAL:
            return f"http://{self.standins_host}:{self.search_port}/html/"
        return self.duckduckgo_url

    @property
    def providers_url(self) -> str:
        """The local OAuth server and Calendar / Gmail / Graph stand-ins."""
        return f"http://{self.standins_host}:{self.providers_port}"

    @property
    def speech_base_url(self) -> str:
        if self.voice_agent == VoiceAgentAdapter.LOCAL:
            return f"http://{self.standins_host}:{self.voice_agent_port}"
        return self.deepgram_speak_url

    @property
    def voice_agent_url(self) -> str:
        if self.voice_agent == VoiceAgentAdapter.LOCAL:
            return f"ws://{self.standins_host}:{self.voice_agent_port}/v1/agent/converse"
        return self.deepgram_url

    @property
    def model_base_url(self) -> str:
        return self.llm_base_url or f"http://{self.standins_host}:{self.llm_port}/v1"

    def model_summary(self) -> str:
        """Which model the agents use, in words (printed by `make run`, shown on the softphone)."""
        if self.llm_base_url is None:
            return "the local demo model (it knows a few requests; set DEEPCLAW_LLM_BASE_URL for a real one)"
        return f"{self.llm_model} at {self.llm_base_url}"

    @property
    def temporal_ui_url(self) -> str:
        if self.temporal_ui_public_url:
            return self.temporal_ui_public_url.rstrip("/")
        host = self.temporal_address.rsplit(":", 1)[0]
        return f"http://{host}:{self.temporal_ui_port}"

    @property
    def temporal_port(self) -> int:
        return int(self.temporal_address.rsplit(":", 1)[1])


@lru_cache
def get_settings() -> Settings:
    return Settings()
