"""The Deepgram Voice Agent `Settings` for one call."""

from __future__ import annotations

from typing import Any

# The user's OpenClaw, not Deepgram's LLM, writes the answers, and it cannot call Deepgram's
# functions: it ends its farewell with this marker, and the proxy turns it into an end_call.
END_CALL_MARKER = "[END_CALL]"

SPEECH_RULES = (
    "You are speaking on a phone call. Answer in one to three short spoken sentences. "
    "No markdown, lists, emoji, links or code: say things the way a person would say them aloud. "
    f"When the caller says goodbye or wants to hang up, say a short farewell and end it with {END_CALL_MARKER}."
)

END_CALL = {
    "name": "end_call",
    "description": "Hang up after saying goodbye, when the caller is done or asks to end the call.",
    "parameters": {"type": "object", "properties": {"reason": {"type": "string"}}},
}


# The hotline's: its conductor asks for it with the line before the hand-off, and the bridge tells
# the onboarding once that line has played, so the call is handed over at once, not on an estimate.
HAND_OFF = {
    "name": "hand_off",
    "description": "Hand the call to the caller's new assistant once this line has been said.",
    "parameters": {"type": "object", "properties": {}},
}


def build_settings(*, think_url: str, voice: str, greeting: str, prompt: str = SPEECH_RULES,
                   functions: list[dict[str, Any]] | None = None, keyterms: list[str] | None = None) -> dict[str, Any]:
    listen: dict[str, Any] = {"type": "deepgram", "model": "nova-3"}
    if keyterms:
        listen["keyterms"] = keyterms  # Nova-3, English only: words it should expect
    return {
        "type": "Settings",
        "audio": {
            "input": {"encoding": "mulaw", "sample_rate": 8000},
            "output": {"encoding": "mulaw", "sample_rate": 8000, "container": "none"},
        },
        "agent": {
            "language": "en",
            "listen": {"provider": listen},
            "think": {
                "provider": {"type": "open_ai", "model": "gpt-4o-mini"},
                "endpoint": {"url": think_url, "headers": {}},
                "prompt": prompt,
                "functions": functions or [END_CALL],
            },
            "speak": {"provider": {"type": "deepgram", "model": voice}},
            "greeting": greeting,
        },
    }


def pin_greeting(agent_name: str) -> str:
    return f"Hi, it's {agent_name}. I can't confirm this call is from you: please say or key in your PIN."


def purpose_prompt(purpose: str) -> str:
    """Instructions for a call we place (a reminder, a finished task): say why first."""
    return f"{SPEECH_RULES} You called the user yourself, for this reason: {purpose}"
