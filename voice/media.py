"""The Media Streams listener: a picows server whose compiled listeners (voice/relay.pyx) feed a
CallBridge each.

picows parses websocket frames in C and calls the listener synchronously, so a frame is relayed by
the callback that received it: no queue, no task switch, no Python for audio. Twilio and Deepgram
send whole (unfragmented) messages; a fragment is counted as malformed and dropped.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus

from picows import (
    WSListener,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)
from twilio.request_validator import RequestValidator

from core.metrics import WEBHOOK_REJECTIONS
from voice.bridge import BridgeDeps, CallBridge
from voice.relay import TwilioListener

log = logging.getLogger(__name__)

MEDIA_PATH = b"/twilio/media"
MAX_MESSAGE_BYTES = 1 << 20  # a media message is ~250 bytes; start carries a ticket


def _refused(status: HTTPStatus, reason: bytes) -> WSUpgradeResponseWithListener:
    return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(status, reason), None)


async def serve_media(deps: BridgeDeps, host: str, port: int, *, reuse_port: bool = False) -> asyncio.Server:
    """Accepts Media Streams on `/twilio/media`; a plain GET `/healthz` answers for load balancers."""

    def start_call(transport: WSTransport) -> CallBridge:
        bridge = CallBridge(transport, deps)
        deps.spawn(bridge.run(), deps.calls)
        return bridge

    # Twilio signs the upgrade: X-Twilio-Signature over the stream URL it was given, with no parameters.
    validator = RequestValidator(deps.settings.twilio_auth_token.get_secret_value())
    stream_url = deps.settings.media_stream_url

    def route(request: WSUpgradeRequest) -> WSListener | WSUpgradeResponseWithListener | None:
        path = request.path.split(b"?", 1)[0]
        if path == MEDIA_PATH:
            if not validator.validate(stream_url, {}, request.headers.get("x-twilio-signature", "")):
                log.warning("refused a Media Stream upgrade without a valid X-Twilio-Signature")
                WEBHOOK_REJECTIONS.labels(reason="bad_signature").inc()
                return _refused(HTTPStatus.FORBIDDEN, b"invalid Twilio signature")
            return TwilioListener(start_call)
        if path == b"/healthz":
            body = b'{"status":"ok","calls":%d}' % len(deps.calls)
            response = WSUpgradeResponse.create_ok_response(body, {"Content-Type": "application/json"})
            return WSUpgradeResponseWithListener(response, None)
        return None  # 404

    return await ws_create_server(route, host, port, websocket_handshake_timeout=10,
                                  max_frame_size=MAX_MESSAGE_BYTES, logger_name="media", reuse_port=reuse_port)
