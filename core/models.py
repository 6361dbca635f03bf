"""Database schema. Invariants the platform relies on live here as constraints, not in code:
one phone number per user and one user per number, one agent per user, one phone per user.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def _created() -> Any:
    return Field(default_factory=utcnow, sa_type=sa.DateTime(timezone=True), nullable=False)


def _timestamp(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_type=sa.DateTime(timezone=True), nullable=nullable, index=index)


def _one_of(column: str, values: tuple[str, ...], name: str) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=name)


PERSONALITIES = ("casual", "formal")
NUMBER_STATES = ("available", "assigned", "releasing")
AGENT_STATES = ("provisioning", "running", "idle", "sleeping", "archived")
RUNTIMES = ("local", "kubernetes")
POD_STATES = ("starting", "ready", "loading", "serving")
CONVERSATION_KINDS = ("call", "sms")
DIRECTIONS = ("inbound", "outbound")
MESSAGE_ROLES = ("user", "agent", "system")


class Channel(StrEnum):
    SMS = "sms"
    CALL = "call"


class DeliveryOutcome(StrEnum):
    """Where a delivery (a reminder, or the agent's text or call) ended."""

    PENDING = "pending"
    CALLED = "called"  # the user picked up
    TEXTED = "texted"  # a text went out (asked for, or a call's fallback: see FallbackReason)
    REFUSED = "refused"  # not sent: opted out (STOP), or no number to send from
    FAILED = "failed"


class FallbackReason(StrEnum):
    """Why a call became a text."""

    NO_ANSWER = "no-answer"
    BUSY = "busy"
    VOICEMAIL = "voicemail"
    CALL_FAILED = "call-failed"
    QUIET_HOURS = "quiet-hours"
    MONTHLY_CAP = "monthly-cap"  # the user's spending cap for the month is reached


REMINDER_STATES = ("scheduled", "fired", "cancelled", "failed")
REMINDER_CHANNELS = tuple(Channel)
OAUTH_PROVIDERS = ("google", "outlook")
OAUTH_STATES = ("connected", "needs_consent")
MCP_TRANSPORTS = ("streamable-http", "sse")
MCP_STATUSES = ("unchecked", "ok", "failing")
STREAM_KINDS = ("user", "hotline")


class User(SQLModel, table=True):
    __tablename__ = "users"
    __table_args__ = (
        sa.CheckConstraint("(quiet_from IS NULL) = (quiet_until IS NULL)", name="ck_users_quiet_hours_pair"),
        _one_of("personality", PERSONALITIES, "ck_users_personality"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    phone_e164: str = Field(sa_column_kwargs={"unique": True}, max_length=16, nullable=False)
    phone_verified: bool = False
    email: str | None = Field(default=None, max_length=320)
    email_verified: bool = False
    agent_name: str = Field(default="Claw", max_length=64)
    voice: str = Field(default="aura-2-thalia-en", max_length=64)
    personality: str = Field(default="casual", max_length=16)
    # The user's own words for their agent (the dashboard), added to its system prompt.
    custom_instructions: str | None = Field(default=None, max_length=2000)
    # Written by the agent after each call, spoken at the start of the next one.
    next_greeting: str | None = Field(default=None, max_length=300)
    # Bumped to revoke every platform MCP token this user's agent was given (core.callbacks).
    mcp_token_generation: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    # A keyed digest of the user's PIN (core.callers): asked on calls whose caller ID is not fully
    # attested, and on calls from other phones when the user allows them.
    pin_digest: str | None = Field(default=None, max_length=96)
    allow_other_phones: bool = Field(default=False, sa_column_kwargs={"server_default": "false"})
    # Set when the user texted STOP (or another opt-out word), cleared by START: no text or call
    # from the platform reaches them meanwhile.
    sms_opted_out_at: datetime | None = _timestamp()
    # The user's own monthly spending cap (cents, in the price plan's currency); past it the agent
    # places no calls (they become texts). None: no cap.
    monthly_cap_cents: int | None = Field(default=None, ge=0)
    # Set by an operator: the user's number answers only that it is paused, and the platform
    # neither texts nor calls them, until resumed.
    suspended_at: datetime | None = _timestamp()
    # An IANA zone; None: the zone of the user's phone number (core.timezones).
    time_zone: str | None = Field(default=None, max_length=64)
    # No calls from the platform between these local times (they become texts); None: the default.
    quiet_from: time | None = Field(default=None, sa_type=sa.Time())
    quiet_until: time | None = Field(default=None, sa_type=sa.Time())
    created_at: datetime = _created()
    updated_at: datetime = _created()


class PhoneNumber(SQLModel, table=True):
    """A number the platform owns. Assignment is exclusive in both directions."""

    __tablename__ = "phone_numbers"
    __table_args__ = (
        _one_of("state", NUMBER_STATES, "ck_phone_numbers_state"),
        sa.CheckConstraint(
            "(state = 'assigned') = (user_id IS NOT NULL)", name="ck_phone_numbers_assigned_has_user"
        ),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    e164: str = Field(sa_column_kwargs={"unique": True}, max_length=16, nullable=False)
    provider_sid: str = Field(sa_column_kwargs={"unique": True}, max_length=64, nullable=False)
    state: str = Field(default="available", max_length=16, index=True)
    area_code: str | None = Field(default=None, max_length=8, index=True)
    user_id: uuid.UUID | None = Field(
        default=None, foreign_key="users.id", ondelete="RESTRICT", sa_column_kwargs={"unique": True}
    )
    # The pool's idempotency key for the purchase that produced this number.
    purchase_key: str | None = Field(default=None, sa_column_kwargs={"unique": True}, max_length=128)
    assigned_at: datetime | None = _timestamp()
    released_at: datetime | None = _timestamp()
    created_at: datetime = _created()


class AgentInstance(SQLModel, table=True):
    __tablename__ = "agent_instances"
    __table_args__ = (
        _one_of("state", AGENT_STATES, "ck_agent_instances_state"),
        _one_of("runtime", RUNTIMES, "ck_agent_instances_runtime"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: uuid.UUID = Field(
        foreign_key="users.id", ondelete="CASCADE", sa_column_kwargs={"unique": True}, nullable=False
    )
    runtime: str = Field(max_length=16)
    state: str = Field(default="provisioning", max_length=16)
    endpoint: str | None = Field(default=None, max_length=512)
    # Since when the agent has been awake (Running or Idle); None while it sleeps (core.usage).
    awake_since: datetime | None = _timestamp()
    # Where the gateway token is kept (a secret name or local file), never the token itself.
    token_ref: str | None = Field(default=None, max_length=256)
    created_at: datetime = _created()
    updated_at: datetime = _created()


class AgentPod(SQLModel, table=True):
    """A warm OpenClaw pod of the Kubernetes runtime (activities/runtime/kubernetes.py): booted with no
    user (starting, ready), then claimed by one user (loading, serving). A claim takes a ready row
    nobody else holds (FOR UPDATE SKIP LOCKED); a claimed row is deleted with its pod and never goes
    back to ready, so no pod ever serves a second user. One pod per user at most (unique user_id).
    No foreign key to users: the row lives and dies with the pod, which the runtime removes."""

    __tablename__ = "agent_pods"
    __table_args__ = (
        _one_of("state", POD_STATES, "ck_agent_pods_state"),
        sa.CheckConstraint("(state IN ('loading', 'serving')) = (user_id IS NOT NULL)",
                           name="ck_agent_pods_claimed_has_user"),
    )

    name: str = Field(primary_key=True, max_length=63)
    pool: str = Field(max_length=63, index=True)
    state: str = Field(default="starting", max_length=16)
    user_id: uuid.UUID | None = Field(default=None, sa_column_kwargs={"unique": True})
    key_id: str | None = Field(default=None, max_length=32)  # the platform secret its gateway token derives from
    created_at: datetime = _created()
    claimed_at: datetime | None = _timestamp()


class Conversation(SQLModel, table=True):
    """One call, or one SMS thread day."""

    __tablename__ = "conversations"
    __table_args__ = (
        _one_of("kind", CONVERSATION_KINDS, "ck_conversations_kind"),
        _one_of("direction", DIRECTIONS, "ck_conversations_direction"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: uuid.UUID | None = Field(default=None, foreign_key="users.id", ondelete="CASCADE", index=True)
    kind: str = Field(max_length=8)
    direction: str = Field(max_length=8)
    provider_sid: str | None = Field(default=None, sa_column_kwargs={"unique": True}, max_length=64)
    from_number: str | None = Field(default=None, max_length=16)
    to_number: str | None = Field(default=None, max_length=16)
    # Twilio's STIR/SHAKEN verdict on the caller ID (StirVerstat), for calls to a user's number.
    caller_attestation: str | None = Field(default=None, max_length=64)
    started_at: datetime = _created()
    ended_at: datetime | None = _timestamp()
    duration_s: float | None = None
    # Per-turn latency figures reported by the voice agent (AgentStartedSpeaking).
    latency: dict[str, Any] | None = Field(default=None, sa_type=pg.JSONB)


class MediaStream(SQLModel, table=True):
    """One Media Stream the platform asked Twilio to open (a TwiML <Connect><Stream>).

    Twilio carries only a random ticket (its digest is kept here); the bridge redeems it once, for
    that call, before it expires. What the call is (whose, its greeting, a placed call's purpose)
    stays here, not in the ticket. Think tokens are bound to the stream: they are refused once it
    has ended (plus a short grace).
    """

    __tablename__ = "media_streams"
    __table_args__ = (
        _one_of("kind", STREAM_KINDS, "ck_media_streams_kind"),
        sa.CheckConstraint("(kind = 'user') = (user_id IS NOT NULL)", name="ck_media_streams_user_call_has_user"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    ticket_digest: str = Field(sa_column_kwargs={"unique": True}, max_length=64, nullable=False)
    call_sid: str = Field(max_length=64, index=True, nullable=False)
    kind: str = Field(max_length=8)
    user_id: uuid.UUID | None = Field(default=None, foreign_key="users.id", ondelete="CASCADE")
    # from, to, direction, greeting, prompt: what the bridge needs to set the call up.
    params: dict[str, Any] = Field(default_factory=dict, sa_type=pg.JSONB)
    expires_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)
    stream_sid: str | None = Field(default=None, max_length=64)
    connected_at: datetime | None = _timestamp()
    # When the caller said the user's PIN (calls that needed it).
    verified_at: datetime | None = _timestamp()
    ended_at: datetime | None = _timestamp()
    created_at: datetime = _created()


class Message(SQLModel, table=True):
    """A transcript turn of a call, or one SMS (its provider_sid, Twilio's MessageSid, is taken once)."""

    __tablename__ = "messages"
    __table_args__ = (
        _one_of("role", MESSAGE_ROLES, "ck_messages_role"),
        sa.UniqueConstraint("reply_to", "part", name="uq_messages_reply_part"),  # each part of a reply sent once
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    conversation_id: uuid.UUID = Field(foreign_key="conversations.id", ondelete="CASCADE", index=True)
    role: str = Field(max_length=8)
    content: str
    provider_sid: str | None = Field(default=None, sa_column_kwargs={"unique": True}, max_length=64)
    # Texts: an inbound one is received, then answered; an outbound one is pending until sent, then
    # follows Twilio's delivery status callbacks (queued, sent, delivered, undelivered, failed).
    status: str | None = Field(default=None, max_length=16)
    # An outbound text answering an inbound one: which, and which part of the answer.
    reply_to: uuid.UUID | None = Field(default=None, foreign_key="messages.id", ondelete="SET NULL")
    part: int | None = None
    # Links to an inbound MMS's pictures and files (the provider's media URLs).
    media: list[str] | None = Field(default=None, sa_type=pg.JSONB)
    created_at: datetime = _created()


class Reminder(SQLModel, table=True):
    __tablename__ = "reminders"
    __table_args__ = (
        _one_of("state", REMINDER_STATES, "ck_reminders_state"),
        _one_of("channel", REMINDER_CHANNELS, "ck_reminders_channel"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: uuid.UUID = Field(foreign_key="users.id", ondelete="CASCADE", index=True)
    due_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)
    text: str
    channel: str = Field(default="sms", max_length=8)
    state: str = Field(default="scheduled", max_length=16)
    # An RRULE (core.recurrence) for a repeating reminder; due_at is then its next occurrence.
    recurrence: str | None = Field(default=None, max_length=256)
    time_zone: str = Field(default="UTC", max_length=64, sa_column_kwargs={"server_default": "UTC"})
    occurrences: int = Field(default=0, sa_column_kwargs={"server_default": "0"})  # delivered so far
    created_at: datetime = _created()


class Delivery(SQLModel, table=True):
    """One text or call to a user, by reminder or by their agent (send_sms, call_me), and how it
    ended. An occurrence of a reminder is delivered at most once (the unique constraint)."""

    __tablename__ = "deliveries"
    __table_args__ = (
        _one_of("requested", tuple(Channel), "ck_deliveries_requested"),
        _one_of("channel", tuple(Channel), "ck_deliveries_channel"),
        _one_of("outcome", tuple(DeliveryOutcome), "ck_deliveries_outcome"),
        _one_of("fallback_reason", tuple(FallbackReason), "ck_deliveries_fallback_reason"),
        sa.UniqueConstraint("reminder_id", "occurrence", name="uq_deliveries_reminder_occurrence"),
    )

    id: uuid.UUID = Field(primary_key=True)
    user_id: uuid.UUID = Field(foreign_key="users.id", ondelete="CASCADE", index=True)
    reminder_id: uuid.UUID | None = Field(default=None, foreign_key="reminders.id", ondelete="SET NULL", index=True)
    occurrence: int | None = None
    requested: str = Field(max_length=8)
    channel: str | None = Field(default=None, max_length=8)  # what reached the user
    text: str  # the text sent, or the call's fallback text
    call_sid: str | None = Field(default=None, max_length=64)
    message_sid: str | None = Field(default=None, max_length=64)
    outcome: str = Field(default=DeliveryOutcome.PENDING, max_length=16)
    fallback_reason: str | None = Field(default=None, max_length=16)
    detail: str | None = Field(default=None, max_length=300)
    created_at: datetime = _created()
    finished_at: datetime | None = _timestamp()


class OAuthCredential(SQLModel, table=True):
    """A user's connection to Google or Microsoft. The token is only ever here as ciphertext
    (activities/integrations/credentials.py: envelope-encrypted, bound to the user and provider)."""

    __tablename__ = "oauth_credentials"
    __table_args__ = (
        sa.UniqueConstraint("user_id", "provider", name="uq_oauth_credentials_user_provider"),
        _one_of("provider", OAUTH_PROVIDERS, "ck_oauth_credentials_provider"),
        _one_of("state", OAUTH_STATES, "ck_oauth_credentials_state"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: uuid.UUID = Field(foreign_key="users.id", ondelete="CASCADE")
    provider: str = Field(max_length=16)
    scopes: str = ""
    ciphertext: bytes = Field(sa_type=sa.LargeBinary, nullable=False)
    expires_at: datetime | None = _timestamp()
    state: str = Field(default="connected", max_length=16)
    # When the user was told (once) that the provider refused a refresh and they must connect again.
    consent_notified_at: datetime | None = _timestamp()
    created_at: datetime = _created()
    updated_at: datetime = _created()


ACTION_KINDS = ("send_mail", "cancel_event")
ACTION_STATES = ("pending", "done", "declined", "failed", "expired")


class PendingAction(SQLModel, table=True):
    """Something the agent asked for that only the owner may allow (sending mail, cancelling an
    event): kept here until the owner answers the confirmation text (activities/integrations/
    actions.py). `reference` is the short number the owner's reply names; unique among the user's
    pending actions, so a reply means one action. Proposed during the owner's call, it can be
    answered by voice on that call too (voice/confirmations.py)."""

    __tablename__ = "pending_actions"
    __table_args__ = (
        _one_of("provider", OAUTH_PROVIDERS, "ck_pending_actions_provider"),
        _one_of("kind", ACTION_KINDS, "ck_pending_actions_kind"),
        _one_of("state", ACTION_STATES, "ck_pending_actions_state"),
        sa.Index("uq_pending_actions_reference", "user_id", "reference", unique=True,
                 postgresql_where=sa.text("state = 'pending'")),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: uuid.UUID = Field(foreign_key="users.id", ondelete="CASCADE", index=True)
    provider: str = Field(max_length=16)
    kind: str = Field(max_length=16)
    target: str = Field(max_length=256)  # the draft's or the event's id at the provider
    summary: str = Field(max_length=600)  # what the owner is asked about, in words
    reference: str = Field(max_length=8)
    state: str = Field(default="pending", max_length=16)
    detail: str | None = Field(default=None, max_length=600)  # what happened, once decided
    # The owner's call it was proposed on (they may answer it by voice there, too).
    call_stream_id: uuid.UUID | None = Field(default=None, foreign_key="media_streams.id", ondelete="SET NULL",
                                             index=True)
    created_at: datetime = _created()
    expires_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)
    decided_at: datetime | None = _timestamp()


class McpServer(SQLModel, table=True):
    __tablename__ = "mcp_servers"
    __table_args__ = (
        sa.UniqueConstraint("user_id", "name", name="uq_mcp_servers_user_name"),
        _one_of("transport", MCP_TRANSPORTS, "ck_mcp_servers_transport"),
        _one_of("status", MCP_STATUSES, "ck_mcp_servers_status"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: uuid.UUID = Field(foreign_key="users.id", ondelete="CASCADE")
    name: str = Field(max_length=64)
    url: str = Field(max_length=1024)
    transport: str = Field(default="streamable-http", max_length=16)
    # Request headers (e.g. an API key) encrypted like OAuth tokens.
    headers_ciphertext: bytes | None = Field(default=None, sa_type=sa.LargeBinary)
    enabled: bool = True
    # What the last connection found (activities/integrations/mcp_servers.py): ok with its tools, or failing.
    status: str = Field(default="unchecked", max_length=16)
    tools: list[dict[str, str]] = Field(default_factory=list, sa_type=pg.JSONB)
    detail: str | None = Field(default=None, max_length=300)
    checked_at: datetime | None = _timestamp()
    created_at: datetime = _created()


USAGE_KINDS = ("call_seconds_in", "call_seconds_out", "sms_segments_in", "sms_segments_out", "awake_seconds",
               "model_tokens_in", "model_tokens_out")


class UsageRecord(SQLModel, table=True):
    """One thing a user used (core.usage), recorded by the path that caused it."""

    __tablename__ = "usage_records"
    __table_args__ = (sa.CheckConstraint("quantity >= 0", name="ck_usage_records_quantity"),
                      _one_of("kind", USAGE_KINDS, "ck_usage_records_kind"))

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: uuid.UUID = Field(foreign_key="users.id", ondelete="CASCADE", index=True)
    kind: str = Field(max_length=32)
    quantity: float
    # What caused it (call:<CallSid>, sms:<MessageSid>, awake:<user>:<since>): counted once.
    source: str | None = Field(default=None, max_length=128, sa_column_kwargs={"unique": True})
    conversation_id: uuid.UUID | None = Field(default=None, foreign_key="conversations.id", ondelete="SET NULL")
    occurred_at: datetime = _created()


class BillingStatement(SQLModel, table=True):
    """A closed month's statement, as the Billing port's local adapter records it (one per user
    and month: closing a month again records nothing new)."""

    __tablename__ = "billing_statements"
    __table_args__ = (sa.UniqueConstraint("user_id", "month", name="uq_billing_statements_user_month"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: uuid.UUID = Field(foreign_key="users.id", ondelete="CASCADE", index=True)
    month: date = Field(sa_type=sa.Date(), nullable=False)  # its first day
    plan: str = Field(max_length=64)
    currency: str = Field(max_length=8)
    total_cents: int
    lines: list[dict[str, Any]] = Field(default_factory=list, sa_type=pg.JSONB)
    records: int  # how many usage records it adds up
    created_at: datetime = _created()


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_events"

    id: int | None = Field(default=None, primary_key=True)
    user_id: uuid.UUID | None = Field(default=None, foreign_key="users.id", ondelete="SET NULL", index=True)
    actor: str = Field(max_length=64)  # workflow type, "api", "operator", ...
    action: str = Field(max_length=64)
    workflow_id: str | None = Field(default=None, max_length=256)
    detail: dict[str, Any] = Field(default_factory=dict, sa_type=pg.JSONB)
    created_at: datetime = _created()


class ServiceHeartbeat(SQLModel, table=True):
    """Liveness of worker processes, read by the API's /healthz."""

    __tablename__ = "service_heartbeats"

    instance: str = Field(primary_key=True, max_length=128)
    service: str = Field(max_length=32, index=True)
    task_queue: str = Field(max_length=128)
    last_seen: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)
    # What the instance reports besides being alive (a worker: its agent runtime's warm spares).
    detail: dict[str, Any] = Field(default_factory=dict, sa_type=pg.JSONB,
                                   sa_column_kwargs={"server_default": "{}"})


class RateLimitHit(SQLModel, table=True):
    """One counted hit of a moving-window rate limit (core.limits)."""

    __tablename__ = "rate_limit_hits"
    __table_args__ = (sa.Index("ix_rate_limit_hits_key_at", "key", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=255)
    at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)


class RateLimitCounter(SQLModel, table=True):
    """A fixed-window rate limit's count (core.limits)."""

    __tablename__ = "rate_limit_counters"

    key: str = Field(primary_key=True, max_length=255)
    count: int
    expires_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)


class SignInCode(SQLModel, table=True):
    """A one-time dashboard sign-in code sent to a phone or an email address. Only keyed digests
    are kept (core.tokens, kind CODE): of the address, to find its codes, and of address + code."""

    __tablename__ = "sign_in_codes"
    __table_args__ = (sa.CheckConstraint("attempts >= 0", name="ck_sign_in_codes_attempts"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    address_digest: str = Field(max_length=64, index=True)
    code_digest: str = Field(max_length=96)
    attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})  # wrong guesses so far
    expires_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)
    used_at: datetime | None = _timestamp()
    created_at: datetime = _created()


class WebSession(SQLModel, table=True):
    """A dashboard sign-in. The cookie carries a sealed {session id, secret}; only the secret's
    digest is kept. Signed in as a user, as an operator, or as both (an operator with an account)."""

    __tablename__ = "web_sessions"
    __table_args__ = (
        sa.CheckConstraint("user_id IS NOT NULL OR operator IS NOT NULL", name="ck_web_sessions_someone"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    secret_digest: str = Field(max_length=96)
    user_id: uuid.UUID | None = Field(default=None, foreign_key="users.id", ondelete="CASCADE", index=True)
    operator: str | None = Field(default=None, max_length=320)  # the operator's phone or email
    expires_at: datetime = Field(sa_type=sa.DateTime(timezone=True), nullable=False)
    revoked_at: datetime | None = _timestamp()
    user_agent: str | None = Field(default=None, max_length=256)
    created_at: datetime = _created()


class BlockedNumber(SQLModel, table=True):
    """A calling number an operator blocked: its calls are rejected and its texts dropped, on every
    platform number, the hotline too."""

    __tablename__ = "blocked_numbers"

    e164: str = Field(primary_key=True, max_length=16)
    blocked_by: str = Field(max_length=320)  # the operator
    reason: str | None = Field(default=None, max_length=300)
    created_at: datetime = _created()


class OutboxEmail(SQLModel, table=True):
    """Mail sent by the local Mailer: the dashboard shows it instead of a real inbox."""

    __tablename__ = "email_outbox"

    id: int | None = Field(default=None, primary_key=True)
    to_address: str = Field(max_length=320, index=True)
    subject: str = Field(max_length=256)
    body: str
    created_at: datetime = _created()
