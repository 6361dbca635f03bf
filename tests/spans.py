"""Spans the platform's processes make in a test (they share this interpreter and its tracer provider)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from core.settings import Settings
from core.tracing import setup_tracing


class RecordedSpans(InMemorySpanExporter):
    """Keeps finished spans only while a test records (the processor stays on the provider for good)."""

    def __init__(self) -> None:
        super().__init__()
        self.recording = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return super().export(spans) if self.recording else SpanExportResult.SUCCESS

    def start(self) -> None:
        self.clear()
        self.recording = True

    def stop(self) -> None:
        self.recording = False
        self.clear()

    async def wait_for(self, found: Callable[[ReadableSpan], bool], timeout: float = 30) -> ReadableSpan:
        for _ in range(int(timeout * 10)):
            if match := next((s for s in self.get_finished_spans() if found(s)), None):
                return match
            await asyncio.sleep(0.1)
        names = sorted({s.name for s in self.get_finished_spans()})
        raise AssertionError(f"no such span within {timeout:.0f}s; spans: {names}")


_recorder: RecordedSpans | None = None


def recorder() -> RecordedSpans:
    global _recorder
    if _recorder is None:
        _recorder = RecordedSpans()
        setup_tracing(Settings(_env_file=None), "deepclaw-tests").add_span_processor(SimpleSpanProcessor(_recorder))
    return _recorder


def text_of(span: ReadableSpan) -> str:
    """The span's name and attribute values, for finding what it was about."""
    return " ".join([span.name, *(str(v) for v in (span.attributes or {}).values())])
