"""The platform's log lines during a test, as production writes them (INFO, JSON, redacted), to be
scanned for what must never be in them. Stand-ins' loggers (the carrier, the voice agent: Twilio and
Deepgram's side of the line) are left out."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from core.logs import ContextFilter, JsonFormatter
from core.redact import install as install_redaction


class _PlatformOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith("emulators")


@contextmanager
def platform_logs() -> Iterator[list[str]]:
    """Yields a list that holds every log line written inside the block once it ends."""
    install_redaction()
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.addFilter(ContextFilter())
    handler.addFilter(_PlatformOnly())
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    lines: list[str] = []
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        lines.extend(buffer.getvalue().splitlines())


def assert_nothing_secret(lines: list[str], secrets: list[str]) -> None:
    assert lines, "nothing was logged: the capture is not working"
    for line in lines:
        for secret in secrets:
            assert secret not in line, f"{secret!r} is in a log line: {line}"
