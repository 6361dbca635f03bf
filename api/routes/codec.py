"""The codec server (audience: Temporal UI in an operator's browser, and `temporal --codec-endpoint`):
Temporal's codec-server protocol, `POST /codec/decode` and `/codec/encode` with
`{"payloads": [...]}` in protobuf JSON, run through the platform's payload codec
(core/payload_codec.py).

Only a signed-in operator gets anything: the browser sends the dashboard's session cookie when
Temporal UI's codec settings "Include cross-origin credentials" is on (the UI and the API are the
same site, so the cookie goes). CORS answers only Temporal UI's origin.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from google.protobuf.json_format import MessageToJson, Parse, ParseError
from temporalio.api.common.v1 import Payloads

from api.deps import SessionDep, SettingsDep, ViewerDep
from api.sign_in import Viewer
from core.keyring import KeyringError
from core.models import AuditEvent
from core.payload_codec import EncryptionCodec
from core.settings import Settings

router = APIRouter(prefix="/codec")

MAX_BODY_BYTES = 8 * 1024 * 1024  # a page of history's payloads (each at most 2 MB in Temporal)
ALLOWED_HEADERS = "content-type, x-namespace, authorization"


def ui_origins(settings: Settings) -> set[str]:
    """Temporal UI's origin; locally also its other spelling (the UI is opened as either)."""
    origin = settings.temporal_ui_url.rstrip("/")
    spellings = {origin}
    if settings.local_mode:
        spellings |= {origin.replace("127.0.0.1", "localhost"), origin.replace("localhost", "127.0.0.1")}
    return spellings


def allow_origin(request: Request, settings: Settings, response: Response) -> Response:
    origin = request.headers.get("origin", "")
    if origin in ui_origins(settings):
        response.headers.update({"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true",
                                 "Vary": "Origin"})
    return response


def _operator(request: Request, settings: SettingsDep, viewer: ViewerDep) -> Viewer:
    origin = request.headers.get("origin")
    if origin and origin not in ui_origins(settings) and origin != settings.api_base_url.rstrip("/"):
        raise HTTPException(status_code=403, detail="the codec server answers Temporal UI's origin only")
    if viewer is None:
        raise HTTPException(status_code=401, detail="sign in to the dashboard as an operator first, and turn on "
                                                    "'Include cross-origin credentials' in Temporal UI's codec settings")
    if not viewer.operator:
        raise HTTPException(status_code=403, detail="the codec server is for operators")
    return viewer


OperatorDep = Annotated[Viewer, Depends(_operator)]


@router.options("/{action}")
async def preflight(action: str, request: Request, settings: SettingsDep) -> Response:
    response = Response(status_code=204, headers={"Access-Control-Allow-Methods": "POST, OPTIONS",
                                                  "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                                                  "Access-Control-Max-Age": "600"})
    return allow_origin(request, settings, response)


@router.post("/{action}")
async def transcode(action: str, request: Request, settings: SettingsDep, session: SessionDep,
                    viewer: OperatorDep) -> Response:
    if action not in ("decode", "encode"):
        raise HTTPException(status_code=404)
    namespace = request.headers.get("x-namespace")
    if namespace and namespace != settings.temporal_namespace:
        raise HTTPException(status_code=400, detail=f"this codec serves namespace {settings.temporal_namespace!r}")
    try:
        payloads = Parse(await request.body(), Payloads())
    except (ParseError, UnicodeDecodeError) as error:
        raise HTTPException(status_code=400, detail=f"not a Payloads JSON body: {error}") from None
    codec = EncryptionCodec(settings.data_keyring)
    try:
        out = await (codec.decode if action == "decode" else codec.encode)(payloads.payloads)
    except KeyringError as error:
        raise HTTPException(status_code=422, detail=str(error)) from None
    # Decoding shows users' data to an operator: on the audit trail like every operator view.
    session.add(AuditEvent(user_id=None, actor="operator", action=f"operator.{action}d_payloads",
                           detail={"operator": viewer.operator, "payloads": len(out), "namespace": namespace}))
    await session.commit()
    body = MessageToJson(Payloads(payloads=out), indent=None)
    return allow_origin(request, settings, Response(body, media_type="application/json"))
