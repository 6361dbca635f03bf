"""The demo model's plain-word requests, and how it phrases what a tool did."""

import json

import pytest

from emulators.demo_model import (
    DEMO_NOTICE,
    END_CALL_MARKER,
    META_TOOL,
    after_tool,
    answer_words,
    in_minutes,
    pending_tool_result,
    phrase_result,
    send_it,
    tool_call_for,
)


@pytest.mark.parametrize(("words", "minutes"), [
    ("in two minutes", 2), ("in 5 minutes", 5), ("in a minute", 1), ("in an hour", 60), ("in 30 seconds", 0.5),
    ("in half an hour", 30), ("tomorrow", None), ("in lots of minutes", None)])
def test_times_in_plain_words(words: str, minutes: float | None) -> None:
    assert in_minutes(words) == minutes


@pytest.mark.parametrize(("said", "tool", "args"), [
    ("Remind me in two minutes to buy milk.", "schedule_reminder", {"text": "buy milk", "in_minutes": 2, "channel": "sms"}),
    ("remind me to stretch in 1 minute by call", "schedule_reminder", {"text": "stretch", "in_minutes": 1, "channel": "call"}),
    ("call me back in a minute", "schedule_reminder",
     {"text": "You asked me to call you back.", "in_minutes": 1, "channel": "call"}),
    ("text me pineapple", "send_sms", {"text": "pineapple"}),
    ("Search the web for temporal workflows", "web_search", {"query": "temporal workflows", "count": 3}),
    ("look up the weather in Lisbon for me", "web_search", {"query": "the weather in Lisbon", "count": 3}),
    ("what are my reminders?", "list_reminders", {}),
    ("What's on my calendar tomorrow?", "calendar_events", {"day": "tomorrow"}),
    ("Add lunch with Bob to my calendar tomorrow at noon", "create_event",
     {"title": "lunch with Bob", "start": "tomorrow noon", "minutes": 60}),
    ("put the dentist on my calendar today at 3pm", "create_event",
     {"title": "the dentist", "start": "today 3pm", "minutes": 60}),
    ("Draft a reply to Bob saying see you at noon.", "search_mail", {"query": "Bob", "count": 1}),
    ("draft a reply to bob: yes, noon works", "search_mail", {"query": "bob", "count": 1}),
])
def test_requests_become_tool_calls(said: str, tool: str, args: dict) -> None:
    answer = answer_words(said, [], on_a_call=True)
    assert (answer.tool, answer.args) == (tool, args)


def test_call_me_now_places_a_call() -> None:
    answer = answer_words("call me", [], on_a_call=True)
    assert answer.tool == "call_me" and answer.args and answer.args["greeting"]


def test_memory_comes_from_the_conversation() -> None:
    told = answer_words("remember my locker code is 4471", [], on_a_call=True)
    assert told.text == "Got it, I'll remember that your locker code is 4471."
    earlier = ["remember my locker code is 4471", "what is the weather like"]
    assert answer_words("what is my locker code?", earlier, on_a_call=True).text == "You told me your locker code is 4471."
    assert "haven't told me" in answer_words("what is my shoe size?", earlier, on_a_call=True).text
    assert answer_words("what did I say?", earlier, on_a_call=True).text == "Earlier you said: what is the weather like"


def test_goodbye_ends_a_call_but_not_a_text() -> None:
    assert answer_words("ok goodbye", [], on_a_call=True).text == f"Goodbye! {END_CALL_MARKER}"
    assert answer_words("bye", [], on_a_call=False).text == "Goodbye!"


def test_anything_else_is_honest() -> None:
    assert answer_words("tell me a joke?", [], on_a_call=True).text == f"You said: tell me a joke? {DEMO_NOTICE}"
    assert "When should I remind you" in answer_words("remind me to call mum", [], on_a_call=True).text


def test_tools_are_called_directly_or_through_openclaws_tool_call() -> None:
    assert tool_call_for("send_sms", {"text": "hi"}, ["read", "deepclaw__send_sms"]) == ("deepclaw__send_sms", {"text": "hi"})
    assert tool_call_for("send_sms", {"text": "hi"}, ["read", META_TOOL]) == (
        META_TOOL, {"id": "deepclaw__send_sms", "args": {"text": "hi"}})
    assert tool_call_for("send_sms", {"text": "hi"}, ["read"]) is None


def _wrapped(text: str, *, error: bool = False) -> str:
    """A tool result the way OpenClaw 2026.9 hands it to the model (seen in its requests)."""
    body = {"tool": {"id": "mcp:deepclaw:deepclaw__x", "name": "deepclaw__x", "source": "mcp"},
            "result": {"content": [{"type": "text", "text": text}], **({"isError": True} if error else {})}}
    return ("SECURITY NOTICE: ...\n<<<EXTERNAL_UNTRUSTED_CONTENT id=\"1\">>>\nSource: API\n---\n"
            f"{json.dumps(body, indent=2)}\n<<<END_EXTERNAL_UNTRUSTED_CONTENT id=\"1\">>>")


def test_results_are_phrased_for_the_caller() -> None:
    assert phrase_result("deepclaw__schedule_reminder", {"text": "buy milk", "in_minutes": 2, "channel": "sms"},
                         _wrapped("Reminder 1 set: a text at 2026-12-02T10:00+00:00 ('buy milk').")) == \
        "Okay, I'll text you in 2 minutes: buy milk."
    assert phrase_result("deepclaw__send_sms", {}, _wrapped("Texted the user (SM1).")) == "Done, I've texted you."
    refused = phrase_result("deepclaw__send_sms", {}, _wrapped("Text not sent: 3 texts in a burst", error=True))
    assert refused == "I couldn't text you: Text not sent: 3 texts in a burst"
    found = phrase_result("deepclaw__web_search", {"query": "x"}, _wrapped(
        "1. Temporal — durable execution\n   https://temporal.io/\n   Workflows that survive crashes."))
    assert found == "The top result is Temporal — durable execution. Workflows that survive crashes."
    assert phrase_result("deepclaw__list_reminders", {}, _wrapped("No reminders are scheduled.")) == "You have no reminders."


def test_an_attachment_is_fetched_and_read_out() -> None:
    from core.texts import with_attachments

    said = with_attachments("what does this say?", ["http://127.0.0.1:8000/media/k1.abc", "http://x/media/k1.def"])
    answer = answer_words(said, [], on_a_call=False)
    assert (answer.tool, answer.args) == ("web_fetch", {"url": "http://127.0.0.1:8000/media/k1.abc"})
    assert tool_call_for("web_fetch", answer.args, ["read", META_TOOL]) == (
        META_TOOL, {"id": "web_fetch", "args": answer.args}), "OpenClaw's own tool, by its plain name"
    fetched = {"url": "http://127.0.0.1:8000/media/k1.abc", "status": 200, "contentType": "text/plain",
               "text": "SECURITY NOTICE: ...\n<<<EXTERNAL_UNTRUSTED_CONTENT id=\"9\">>>\nSource: Web Fetch\n---\n"
                       "locker 4471\n<<<END_EXTERNAL_UNTRUSTED_CONTENT id=\"9\">>>"}
    assert phrase_result("web_fetch", answer.args, json.dumps(fetched, indent=2)) == "The attachment says: locker 4471."
    assert phrase_result("web_fetch", answer.args, json.dumps({**fetched, "status": 404})).startswith(
        "I couldn't open the attachment")
    assert phrase_result("web_fetch", answer.args, "fetch failed: blocked").startswith("I couldn't open the attachment")


def test_a_tool_result_is_found_behind_openclaws_context_notes() -> None:
    call = {"id": "c1", "type": "function", "function": {
        "name": META_TOOL, "arguments": json.dumps({"id": "deepclaw__send_sms", "args": {"text": "hi"}})}}
    messages = [{"role": "user", "content": "text me hi"}, {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": _wrapped("Texted the user (SM1).")},
                {"role": "user", "content": [{"type": "text", "text": "<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>\nnotes"}]}]
    assert pending_tool_result(messages) == ("deepclaw__send_sms", {"text": "hi"}, _wrapped("Texted the user (SM1)."))
    assert pending_tool_result(messages[:1]) is None


def test_a_reply_is_drafted_to_the_mail_found_and_sent_only_when_asked() -> None:
    found = ("Google mail matching 'Bob', newest first:\n- Sun 06 Dec 03:00 from Bob Lee <bob@example.com>: "
             "Lunch on Friday? — Are we still on [id m123]")
    said = "draft a reply to Bob saying see you at noon"
    step = after_tool("deepclaw__search_mail", {"query": "Bob"}, found, said=said)
    assert (step.tool, step.args) == ("draft_reply", {"id": "m123", "body": "see you at noon"})
    nothing = after_tool("deepclaw__search_mail", {"query": "Bob"}, "No mail in Google matches 'Bob'.", said=said)
    assert nothing.tool is None and "no mail from Bob" in nothing.text
    drafted = "Draft saved in Google (not sent) [draft id r9]: to Bob Lee <bob@example.com>, “Re: Lunch on Friday?”."
    assert "Say send it" in after_tool("deepclaw__draft_reply", {"body": "see you"}, drafted, said=said).text
    conversation = [{"role": "tool", "content": drafted}]
    assert send_it("Send it.", conversation) is not None and send_it("send it", conversation).args == {"id": "r9"}
    assert send_it("send it", []).tool is None  # nothing drafted yet: said so
    assert send_it("what did I send", conversation) is None


def test_calendar_results_are_phrased_for_the_caller() -> None:
    events = ("Google calendar, Mon 07 Dec 00:00 to Tue 08 Dec 00:00 (your user's time):\n"
              "- Mon 07 Dec 12:00–13:00 Lunch with Bob (at Cafe Rosa) [id e1]")
    assert phrase_result("deepclaw__calendar_events", {"day": "tomorrow"}, events) == (
        "Tomorrow you have 1 event: 12:00–13:00 Lunch with Bob (at Cafe Rosa).")
    empty = "Nothing on the Google calendar from Mon 07 Dec 00:00 to Tue 08 Dec 00:00."
    assert phrase_result("deepclaw__calendar_events", {"day": "today"}, empty) == "There's nothing on your calendar today."
    asked = "Not sent yet: your user must confirm. They have been texted: “… Reply YES 4821 to send it, or NO 4821.”"
    assert "Reply YES 4821" in phrase_result("deepclaw__send_draft", {"id": "r9"}, asked)
