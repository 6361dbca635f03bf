"""Connecting to Temporal from settings, and the search attributes operators use to find users."""

from __future__ import annotations

import dataclasses

from temporalio.client import Client, TLSConfig
from temporalio.common import SearchAttributeKey
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from core.payload_codec import EncryptionCodec
from core.settings import Settings

USER_ID = SearchAttributeKey.for_keyword("UserId")
USER_PHONE = SearchAttributeKey.for_keyword("UserPhone")
AGENT_NUMBER = SearchAttributeKey.for_keyword("AgentNumber")
LIFECYCLE_STATE = SearchAttributeKey.for_keyword("LifecycleState")

SEARCH_ATTRIBUTES = (USER_ID, USER_PHONE, AGENT_NUMBER, LIFECYCLE_STATE)

# The workflows' own metrics (recorded with workflow.metric_meter()) and their buckets, in seconds.
WAKE_SECONDS = "deepclaw_agent_wake_seconds"
SMS_REPLY_SECONDS = "deepclaw_sms_reply_seconds"
METRIC_BUCKETS = {
    WAKE_SECONDS: [0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300],
    SMS_REPLY_SECONDS: [0.5, 1, 2, 3, 5, 10, 15, 30, 60, 120, 300],
}


def _tls(settings: Settings) -> TLSConfig | bool:
    if settings.temporal_tls_cert_path and settings.temporal_tls_key_path:
        return TLSConfig(
            client_cert=settings.temporal_tls_cert_path.read_bytes(),
            client_private_key=settings.temporal_tls_key_path.read_bytes(),
        )
    # An API key (Temporal Cloud) implies TLS.
    return settings.temporal_tls or settings.temporal_api_key is not None


def data_converter(settings: Settings) -> DataConverter:
    """Pydantic models in, encrypted payloads out (core/payload_codec.py); failure messages and stack
    traces go into the encrypted part too. Every client and worker of the platform uses this."""
    return dataclasses.replace(pydantic_data_converter, payload_codec=EncryptionCodec(settings.data_keyring),
                               failure_converter_class=DefaultFailureConverterWithEncodedAttributes)


async def connect(settings: Settings, *, runtime: Runtime | None = None) -> Client:
    """A client of the platform: its payloads encrypted, and traced (the context of whatever starts,
    signals or updates a workflow goes with it into the workflow and its activities, on workers made
    from this client too). `runtime`: the worker's, which exports the SDK's metrics."""
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        tls=_tls(settings),
        api_key=api_key,
        data_converter=data_converter(settings),
        interceptors=[TracingInterceptor()],
        runtime=runtime,
    )


def metrics_runtime(bind_address: str) -> Runtime:
    """A Temporal runtime exporting the SDK's metrics, and the workflows' own (workflow.metric_meter()),
    for Prometheus at `bind_address` (core.metrics adds them to the worker's /metrics)."""
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(
        bind_address=bind_address, counters_total_suffix=True, durations_as_seconds=True,
        histogram_bucket_overrides=METRIC_BUCKETS)))
