"""The ports: small typed interfaces to the outside world. Each has a real adapter and a local one,
chosen by settings (see activities/adapters.py); activities depend on these, never on an adapter."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, Field

from core.tokens import Keyring, TokenKind


class OwnedNumber(BaseModel):
    sid: str
    e164: str
    voice_url: str | None = None
    sms_url: str | None = None
    friendly_name: str | None = None


class CallEnded(Exception):
    """The call is over (the caller hung up): it can no longer be redirected."""


class NumberNotFound(LookupError):
    """The provider does not have this number (any more)."""


class CallState(BaseModel):
    """A placed call as the provider reports it: status (queued, ringing, in-progress, completed,
    busy, no-answer, failed, canceled) and, with machine detection, who answered."""

    status: str
    answered_by: str | None = None


# Twilio's limits for one MMS: attachments, and their bytes in all.
MAX_MEDIA = 10
MAX_MEDIA_BYTES = 5 * 1024 * 1024


class Media(BaseModel):
    """An MMS attachment as the provider serves it."""

    content_type: str
    data: bytes


class MediaUnavailable(Exception):
    """The provider would not give the attachment (gone, refused, unreachable, too big)."""

    def __init__(self, message: str, *, status: int = 502) -> None:
        super().__init__(message)
        self.status = status  # what the platform's link answers: 404 gone, 413 too big, 502 otherwise


class Telephony(Protocol):
    async def search_numbers(self, *, area_code: str | None = None, limit: int = 5) -> list[str]: ...
    async def buy_number(self, e164: str, *, voice_url: str, sms_url: str,
                         friendly_name: str | None = None) -> OwnedNumber: ...
    async def list_numbers(self) -> list[OwnedNumber]: ...
    async def configure_number(self, sid: str, *, voice_url: str, sms_url: str) -> None: ...
    async def release_number(self, sid: str) -> None: ...
    async def send_sms(self, *, to: str, from_: str, body: str, status_callback: str | None = None) -> str: ...
    async def sent_sms(self, *, to: str, from_: str, body: str, since: datetime) -> list[str]: ...  # their sids
    async def place_call(self, *, to: str, from_: str, twiml: str | None = None, url: str | None = None,
                         status_callback: str | None = None, machine_detection: bool = False,
                         ring_timeout_s: int | None = None) -> str: ...
    async def call_state(self, call_sid: str) -> CallState: ...
    async def redirect_call(self, call_sid: str, *, twiml: str | None = None, url: str | None = None) -> None: ...
    async def hang_up(self, call_sid: str) -> None: ...
    def owns_media_url(self, url: str) -> bool:
        """Is `url` an attachment of a message on this account (what an inbound MMS's MediaUrl is)?"""
        ...
    async def fetch_media(self, url: str, *, max_bytes: int = MAX_MEDIA_BYTES) -> Media:
        """The attachment at `url` (one this account owns), with the account's credentials."""
        ...


class SearchResult(BaseModel):
    title: str
    url: str
    snippet: str = ""


class SearchUnavailable(Exception):
    """The search provider could not answer (down, rate-limited, a bot challenge): try again later."""


MAX_SEARCH_RESULTS = 10


class WebSearch(Protocol):
    """Keyless web search for every user's agent (through the platform's MCP server)."""

    async def search(self, query: str, *, count: int = 5) -> list[SearchResult]: ...
    async def close(self) -> None: ...


class SpeechUnavailable(Exception):
    pass


class Speech(Protocol):
    """Text to speech outside calls (voice samples on the dashboard)."""

    async def speak(self, text: str, *, voice: str) -> bytes: ...  # a WAV file
    async def close(self) -> None: ...


class StatementSummary(BaseModel):
    """A closed month's statement for one user, as billing receives it."""

    user_id: uuid.UUID
    month: date
    plan: str
    currency: str
    total_cents: int
    lines: list[dict[str, Any]]
    records: int


class Billing(Protocol):
    async def record_statement(self, statement: StatementSummary) -> bool: ...  # False: it was recorded before


class Mailer(Protocol):
    async def send(self, *, to: str, subject: str, body: str) -> None: ...


def archive_key(user_id: uuid.UUID) -> str:
    """Where an archived agent's state is kept (every runtime, and its deletion, agree on it)."""
    return f"agents/{user_id.hex}/state.tar.gz"


def export_key(user_id: uuid.UUID) -> str:
    """Where a copy of the agent's workspace (its memory files) waits for the user's data export."""
    return f"exports/{user_id.hex}/workspace.tar.gz"


class ArchiveStore(Protocol):
    """Bundles of a user's agent state, addressed by key."""

    async def put(self, key: str, source: Path) -> None: ...
    async def get(self, key: str, destination: Path) -> None: ...
    async def exists(self, key: str) -> bool: ...
    async def delete(self, key: str) -> None: ...


class RuntimeState(StrEnum):
    ABSENT = "absent"
    RUNNING = "running"
    PAUSED = "paused"  # Idle: kept in memory, answers at once
    STOPPED = "stopped"  # Sleeping: no process, state kept on its volume
    ARCHIVED = "archived"  # state only in the archive store


class McpServerSpec(BaseModel):
    name: str
    url: str
    transport: str = "streamable-http"
    headers: dict[str, str] = Field(default_factory=dict)


class AgentSpec(BaseModel):
    """Everything a runtime needs to render one user's OpenClaw."""

    user_id: uuid.UUID
    agent_name: str = "Claw"
    personality: str = "casual"
    instructions: str = ""  # the user's own, from the dashboard
    mcp_servers: list[McpServerSpec] = Field(default_factory=list)


class AgentEndpoint(BaseModel):
    """Where the platform reaches a user's gateway. Its token is derived from the platform secret, never
    carried (this travels through Temporal's history); the key id says which secret, so a gateway
    keeps working while the secret rotates."""

    base_url: str
    instance: str  # which gateway at that URL (a fresh one per local process; per user on Kubernetes)
    key_id: str | None = None  # None: the current secret's

    def token(self, keyring: Keyring) -> str:
        return keyring.digest(TokenKind.GATEWAY, f"{self.base_url}|{self.instance}", kid=self.key_id)

    def authorization(self, keyring: Keyring) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(keyring)}"}


class AgentRuntime(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def create(self, spec: AgentSpec) -> None: ...
    async def wake(self, user_id: uuid.UUID) -> AgentEndpoint: ...
    async def pause(self, user_id: uuid.UUID) -> None: ...
    async def sleep(self, user_id: uuid.UUID) -> None: ...
    async def archive(self, user_id: uuid.UUID, store: ArchiveStore) -> str: ...
    async def restore(self, user_id: uuid.UUID, store: ArchiveStore, key: str) -> None: ...
    async def delete(self, user_id: uuid.UUID) -> None: ...
    async def status(self, user_id: uuid.UUID) -> RuntimeState: ...
    async def apply(self, spec: AgentSpec) -> None: ...
    # A copy of the agent's workspace (its memory files) put in `store` at export_key; False when
    # this runtime holds no state for the user (an archived agent's is in its archive).
    async def export_memory(self, user_id: uuid.UUID, store: ArchiveStore) -> bool: ...
    def pool(self) -> dict[str, int]: ...  # warm spares: spares_ready, spares_starting, spares_target
