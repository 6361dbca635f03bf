"""What never reaches a log line in full: phone numbers and email addresses are masked, bearer
tokens and the tokens in the platform's URLs (think, hotline, message and media links) are replaced.

Installed as the log record factory (`install`), so every handler sees the masked message, ours
and any other (pytest's capture included). This is the safety net; the code also avoids logging
codes, tokens and what people say in the first place (callers' words only at DEBUG, locally).
"""

from __future__ import annotations

import logging
import re

# A bare number stands alone: digits inside an id (a Twilio sid, a trace id) are not a phone number,
# and masking them made a call's sid unsearchable in logs and traces.
# "+" may come URL-encoded (%2B, in a logged request line).
_PHONE = re.compile(r"(?P<sign>\+|%2[Bb])(?P<digits>\d{7,15})\b|(?<![\w.])(?P<bare>\d{11,15})(?![\w.])")
_EMAIL = re.compile(r"\b([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)\b")
_BEARER = re.compile(r"(?i)\b(bearer|token)(\s+|=)[A-Za-z0-9._~+/=-]{8,}")
# The platform's routes whose first path segment after them is a token (think, hotline, message, media).
TOKEN_ROUTES = ("hotline", "llm", "message", "media")
_PATH_TOKEN = re.compile(rf"/({'|'.join(TOKEN_ROUTES)})/[A-Za-z0-9._~%=-]{{8,}}")

MASK = "•"


def mask_phone(number: str) -> str:
    """+15551234567 -> +•••••••••67: enough to tell numbers apart in a log, not to call one."""
    digits = number.lstrip("+")
    return ("+" if number.startswith("+") else "") + MASK * max(len(digits) - 2, 0) + digits[-2:]


def mask_email(match: re.Match[str]) -> str:
    return f"{match.group(1)}{MASK * 3}@{match.group(2)}"


def redact(text: str) -> str:
    text = _PATH_TOKEN.sub(lambda m: f"/{m.group(1)}/<token>", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}<redacted>", text)
    text = _EMAIL.sub(mask_email, text)
    return _PHONE.sub(lambda m: (m["sign"] or "") + mask_phone(m["digits"] or m["bare"]), text)


_installed = False


def install() -> None:
    """Every log record's message is redacted when it is made (only records a logger emits are made)."""
    global _installed
    if _installed:
        return
    make = logging.getLogRecordFactory()

    def redacted_record(*args: object, **kwargs: object) -> logging.LogRecord:
        record = make(*args, **kwargs)
        if isinstance(record.args, tuple) and record.name.startswith("uvicorn."):
            # uvicorn's formatters read the arguments themselves (client, method, path, ...).
            record.args = tuple(a if isinstance(a, int | float) else redact(str(a)) for a in record.args)
            return record
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: let logging report it as it would
            return record
        record.msg, record.args = redact(message), None
        return record

    logging.setLogRecordFactory(redacted_record)
    _installed = True
