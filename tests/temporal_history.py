"""Reading a workflow's history as Temporal stores it: the raw events from the server (what its
database and UI hold), or the same with the platform's payloads decrypted (what an operator sees
through the codec server)."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.client import Client

from core.payload_codec import EncryptionCodec
from core.settings import Settings

# Indexed by Temporal itself, readable by design (core/payload_codec.py says which and why).
SEARCHABLE = "searchAttributes"
# Random identifiers (run and request ids, trace ids): hex, so a short digit secret can turn up in
# one by chance (it did: "2580" inside a traceparent). They carry nothing of the user's, so masked.
RANDOM_HEX = re.compile(r"[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}|[0-9a-f]{16,}", re.IGNORECASE)
# Temporal's own numbers: event and task ids, times ("...T16:05:12.258012Z"), durations ("2.580s").
# Digits by chance too ("2580" turned up again, in one of them); the user's words are in payloads.
TEMPORALS_OWN = re.compile(r"\d+|\d{4}-\d\d-\d\dT[\d:.]+Z|\d+(?:\.\d+)?s")


def _payloads(node: Any, *, skip_searchable: bool) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "data" in node and "metadata" in node:
            yield node
        for key, value in node.items():
            if not (skip_searchable and key == SEARCHABLE):
                yield from _payloads(value, skip_searchable=skip_searchable)
    elif isinstance(node, list):
        for item in node:
            yield from _payloads(item, skip_searchable=skip_searchable)


def _strip_searchable(node: Any) -> Any:
    """The events without search attributes, each payload's base64 data left out (the same bytes are
    listed decoded, and base64 of ciphertext could spell a short secret by chance), Temporal's own
    numbers masked."""
    if isinstance(node, dict):
        if "data" in node and "metadata" in node:
            node = {**node, "data": "<listed decoded>"}
        return {k: _strip_searchable(v) for k, v in node.items() if k != SEARCHABLE}
    if isinstance(node, list):
        return [_strip_searchable(v) for v in node]
    if isinstance(node, int | float) and not isinstance(node, bool) or (
            isinstance(node, str) and TEMPORALS_OWN.fullmatch(node)):
        return "<n>"
    return node


def _payload(node: dict[str, Any]) -> Payload:
    return Payload(metadata={k: base64.b64decode(v) for k, v in node["metadata"].items()},
                   data=base64.b64decode(node["data"]))


async def raw_events(client: Client, workflow_id: str) -> dict[str, Any]:
    """Every event of the workflow's history (its current run), straight from the server."""
    handle = client.get_workflow_handle(workflow_id)
    return json.loads((await handle.fetch_history()).to_json())


async def stored_text(client: Client, workflow_id: str) -> str:
    """The history as stored, search attributes left out, every payload's bytes as text: a string
    found here is readable by anyone with access to Temporal's database or UI."""
    events = await raw_events(client, workflow_id)
    datas = [_payload(p).data.decode(errors="replace") for p in _payloads(events, skip_searchable=True)]
    return RANDOM_HEX.sub("<id>", "\n".join([json.dumps(_strip_searchable(events)), *datas]))


def decoded_text(history_json: str, settings: Settings) -> str:
    """The history with the platform's payloads opened by its key ring (as the codec server does)."""
    codec = EncryptionCodec(settings.data_keyring)
    events = json.loads(history_json)
    datas = []
    for node in _payloads(events, skip_searchable=False):
        payload = codec.open(_payload(node))
        datas.append(payload.data.decode(errors="replace"))
    return "\n".join([history_json, *datas])
