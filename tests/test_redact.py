"""What never reaches a log line or a span in full (core.redact)."""

from __future__ import annotations

from core.redact import redact


def test_phone_numbers_and_emails_are_masked_and_url_tokens_replaced() -> None:
    assert redact("texting +15551234567 now") == "texting +•••••••••67 now"
    assert redact("caller 15551234567 called") == "caller •••••••••67 called"
    assert redact("GET /phone/ws?number=%2B15551234567&x=1") == "GET /phone/ws?number=%2B•••••••••67&x=1"
    assert redact("mail maria.doe@example.com") == "mail m•••@example.com"
    assert redact("POST /llm/abcdefgh12345678/v1/chat/completions") == "POST /llm/<token>/v1/chat/completions"


def test_digits_inside_an_id_are_not_a_phone_number() -> None:
    """A call's sid (hex) can hold eleven digits in a row: it must stay whole, or the call cannot
    be found by its sid in logs and traces (the trace test failed on such a sid)."""
    sid = "CAddc3da12345678901b772304ce4f5957"
    assert redact(f"call {sid} ended") == f"call {sid} ended"
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    assert redact(trace_id) == trace_id
