"""GET /media/{token}: an attachment of the user's MMS, for their agent (another of the agents'
endpoints, like the MCP server). The link (core.callbacks.media_link) seals the provider's media URL
and the user; the platform fetches it with the account's credentials, which Twilio asks for when
media is served with HTTP auth, so the agent never holds them nor learns the provider's URL."""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response

from api.deps import SettingsDep, TelephonyDep
from core.callbacks import MEDIA_AUDIENCE
from core.logs import log_context
from core.ports import MediaUnavailable
from core.tokens import InvalidToken, TokenKind

log = logging.getLogger(__name__)
router = APIRouter()

# Served from the API's origin (the dashboard's too): never run as a page, whatever the sender attached.
SAFE_HEADERS = {"Content-Security-Policy": "sandbox; default-src 'none'", "X-Content-Type-Options": "nosniff",
                "Cache-Control": "private, max-age=3600"}


@router.get("/media/{token}")
async def attachment(token: str, settings: SettingsDep, telephony: TelephonyDep) -> Response:
    try:
        claims = settings.keyring.open(TokenKind.MEDIA, token, audience=MEDIA_AUDIENCE)
        user, url = str(claims["user"]), str(claims["url"])
    except (InvalidToken, KeyError) as error:
        log.warning("attachment link refused: %s", error)
        raise HTTPException(status_code=401, detail="not a valid attachment link") from None
    with log_context(user_id=user):
        try:
            media = await telephony.fetch_media(url)
        except MediaUnavailable as error:
            log.warning("attachment not fetched: %s", error)
            raise HTTPException(status_code=error.status, detail=str(error)) from None
        log.info("attachment fetched for the agent (%s, %d bytes)", media.content_type, len(media.data))
    return Response(media.data, media_type=media.content_type, headers=SAFE_HEADERS)
