"""OpenClaw's configuration and environment, rendered from what the platform knows.

One renderer for every backend: the local runtime writes it to a file, Kubernetes to a ConfigMap.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from core.ports import McpServerSpec
from core.settings import Settings

GATEWAY_PORT = 18789
PLATFORM_PROVIDED_TOOLS = ("web_search", "cron")  # OpenClaw's own, replaced by deepclaw__web_search / __schedule_reminder
PROVIDER_ID = "deepclaw"

# Start-up cost matters (see docs/platform-facts.md): nothing we don't use is switched on.
SLIM_ENV = {
    "OPENCLAW_DISABLE_BONJOUR": "1",
    "OPENCLAW_SKIP_CHANNELS": "1",
    "OPENCLAW_SKIP_GMAIL_WATCHER": "1",
    "OPENCLAW_SKIP_CANVAS_HOST": "1",
    "OPENCLAW_SKIP_BROWSER_CONTROL_SERVER": "1",
    "OPENCLAW_NO_AUTO_UPDATE": "1",
    "OPENCLAW_NO_RESPAWN": "1",
    # OpenClaw records every run's "trajectory" (prompt, tool catalogue, events, each redacted and
    # written to its SQLite database) for its own debugging exports. The platform keeps its own
    # conversation records, and a second copy of what users say is one more to protect; it was also
    # ~30 ms of the gateway's main thread per turn (profiled: 20-40 turns, model stand-in).
    "OPENCLAW_TRAJECTORY": "0",
}


# Preloaded into every gateway (NODE_OPTIONS=--import): keeps OpenClaw's worker threads warm across a
# minute of silence (the module says what it changes and why).
WARMTH_PRELOAD = Path(__file__).with_name("openclaw_warmth.mjs")


def node_options(preload: str, *extra: str) -> str:
    """NODE_OPTIONS for a gateway: `extra` flags, then the warmth preload at `preload` (a path)."""
    return " ".join([*extra, "--import", Path(preload).as_uri()])


# Turns that only warm an agent up (after start, after an assignment, in a call's long silences) go
# to a session of their own, apart from every conversation, and ask for as little as possible.
WARM_UP_SESSION = "deepclaw-warm-up"
WARM_UP_PROMPT = "Keep-alive check: reply with the single word ok and do nothing else."


def warm_up_turn(agent: str) -> dict[str, Any]:
    """The chat-completions body of one warm-up turn for `agent` (send it with WARM_UP_SESSION)."""
    return {"model": f"openclaw/{agent}", "messages": [{"role": "user", "content": WARM_UP_PROMPT}]}


def agent_id(user_id: uuid.UUID) -> str:
    """The user's agent inside their gateway; callers address it as model `openclaw/<agent id>`."""
    return f"user-{user_id.hex}"


def with_agent(config: dict[str, Any], user_id: uuid.UUID, name: str, workspace: str) -> dict[str, Any]:
    config["agents"]["entries"] = {agent_id(user_id): {"name": name, "workspace": workspace}}
    return config


def with_mcp_servers(config: dict[str, Any], servers: list[McpServerSpec]) -> dict[str, Any]:
    """`mcp.servers.<name> = {url, transport, headers}` (the platform's own first, then the user's)."""
    if servers:
        config["mcp"] = {"servers": {s.name: {"url": s.url, "transport": s.transport, "headers": s.headers}
                                     for s in servers}}
    return config


class ModelProvider(BaseModel):
    """An OpenAI-compatible endpoint: the local model stand-in, or a real provider."""

    base_url: str
    api_key: str
    model: str

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelProvider:
        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else "local"
        return cls(base_url=settings.model_base_url, api_key=key, model=settings.llm_model)


def render_config(*, port: int, bind: str, model: ModelProvider, api_key_env: str | None = None,
                  platform_hosts: Sequence[str] = ()) -> dict[str, Any]:
    """`api_key_env` keeps the provider key out of the file: OpenClaw substitutes ${VAR} at load.
    `platform_hosts`: the platform's own hosts where they are private (a local API on loopback),
    which web_fetch's SSRF guard would refuse: the agent fetches its MMS attachments there."""
    config: dict[str, Any] = {
        "gateway": {
            "mode": "local",
            "port": port,
            "bind": bind,
            "http": {"endpoints": {"chatCompletions": {"enabled": True}}},
            "controlUi": {"enabled": False},
        },
        "models": {
            "providers": {
                PROVIDER_ID: {
                    "baseUrl": model.base_url,
                    "apiKey": f"${{{api_key_env}}}" if api_key_env else model.api_key,
                    "api": "openai-completions",
                    "models": [{"id": model.model, "name": model.model}],
                }
            }
        },
        "agents": {"defaults": {"model": {"primary": f"{PROVIDER_ID}/{model.model}"}}},
        # One mechanism each, the platform's (its MCP server): web search that needs no key, and
        # reminders as durable ReminderWorkflows that text or call the user.
        "tools": {"deny": list(PLATFORM_PROVIDED_TOOLS)},
        "browser": {"enabled": False},
        "discovery": {"mdns": {"mode": "off"}},
        "update": {"checkOnStart": False},
    }
    if platform_hosts:
        config["tools"]["web"] = {"fetch": {"ssrfPolicy": {"allowedHostnames": list(platform_hosts)}}}
    return config
