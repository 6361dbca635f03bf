"""Voice samples through Deepgram's TTS REST API (POST /v1/speak). Local and real share the
adapter: the voice-agent stand-in serves the same endpoint with the offline voices."""

from __future__ import annotations

import httpx

from core.ports import SpeechUnavailable

SAMPLE_TIMEOUT_S = 20.0


class DeepgramSpeech:
    def __init__(self, base_url: str, api_key: str | None) -> None:
        headers = {"Authorization": f"Token {api_key}"} if api_key else {}
        self.http = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, timeout=SAMPLE_TIMEOUT_S)

    async def speak(self, text: str, *, voice: str) -> bytes:
        """`text` in `voice` (a Deepgram model, e.g. aura-2-thalia-en), as a WAV file."""
        try:
            response = await self.http.post("/v1/speak", params={"model": voice, "encoding": "linear16",
                                                                 "container": "wav", "sample_rate": 24000},
                                             json={"text": text})
        except httpx.HTTPError as error:
            raise SpeechUnavailable(f"speech service unreachable: {error}") from None
        if response.status_code != 200:
            raise SpeechUnavailable(f"speech service answered {response.status_code}: {response.text[:200]}")
        return response.content

    async def close(self) -> None:
        await self.http.aclose()
