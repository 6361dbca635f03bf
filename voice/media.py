"""The Media Streams listener: a picows server whose compiled listeners (voice/relay.pyx) feed a
CallBridge each.

picows parses websocket frames in C and calls the listener synchronously, so a frame is relayed by
the callback that received it: no queue, no task switch, no Python for audio. Twilio and Deepgram
send whole (unfragmented) messages; a fragment is counted as malformed and dropped.
"""

from __future__ import annotations

import asyncio
import logging

from picows import (
    WSListener,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

from voice.bridge import BridgeDeps, CallBridge
from voice.relay import TwilioListener

log = logging.getLogger(__name__)

MEDIA_PATH = b"/twilio/media"
MAX_MESSAGE_BYTES = 1 << 20  # a media message is ~250 bytes; start carries a token


async def serve_media(deps: BridgeDeps, host: str, port: int) -> asyncio.Server:
    """Accepts Media Streams on `/twilio/media`; a plain GET `/healthz` answers for load balancers."""

    def start_call(transport: WSTransport) -> CallBridge:
        bridge = CallBridge(transport, deps)
        deps.spawn(bridge.run(), deps.calls)
        return bridge

    def route(request: WSUpgradeRequest) -> WSListener | WSUpgradeResponseWithListener | None:
        path = request.path.split(b"?", 1)[0]
        if path == MEDIA_PATH:
            return TwilioListener(start_call)
        if path == b"/healthz":
            body = b'{"status":"ok","calls":%d}' % len(deps.calls)
            response = WSUpgradeResponse.create_ok_response(body, {"Content-Type": "application/json"})
            return WSUpgradeResponseWithListener(response, None)
        return None  # 404

    return await ws_create_server(route, host, port, websocket_handshake_timeout=10,
                                  max_frame_size=MAX_MESSAGE_BYTES, logger_name="media")
