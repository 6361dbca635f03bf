"""The model stand-in over HTTP, and a real OpenClaw gateway answering through it."""

import json

import httpx

from activities.runtime.gateway import GatewayProcess
from emulators.demo_model import DEMO_NOTICE
from emulators.llm import ModelScript


def _sse_text(body: str) -> str:
    text = ""
    for line in body.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            for choice in json.loads(line[6:])["choices"]:
                text += choice["delta"].get("content") or ""
    return text


async def test_json_and_sse_answers_tolerate_tools(model_server: tuple[str, ModelScript]) -> None:
    base_url, _ = model_server
    request = {
        "model": "deepclaw-local",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
        "tools": [{"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}}}],
    }
    async with httpx.AsyncClient() as http:
        plain = (await http.post(f"{base_url}/chat/completions", json=request)).json()
        streamed = await http.post(f"{base_url}/chat/completions", json={**request, "stream": True})
        bad = await http.post(f"{base_url}/chat/completions", content=b"not json")
    assert plain["choices"][0]["message"]["content"] == f"You said: hello there. {DEMO_NOTICE}"
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.text.rstrip().endswith("data: [DONE]")
    assert _sse_text(streamed.text) == plain["choices"][0]["message"]["content"]
    assert bad.status_code == 400 and "messages" in bad.json()["error"]["message"]


async def test_scripted_replies_are_deterministic(model_server: tuple[str, ModelScript]) -> None:
    base_url, script = model_server
    async with httpx.AsyncClient() as http:
        queued = await http.post(f"{base_url[:-3]}/control/replies", json={"match": "weather", "reply": "Sunny, 21 degrees."})
        assert queued.status_code == 200
        ask = {"messages": [{"role": "user", "content": "what's the weather like?"}]}
        first = (await http.post(f"{base_url}/chat/completions", json=ask)).json()
        second = (await http.post(f"{base_url}/chat/completions", json=ask)).json()
    assert first["choices"][0]["message"]["content"] == "Sunny, 21 degrees."
    assert second["choices"][0]["message"]["content"].startswith("You said: what's the weather")  # used once


async def test_real_openclaw_answers_through_the_stand_in(
    openclaw_gateway: GatewayProcess, model_server: tuple[str, ModelScript]
) -> None:
    _, script = model_server
    headers = {"Authorization": f"Bearer {openclaw_gateway.token}", "x-openclaw-session-key": "test-memory"}
    url = f"{openclaw_gateway.base_url}/v1/chat/completions"
    async with httpx.AsyncClient(timeout=60) as http:
        first = await http.post(url, headers=headers, json={
            "model": "openclaw/default", "messages": [{"role": "user", "content": "my locker code is 4471"}]})
        assert first.status_code == 200, first.text
        assert first.json()["choices"][0]["message"]["content"] == f"You said: my locker code is 4471. {DEMO_NOTICE}"

        # Same session key: OpenClaw keeps the conversation, so the model sees the earlier turn.
        second = await http.post(url, headers=headers, json={
            "model": "openclaw/default", "stream": True, "messages": [{"role": "user", "content": "what did I say?"}]})
        assert second.status_code == 200
        assert _sse_text(second.text) == "Earlier you said: my locker code is 4471"

        unauthorised = await http.post(url, json={"model": "openclaw/default", "messages": []})
        assert unauthorised.status_code == 401
    assert any(request.get("tools") for request in script.requests), "OpenClaw sends its tools to the model"


def test_openclaw_uses_the_stand_in_unless_a_provider_is_configured() -> None:
    from activities.runtime.openclaw_config import ModelProvider, render_config
    from core.settings import Settings

    local = ModelProvider.from_settings(Settings(_env_file=None, llm_port=8004))
    assert local == ModelProvider(base_url="http://127.0.0.1:8004/v1", api_key="local", model="deepclaw-local")
    real = ModelProvider.from_settings(Settings(
        _env_file=None, llm_base_url="https://api.openai.com/v1", llm_api_key="sk-test", llm_model="gpt-4.1-mini"))
    config = render_config(port=18789, bind="loopback", model=real)
    assert config["models"]["providers"]["deepclaw"]["baseUrl"] == "https://api.openai.com/v1"
    assert config["agents"]["defaults"]["model"]["primary"] == "deepclaw/gpt-4.1-mini"
