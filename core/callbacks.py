"""URLs the platform hands out, with what they are for signed in: TwiML for calls we place or
redirect (the webhook trusts it without a database lookup), and the platform MCP server each
user's agent is given."""

from __future__ import annotations

import uuid

from core import tokens
from core.ports import McpServerSpec, Telephony
from core.settings import Settings

PURPOSE_TOKEN_TTL_S = 3600.0  # a placed call is answered (or not) well within the hour
PLATFORM_MCP_NAME = "deepclaw"
# Lives in the agent's config for its whole life; rotating the platform secret revokes every one.
MCP_TOKEN_TTL_S = 10 * 365 * 24 * 3600.0


def agent_call_url(settings: Settings, *, user_id: uuid.UUID, greeting: str, prompt: str = "",
                   direction: str = "outbound") -> str:
    """TwiML that streams the call to the user's own agent, which opens with `greeting`."""
    purpose = tokens.sign({"kind": "purpose", "user": str(user_id), "greeting": greeting, "prompt": prompt,
                           "direction": direction},
                          settings.platform_secret.get_secret_value(), ttl_s=PURPOSE_TOKEN_TTL_S)
    return f"{settings.api_base_url}/twilio/outbound?purpose={purpose}"


async def call_user_with_agent(telephony: Telephony, settings: Settings, *, user_id: uuid.UUID, to: str, from_: str,
                               greeting: str, prompt: str) -> str:
    """Rings the user from their own number; when they answer, their agent opens with `greeting`."""
    url = agent_call_url(settings, user_id=user_id, greeting=greeting, prompt=prompt)
    return await telephony.place_call(to=to, from_=from_, url=url)


def platform_mcp_server(settings: Settings, user_id: uuid.UUID) -> McpServerSpec:
    """The platform's MCP server as one user's agent reaches it: acting for that user only."""
    token = tokens.sign({"kind": "mcp", "user": str(user_id)}, settings.platform_secret.get_secret_value(),
                        ttl_s=MCP_TOKEN_TTL_S)
    return McpServerSpec(name=PLATFORM_MCP_NAME, url=f"{settings.api_base_url}/mcp",
                         headers={"Authorization": f"Bearer {token}"})
