"""The providers a user can connect (Google: Calendar and Gmail; Microsoft: Outlook calendar and mail),
what we ask each for and where each lives: the real endpoints when a client id is configured, the
local stand-ins (emulators/providers) otherwise. The same code talks to both."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import StrEnum

from core.settings import Settings

# The stand-ins' registered clients (local only, like the carrier's development auth token).
LOCAL_CLIENTS = {"google": ("deepclaw-local-google", "local-google-secret"),
                 "outlook": ("deepclaw-local-outlook", "local-outlook-secret")}


class Provider(StrEnum):
    GOOGLE = "google"
    OUTLOOK = "outlook"


class ConnectionState(StrEnum):
    CONNECTED = "connected"
    NEEDS_CONSENT = "needs_consent"  # a refresh failed: the user must connect again


@dataclass(frozen=True)
class Scope:
    value: str
    meaning: str  # shown to the user before they connect


GOOGLE_SCOPES = (
    Scope("https://www.googleapis.com/auth/calendar.events",
          "See, add, move and cancel events on your calendars (not your calendar settings or sharing)."),
    Scope("https://www.googleapis.com/auth/gmail.readonly", "Search and read your mail."),
    Scope("https://www.googleapis.com/auth/gmail.compose",
          "Write drafts, and send one only after you confirm it by phone or text."),
)
# offline_access: a refresh token (so the agent keeps access without you signing in each hour).
OUTLOOK_SCOPES = (
    Scope("offline_access", "Keep this access until you disconnect (without signing in again each hour)."),
    Scope("Calendars.ReadWrite", "See, add, move and cancel events on your Outlook calendar."),
    Scope("Mail.ReadWrite", "Search and read your mail, and write drafts."),
    Scope("Mail.Send", "Send a draft, only after you confirm it by phone or text."),
)


@dataclass(frozen=True)
class ProviderConfig:
    provider: Provider
    title: str
    what: str
    client_id: str
    client_secret: str
    authorize_url: str
    token_url: str
    revoke_url: str | None  # Microsoft has no revocation endpoint for apps (disconnect deletes our copy)
    calendar_api: str
    mail_api: str
    scopes: tuple[Scope, ...]
    authorize_params: dict[str, str] = field(default_factory=dict)
    local: bool = False

    @property
    def scope(self) -> str:
        return " ".join(s.value for s in self.scopes)


def credential_context(user_id: uuid.UUID, provider: Provider | str) -> str:
    """What a stored token's ciphertext is bound to: it opens only as this user's token of this provider."""
    return f"oauth:{user_id}:{Provider(provider).value}"


def header_context(user_id: uuid.UUID, server_id: uuid.UUID) -> str:
    """What a user's MCP server's sealed headers are bound to: they open only as this user's, for this row."""
    return f"mcp-headers:{user_id}:{server_id}"


def redirect_uri(settings: Settings, provider: Provider) -> str:
    return f"{settings.api_base_url.rstrip('/')}/integrations/{provider.value}/callback"


def provider_config(settings: Settings, provider: Provider) -> ProviderConfig:
    if provider == Provider.GOOGLE:
        return _google(settings)
    return _outlook(settings)


def _google(settings: Settings) -> ProviderConfig:
    local = settings.google_client_id is None
    if local:
        client_id, secret = LOCAL_CLIENTS["google"]
        base = f"{settings.providers_url}/google"
        accounts, oauth, calendar, mail = base, base, f"{base}/calendar/v3", f"{base}/gmail/v1"
    else:
        client_id = str(settings.google_client_id)
        secret = settings.google_client_secret.get_secret_value() if settings.google_client_secret else ""
        accounts, oauth = "https://accounts.google.com", "https://oauth2.googleapis.com"
        calendar, mail = "https://www.googleapis.com/calendar/v3", "https://gmail.googleapis.com/gmail/v1"
    return ProviderConfig(
        Provider.GOOGLE, "Google", "Google Calendar and Gmail", client_id, secret,
        authorize_url=f"{accounts}/o/oauth2/v2/auth", token_url=f"{oauth}/token", revoke_url=f"{oauth}/revoke",
        calendar_api=calendar, mail_api=mail, scopes=GOOGLE_SCOPES,
        # A refresh token (offline), asked for again on each connect (consent).
        authorize_params={"access_type": "offline", "prompt": "consent"}, local=local)


def _outlook(settings: Settings) -> ProviderConfig:
    local = settings.microsoft_client_id is None
    tenant = settings.microsoft_tenant
    if local:
        client_id, secret = LOCAL_CLIENTS["outlook"]
        login, graph = f"{settings.providers_url}/microsoft", f"{settings.providers_url}/graph/v1.0"
    else:
        client_id = str(settings.microsoft_client_id)
        secret = settings.microsoft_client_secret.get_secret_value() if settings.microsoft_client_secret else ""
        login, graph = "https://login.microsoftonline.com", "https://graph.microsoft.com/v1.0"
    return ProviderConfig(
        Provider.OUTLOOK, "Microsoft", "Outlook calendar and mail", client_id, secret,
        authorize_url=f"{login}/{tenant}/oauth2/v2.0/authorize", token_url=f"{login}/{tenant}/oauth2/v2.0/token",
        revoke_url=None, calendar_api=graph, mail_api=graph, scopes=OUTLOOK_SCOPES,
        authorize_params={"prompt": "select_account"}, local=local)
