"""Temporal payloads encrypted by the platform's codec (core/payload_codec.py), against the real dev
server: what the server stores is ciphertext naming its key id, failure messages included; keys
rotate under a running workflow."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from pydantic import BaseModel
from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from core.keyring import DataKeyring, KeyringError, new_key_entry, parse_key
from core.payload_codec import ENCODING, KEY_ID, EncryptionCodec, PayloadKeyMissing
from core.settings import Settings
from core.temporal import data_converter
from tests.temporal_history import stored_text

CODE = "482916"
TRANSCRIPT = "my card number is four four four"


class Said(BaseModel):
    code: str
    transcript: str


@workflow.defn(sandboxed=False)
class EchoAfterSignalWorkflow:
    def __init__(self) -> None:
        self.heard: list[str] = []

    @workflow.run
    async def run(self, said: Said) -> str:
        await workflow.wait_condition(lambda: bool(self.heard))
        if self.heard[0] == "fail":
            raise ApplicationError(f"caller said {said.transcript}", non_retryable=True)
        return f"{said.code} {said.transcript} {self.heard[0]}"

    @workflow.query
    def heard_count(self) -> int:
        return len(self.heard)

    @workflow.signal
    def hear(self, text: str) -> None:
        self.heard.append(text)


def _settings(*entries: str) -> Settings:
    return Settings(_env_file=None, encryption_keys=",".join(entries))


def _client(env: WorkflowEnvironment, settings: Settings) -> Client:
    return Client(env.client.service_client, namespace=env.client.namespace, data_converter=data_converter(settings))


async def test_payloads_round_trip_name_their_key_and_refuse_tampering() -> None:
    ring = DataKeyring.of([parse_key(new_key_entry("k1"))])
    codec = EncryptionCodec(ring)
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'{"code": "482916"}')
    [sealed] = await codec.encode([plain])
    assert sealed.metadata["encoding"] == ENCODING and sealed.metadata[KEY_ID] == b"k1"
    assert b"482916" not in sealed.SerializeToString()
    assert (await codec.decode([sealed]))[0] == plain
    assert (await codec.encode([plain]))[0].data != sealed.data, "a fresh nonce each time"
    assert (await codec.decode([plain]))[0] == plain, "histories from before the codec still replay"
    with pytest.raises(PayloadKeyMissing, match="not in DEEPCLAW_ENCRYPTION_KEYS"):
        await EncryptionCodec(DataKeyring.of([parse_key(new_key_entry("k2"))])).decode([sealed])
    tampered = Payload(metadata=sealed.metadata, data=sealed.data[:-1] + bytes([sealed.data[-1] ^ 1]))
    with pytest.raises(KeyringError, match="does not open"):
        await codec.decode([tampered])


async def test_the_server_holds_ciphertext_and_keys_rotate_under_a_running_workflow(
        temporal_env: WorkflowEnvironment) -> None:
    old, new = new_key_entry("old"), new_key_entry("new")
    queue = f"codec-{uuid.uuid4().hex[:6]}"
    before = _client(temporal_env, _settings(old))
    async with Worker(before, task_queue=queue, workflows=[EchoAfterSignalWorkflow]):
        handle = await before.start_workflow(EchoAfterSignalWorkflow.run, Said(code=CODE, transcript=TRANSCRIPT),
                                             id=f"codec-{uuid.uuid4()}", task_queue=queue,
                                             execution_timeout=timedelta(minutes=2))
        await handle.query(EchoAfterSignalWorkflow.heard_count)  # its first task ran under the old key
        failing = await before.start_workflow(EchoAfterSignalWorkflow.run, Said(code=CODE, transcript=TRANSCRIPT),
                                              id=f"codec-{uuid.uuid4()}", task_queue=queue,
                                              execution_timeout=timedelta(minutes=2))
        await failing.signal(EchoAfterSignalWorkflow.hear, "fail")
        with pytest.raises(WorkflowFailureError) as failed:
            await before.get_workflow_handle(failing.id).result()
    assert TRANSCRIPT in str(failed.value.cause), "the client decodes the failure message"
    stored = await stored_text(temporal_env.client, failing.id)
    assert TRANSCRIPT not in stored and CODE not in stored, "failure messages are encrypted too"

    # The new key first, the old one still listed: a fresh worker (no cached state: it replays the
    # history written under the old key) finishes the workflow, and its new payloads use the new key.
    after = _client(temporal_env, _settings(new, old))
    await after.get_workflow_handle(handle.id).signal(EchoAfterSignalWorkflow.hear, "signal-7731")
    async with Worker(after, task_queue=queue, workflows=[EchoAfterSignalWorkflow], max_cached_workflows=0):
        assert await after.get_workflow_handle(handle.id).result() == f"{CODE} {TRANSCRIPT} signal-7731"
    stored = await stored_text(temporal_env.client, handle.id)
    for secret in (CODE, TRANSCRIPT, "signal-7731"):
        assert secret not in stored
    key_ids = {p.metadata[KEY_ID] async for p in _payloads(temporal_env.client, handle.id)}
    assert key_ids == {b"old", b"new"}, key_ids

    # Old key dropped too early: reading the history says which key is missing.
    stored_payloads = [p async for p in _payloads(temporal_env.client, handle.id)]
    with pytest.raises(PayloadKeyMissing, match="'old'"):
        await EncryptionCodec(_settings(new).data_keyring).decode(stored_payloads)


async def _payloads(client: Client, workflow_id: str):  # type: ignore[no-untyped-def]
    """Every payload of the workflow's stored history, as stored."""
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        for field in ("workflow_execution_started_event_attributes", "workflow_execution_signaled_event_attributes",
                      "workflow_execution_completed_event_attributes"):
            if event.HasField(field):
                attributes = getattr(event, field)
                source = attributes.result if field.endswith("completed_event_attributes") else attributes.input
                for payload in source.payloads:
                    yield payload
