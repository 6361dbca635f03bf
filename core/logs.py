"""Structured logging: plain text for a terminal, JSON lines by setting.

Every record carries the ids in scope (user, call, workflow) from context variables, inside
Temporal activities the workflow id, and the trace id of the span in scope (OpenTelemetry).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from core.redact import install as install_redaction
from core.redact import redact
from core.tracing import current_trace_id

user_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("user_id", default=None)
call_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("call_id", default=None)
workflow_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("workflow_id", default=None)

CONTEXT_FIELDS = ("user_id", "call_id", "workflow_id", "trace_id")


@contextlib.contextmanager
def log_context(
    *, user_id: str | None = None, call_id: str | None = None, workflow_id: str | None = None
) -> Iterator[None]:
    """Bind ids to every log record emitted inside the block."""
    tokens = []
    for var, value in ((user_id_var, user_id), (call_id_var, call_id), (workflow_id_var, workflow_id)):
        if value is not None:
            tokens.append((var, var.set(value)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.user_id = getattr(record, "user_id", None) or user_id_var.get()
        record.call_id = getattr(record, "call_id", None) or call_id_var.get()
        record.workflow_id = getattr(record, "workflow_id", None) or workflow_id_var.get() or _temporal_workflow_id()
        record.trace_id = getattr(record, "trace_id", None) or current_trace_id()  # the span in scope (core.tracing)
        return True


def _temporal_workflow_id() -> str | None:
    from temporalio import activity

    if activity.in_activity():
        return activity.info().workflow_id
    return None


class _RedactedTracebacks(logging.Formatter):
    """Messages are redacted as their records are made (core.redact.install); tracebacks here."""

    def formatException(self, ei: Any) -> str:  # noqa: N802 (logging's name)
        return redact(super().formatException(ei))


class JsonFormatter(_RedactedTracebacks):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for field in CONTEXT_FIELDS:
            if value := getattr(record, field, None):
                entry[field] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(_RedactedTracebacks):
    def __init__(self, process_name: str) -> None:
        super().__init__("%(asctime)s %(levelname)-5s " + f"[{process_name}] " + "%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = " ".join(f"{f}={v}" for f in CONTEXT_FIELDS if (v := getattr(record, f, None)))
        return f"{line} [{ids}]" if ids else line


def configure_logging(process_name: str, *, fmt: str = "text", level: str = "INFO") -> None:
    install_redaction()
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(process_name))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Access logs are noise next to our own request logging; SQL echo stays off.
    for noisy in ("uvicorn.access", "httpx", "alembic.runtime.plugins", "twilio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
