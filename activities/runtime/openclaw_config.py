"""OpenClaw's configuration and environment, rendered from what the platform knows.

One renderer for every backend: the local runtime writes it to a file, Kubernetes to a ConfigMap.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from core.settings import Settings

GATEWAY_PORT = 18789
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
}


class ModelProvider(BaseModel):
    """An OpenAI-compatible endpoint: the local model stand-in, or a real provider."""

    base_url: str
    api_key: str
    model: str

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelProvider:
        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else "local"
        return cls(base_url=settings.model_base_url, api_key=key, model=settings.llm_model)


def render_config(*, port: int, bind: str, model: ModelProvider) -> dict[str, Any]:
    return {
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
                    "apiKey": model.api_key,
                    "api": "openai-completions",
                    "models": [{"id": model.model, "name": model.model}],
                }
            }
        },
        "agents": {"defaults": {"model": {"primary": f"{PROVIDER_ID}/{model.model}"}}},
        "browser": {"enabled": False},
        "discovery": {"mdns": {"mode": "off"}},
        "update": {"checkOnStart": False},
    }
