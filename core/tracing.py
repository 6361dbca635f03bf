"""Traces (OpenTelemetry): one trace follows a call or a text from Twilio's webhook to the user's
OpenClaw and back.

The API's and the bridge's HTTP servers are instrumented (FastAPI's and the ASGI instrumentation),
every httpx client is (the calls to OpenClaw, Twilio, the stand-ins), and Temporal carries the
context from a client's start/signal/update into the workflow and its activities (temporalio's
TracingInterceptor, installed by core.temporal.connect). Where no header can carry it:

- Twilio -> bridge: the API puts `traceparent` among the Media Stream's `<Parameter>`s, and the
  bridge's call span continues it (voice.bridge);
- Deepgram -> bridge (the think request): the bridge puts `traceparent` in the think URL's query,
  and QueryTraceparent (a propagator) hands it to the server instrumentation as if it were the header.

Spans go to DEEPCLAW_OTLP_ENDPOINT (OTLP over HTTP) when set; without it they are still made, so
every log line names its trace (core.logs).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import Getter, Setter, TextMapPropagator, default_getter, default_setter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from core.redact import redact
from core.settings import Settings

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
# Health checks and scrapes are not worth a trace each.
UNTRACED_URLS = "healthz,metrics"

_provider: TracerProvider | None = None


def setup_tracing(settings: Settings, service: str) -> TracerProvider:
    """This process's tracer provider (made once: in tests every process shares one interpreter)."""
    global _provider
    if _provider is None:
        _provider = TracerProvider(resource=Resource.create({"service.name": service}))
        _provider.add_span_processor(Redacting())
        if settings.otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            _provider.add_span_processor(BatchSpanProcessor(
                OTLPSpanExporter(endpoint=f"{settings.otlp_endpoint.rstrip('/')}/v1/traces")))
            log.info("traces go to %s", settings.otlp_endpoint)
        trace.set_tracer_provider(_provider)
        propagate.set_global_textmap(CompositePropagator([TraceContextTextMapPropagator(), QueryTraceparent()]))
        HTTPXClientInstrumentor().instrument(tracer_provider=_provider, request_hook=redact_span,
                                             async_request_hook=_redact_span_async)
    return _provider


def tracer() -> trace.Tracer:
    return trace.get_tracer("deepclaw")


def current_traceparent() -> dict[str, str]:
    """The current span's context as W3C headers ({} outside any span)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def traced(url: str) -> str:
    """`url` with the current span's traceparent in its query (a think URL: no header can carry it)."""
    parent = current_traceparent().get(TRACEPARENT)
    return f"{url}{'&' if '?' in url else '?'}{TRACEPARENT}={parent}" if parent else url


def context_from(carrier: Mapping[str, str]) -> Context:
    return propagate.extract(dict(carrier))


def current_trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


class QueryTraceparent(TextMapPropagator):
    """Reads `traceparent` from an ASGI request's query (a think URL the voice agent calls): the
    server instrumentation then continues the call's trace."""

    _w3c = TraceContextTextMapPropagator()

    def extract(self, carrier: Any, context: Context | None = None, getter: Getter[Any] = default_getter) -> Context:
        # The URL's, if it has one, over any header: the bridge made that URL for the call.
        if not isinstance(carrier, dict) or carrier.get("type") != "http":
            return context or Context()
        values = parse_qs(carrier.get("query_string", b"").decode("latin-1")).get(TRACEPARENT)
        return self._w3c.extract({TRACEPARENT: values[0]}, context) if values else (context or Context())

    def inject(self, carrier: Any, context: Context | None = None, setter: Setter[Any] = default_setter) -> None:
        pass  # headers carry it out (the W3C propagator); URLs are made by the bridge itself

    @property
    def fields(self) -> set[str]:
        return set()


def redact_span(span: Span, *_: object) -> None:
    """The span's name and string attributes through core.redact (the platform's URLs carry tokens)."""
    if not span.is_recording():
        return
    for key, value in dict(span.attributes or {}).items():  # type: ignore[attr-defined]
        if isinstance(value, str) and (clean := redact(value)) != value:
            span.set_attribute(key, clean)
    if (name := redact(span.name)) != span.name:  # type: ignore[attr-defined]
        span.update_name(name)


class Redacting(SpanProcessor):
    """Every span is redacted as it starts; the HTTP instrumentations set their attributes again
    after that, so their request hooks redact once more (SERVER_HOOKS, and setup_tracing's httpx)."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        redact_span(span)


async def _redact_span_async(span: Span, *_: object) -> None:
    redact_span(span)


# For the ASGI and FastAPI instrumentations: the server span, redacted once its attributes are set.
SERVER_HOOKS = {"server_request_hook": redact_span}
