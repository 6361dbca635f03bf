"""URLs the platform hands out, with what they are for sealed in (core.tokens): TwiML for calls we
place or redirect (the webhook trusts it without a database lookup), the platform MCP server each
user's agent is given, and links to the attachments of the user's MMS."""

from __future__ import annotations

import uuid

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db import transaction
from core.models import McpServer, User
from core.ports import McpServerSpec
from core.settings import Settings
from core.tokens import TokenKind

# A placed call rings for a minute at most, and Twilio asks for its TwiML as soon as it is answered.
PURPOSE_TOKEN_TTL_S = 15 * 60.0
PURPOSE_AUDIENCE = "api:/twilio/outbound"
PLATFORM_MCP_NAME = "deepclaw"
MCP_RELAY_PATH = "/mcp-relay"  # the user's own MCP servers, through the platform (api/routes/mcp_relay.py)
MCP_AUDIENCE = "api:/mcp"
# It lives in the agent's config for the agent's life; revoked by bumping the user's
# mcp_token_generation (a fresh token is rendered at the next settings change or wake).
MCP_TOKEN_TTL_S = 10 * 365 * 24 * 3600.0
MEDIA_AUDIENCE = "api:/media"
# The link sits in the agent's SMS session (one a day), so it may fetch the attachment again
# when asked about it later; a week covers that without living as long as the provider keeps media.
MEDIA_LINK_TTL_S = 7 * 24 * 3600.0


def agent_call_url(settings: Settings, *, user_id: uuid.UUID, greeting: str, purpose: str = "",
                   direction: str = "outbound", delivery: str = "", ttl_s: float = PURPOSE_TOKEN_TTL_S) -> str:
    """TwiML that streams the call to the user's own agent, which opens with `greeting`; `purpose`
    (why we called) is added to the call's rules for the rest of the call; `delivery`: the
    delivery that placed it (told when a voicemail box answers)."""
    token = settings.keyring.seal(TokenKind.PURPOSE, {"user": str(user_id), "greeting": greeting, "purpose": purpose,
                                                      "direction": direction, "delivery": delivery},
                                  audience=PURPOSE_AUDIENCE, ttl_s=ttl_s)
    return f"{settings.api_base_url}/twilio/outbound?purpose={token}"


def media_link(settings: Settings, user_id: uuid.UUID, provider_url: str) -> str:
    """A link the user's agent can fetch for one attachment: the platform fetches it from the provider
    with the account's credentials, so the agent holds neither those nor the provider's URL."""
    token = settings.keyring.seal(TokenKind.MEDIA, {"user": str(user_id), "url": provider_url},
                                  audience=MEDIA_AUDIENCE, ttl_s=MEDIA_LINK_TTL_S)
    return f"{settings.api_base_url}/media/{token}"


def mcp_token(settings: Settings, user_id: uuid.UUID, generation: int) -> str:
    return settings.keyring.seal(TokenKind.MCP, {"user": str(user_id), "gen": generation},
                                 audience=MCP_AUDIENCE, ttl_s=MCP_TOKEN_TTL_S)


def platform_mcp_server(settings: Settings, user_id: uuid.UUID, generation: int = 0) -> McpServerSpec:
    """The platform's MCP server as one user's agent reaches it: acting for that user only."""
    return McpServerSpec(name=PLATFORM_MCP_NAME, url=f"{settings.api_base_url}/mcp",
                         headers={"Authorization": f"Bearer {mcp_token(settings, user_id, generation)}"})


async def mcp_token_generation(sessions: async_sessionmaker[AsyncSession], user_id: uuid.UUID) -> int | None:
    """The generation a user's MCP tokens must carry; None if there is no such user."""
    async with sessions() as session:
        return (await session.execute(select(User.mcp_token_generation).where(User.id == user_id))).scalar_one_or_none()


async def current_platform_mcp_server(settings: Settings, sessions: async_sessionmaker[AsyncSession],
                                      user_id: uuid.UUID) -> McpServerSpec:
    return platform_mcp_server(settings, user_id, await mcp_token_generation(sessions, user_id) or 0)


async def agent_mcp_servers(settings: Settings, sessions: async_sessionmaker[AsyncSession],
                            user_id: uuid.UUID) -> list[McpServerSpec]:
    """The MCP servers one user's agent is given: the platform's first, then the user's own that
    answered when last checked, each through the platform's relay with the same token (their header
    values stay with the platform). Read when the agent is configured, never carried through Temporal."""
    platform = await current_platform_mcp_server(settings, sessions, user_id)
    async with sessions() as session:
        theirs = (await session.execute(select(McpServer).where(
            McpServer.user_id == user_id, McpServer.enabled, McpServer.status != "failing")
            .order_by(McpServer.created_at))).scalars().all()
    return [platform, *(McpServerSpec(name=s.name, url=f"{settings.api_base_url}{MCP_RELAY_PATH}/{s.id}",
                                      transport=s.transport, headers=platform.headers) for s in theirs)]


async def revoke_mcp_tokens(sessions: async_sessionmaker[AsyncSession], user_id: uuid.UUID) -> int:
    """Every MCP token the user's agent holds stops working; returns the new generation (the agent
    gets a token of it when its settings are next applied)."""
    async with transaction(sessions) as session:
        return (await session.execute(update(User).where(User.id == user_id)
                                      .values(mcp_token_generation=User.mcp_token_generation + 1)
                                      .returning(User.mcp_token_generation))).scalar_one()
