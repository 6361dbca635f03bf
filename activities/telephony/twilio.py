"""Telephony over the `twilio` client. Real Twilio, or the local carrier with only the base URL changed,
so tests run exactly this code."""

from __future__ import annotations

import re
from datetime import datetime

import httpx
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from core.ports import MAX_MEDIA_BYTES, CallEnded, CallState, Media, MediaUnavailable, NumberNotFound, OwnedNumber

NOT_FOUND = 20404
CALL_IS_OVER = (21220, NOT_FOUND)  # not in progress; no such call (any more)
TWILIO_API = "https://api.twilio.com"  # where Twilio's MediaUrls point, whatever edge the REST calls use
MEDIA_TIMEOUT_S = 20.0


class TwilioTelephony:
    def __init__(self, account_sid: str, auth_token: str, *, api_base_url: str | None = None,
                 edge: str | None = None, region: str | None = None) -> None:
        self._http = AsyncTwilioHttpClient()
        self.client = Client(account_sid, auth_token, http_client=self._http, edge=edge, region=region)
        if api_base_url:
            self.client.api.base_url = api_base_url
        bases = "|".join(re.escape(base.rstrip("/")) for base in {TWILIO_API, api_base_url or TWILIO_API})
        # A message's attachment on this account: .../Messages/{MM|SM sid}/Media/{ME sid}, nothing else.
        self._media_url = re.compile(rf"(?:{bases})/2010-04-01/Accounts/{re.escape(account_sid)}"
                                     r"/Messages/(?:MM|SM)[0-9a-f]{32}/Media/ME[0-9a-f]{32}")
        # Twilio may redirect to its CDN; httpx drops the credentials when a redirect leaves the host.
        self._media = httpx.AsyncClient(auth=(account_sid, auth_token), follow_redirects=True, timeout=MEDIA_TIMEOUT_S)

    async def close(self) -> None:
        await self._http.close()
        await self._media.aclose()

    def owns_media_url(self, url: str) -> bool:
        return self._media_url.fullmatch(url) is not None

    async def fetch_media(self, url: str, *, max_bytes: int = MAX_MEDIA_BYTES) -> Media:
        if not self.owns_media_url(url):
            raise MediaUnavailable(f"not an attachment on this account: {url}", status=404)
        try:
            async with self._media.stream("GET", url) as response:
                if response.status_code == 404:
                    raise MediaUnavailable("the provider no longer has this attachment", status=404)
                if response.status_code != 200:
                    raise MediaUnavailable(f"the provider answered {response.status_code}")
                if int(response.headers.get("content-length") or 0) > max_bytes:
                    raise MediaUnavailable(f"attachment over {max_bytes} bytes", status=413)
                data = bytearray()
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > max_bytes:
                        raise MediaUnavailable(f"attachment over {max_bytes} bytes", status=413)
        except httpx.HTTPError as error:
            raise MediaUnavailable(f"the provider is unreachable: {error}") from error
        kind = response.headers.get("content-type", "application/octet-stream")
        return Media(content_type=kind, data=bytes(data))

    async def search_numbers(self, *, area_code: str | None = None, limit: int = 5) -> list[str]:
        kwargs = {"area_code": area_code} if area_code else {}
        found = await self.client.available_phone_numbers("US").local.list_async(limit=limit, **kwargs)
        return [n.phone_number for n in found]

    async def buy_number(self, e164: str, *, voice_url: str, sms_url: str,
                         friendly_name: str | None = None) -> OwnedNumber:
        extra = {"friendly_name": friendly_name} if friendly_name else {}
        bought = await self.client.incoming_phone_numbers.create_async(
            phone_number=e164, voice_url=voice_url, voice_method="POST", sms_url=sms_url, sms_method="POST", **extra)
        return _owned(bought)

    async def list_numbers(self) -> list[OwnedNumber]:
        return [_owned(n) for n in await self.client.incoming_phone_numbers.list_async()]

    async def configure_number(self, sid: str, *, voice_url: str, sms_url: str) -> None:
        try:
            await self.client.incoming_phone_numbers(sid).update_async(voice_url=voice_url, sms_url=sms_url)
        except TwilioRestException as error:
            if error.code == NOT_FOUND:
                raise NumberNotFound(sid) from error
            raise

    async def release_number(self, sid: str) -> None:
        try:
            await self.client.incoming_phone_numbers(sid).delete_async()
        except TwilioRestException as error:
            if error.code == NOT_FOUND:
                raise NumberNotFound(sid) from error
            raise

    async def send_sms(self, *, to: str, from_: str, body: str, status_callback: str | None = None) -> str:
        kwargs = {"status_callback": status_callback} if status_callback else {}
        message = await self.client.messages.create_async(to=to, from_=from_, body=body, **kwargs)
        return message.sid

    async def sent_sms(self, *, to: str, from_: str, body: str, since: datetime) -> list[str]:
        """The messages sent from `from_` to `to` with this body since `since` (to the second)."""
        found = await self.client.messages.list_async(to=to, from_=from_, date_sent_after=since.replace(microsecond=0))
        return [message.sid for message in found if message.body == body]

    async def place_call(self, *, to: str, from_: str, twiml: str | None = None, url: str | None = None,
                         status_callback: str | None = None, machine_detection: bool = False,
                         ring_timeout_s: int | None = None) -> str:
        """`machine_detection`: Twilio's synchronous answering-machine detection (the TwiML request
        and the status callback then carry AnsweredBy)."""
        if (twiml is None) == (url is None):
            raise ValueError("place_call needs exactly one of twiml or url")
        options = {"twiml": twiml, "url": url, "status_callback": status_callback, "timeout": ring_timeout_s,
                   "machine_detection": "Enable" if machine_detection else None}
        call = await self.client.calls.create_async(to=to, from_=from_, **{k: v for k, v in options.items() if v})
        return call.sid

    async def call_state(self, call_sid: str) -> CallState:
        call = await self.client.calls(call_sid).fetch_async()
        return CallState(status=call.status, answered_by=call.answered_by)

    async def redirect_call(self, call_sid: str, *, twiml: str | None = None, url: str | None = None) -> None:
        if (twiml is None) == (url is None):
            raise ValueError("redirect_call needs exactly one of twiml or url")
        try:
            await self.client.calls(call_sid).update_async(**({"twiml": twiml} if twiml else {"url": url}))
        except TwilioRestException as error:
            if error.code in CALL_IS_OVER:
                raise CallEnded(call_sid) from error
            raise

    async def hang_up(self, call_sid: str) -> None:
        await self.client.calls(call_sid).update_async(status="completed")


def _owned(number: object) -> OwnedNumber:
    return OwnedNumber(sid=number.sid, e164=number.phone_number, voice_url=number.voice_url,  # type: ignore[attr-defined]
                       sms_url=number.sms_url, friendly_name=number.friendly_name)  # type: ignore[attr-defined]
