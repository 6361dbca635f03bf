"""The Media Streams listener: a picows server whose listeners feed a CallBridge each.

picows parses websocket frames in C and calls back synchronously, so a frame is relayed by the
callback that received it: no queue, no task switch, no copy beyond the base64 step. Twilio and
Deepgram send whole (unfragmented) messages; a fragment is counted as malformed and dropped.
"""

from __future__ import annotations

import asyncio
import logging

from picows import (
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

from voice.bridge import TEXT, BridgeDeps, CallBridge, answer_close

log = logging.getLogger(__name__)

MEDIA_PATH = b"/twilio/media"
MAX_MESSAGE_BYTES = 1 << 20  # a media message is ~250 bytes; start carries a token


class TwilioSide(WSListener):
    """One Media Stream from Twilio."""

    def __init__(self, deps: BridgeDeps) -> None:
        self.deps = deps
        self.bridge: CallBridge | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.bridge = CallBridge(transport, self.deps)
        self.deps.spawn(self.bridge.run(), self.deps.calls)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        assert self.bridge is not None
        kind = frame.msg_type  # read once: each read builds the enum
        if kind == TEXT and frame.fin:
            self.bridge.twilio_message(frame.get_payload_as_bytes())
        elif kind == WSMsgType.CLOSE:
            answer_close(transport, frame)
        elif kind not in (WSMsgType.PING, WSMsgType.PONG):
            self.bridge.stats["malformed"] += 1

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.bridge is not None:
            self.bridge.side_closed("twilio")


async def serve_media(deps: BridgeDeps, host: str, port: int) -> asyncio.Server:
    """Accepts Media Streams on `/twilio/media`; a plain GET `/healthz` answers for load balancers."""

    def route(request: WSUpgradeRequest) -> WSListener | WSUpgradeResponseWithListener | None:
        path = request.path.split(b"?", 1)[0]
        if path == MEDIA_PATH:
            return TwilioSide(deps)
        if path == b"/healthz":
            body = b'{"status":"ok","calls":%d}' % len(deps.calls)
            response = WSUpgradeResponse.create_ok_response(body, {"Content-Type": "application/json"})
            return WSUpgradeResponseWithListener(response, None)
        return None  # 404

    return await ws_create_server(route, host, port, websocket_handshake_timeout=10,
                                  max_frame_size=MAX_MESSAGE_BYTES, logger_name="media")
