"""URLs Twilio fetches TwiML from when a call we place or redirect is answered. What the call is
for travels signed in the URL, so the webhook trusts it without a database lookup."""

from __future__ import annotations

import uuid

from core import tokens
from core.settings import Settings

PURPOSE_TOKEN_TTL_S = 3600.0  # a placed call is answered (or not) well within the hour


def agent_call_url(settings: Settings, *, user_id: uuid.UUID, greeting: str, prompt: str = "",
                   direction: str = "outbound") -> str:
    """TwiML that streams the call to the user's own agent, which opens with `greeting`."""
    purpose = tokens.sign({"kind": "purpose", "user": str(user_id), "greeting": greeting, "prompt": prompt,
                           "direction": direction},
                          settings.platform_secret.get_secret_value(), ttl_s=PURPOSE_TOKEN_TTL_S)
    return f"{settings.api_base_url}/twilio/outbound?purpose={purpose}"
