"""Rules for text messages that the API, the workflows and the carrier stand-in share: Twilio's
opt-out words, and how a long answer is cut into texts."""

from __future__ import annotations

import re
from enum import StrEnum

MAX_TEXT_CHARS = 1600  # Twilio's limit for one message body
MAX_PARTS = 3  # an answer is at most this many texts
CONTINUED = "…"


class Keyword(StrEnum):
    """Twilio's default opt-out management: a text that is only one of these words."""

    STOP = "stop"
    START = "start"
    HELP = "help"


KEYWORDS = {
    Keyword.STOP: ("stop", "stopall", "unsubscribe", "cancel", "end", "quit", "revoke", "optout"),
    Keyword.START: ("start", "yes", "unstop"),
    Keyword.HELP: ("help", "info"),
}


def keyword(body: str) -> Keyword | None:
    # Spaces and punctuation aside, the whole body is the word: "Stop!" is one, "yes 4821" (the
    # answer to a confirmation text) and "cancel 4821" are not.
    word = re.sub(r"[^a-z0-9]", "", body.strip().lower()) if len(body.strip()) <= 16 else ""
    return next((k for k, words in KEYWORDS.items() if word in words), None)


def split_reply(text: str, *, limit: int = MAX_TEXT_CHARS, max_parts: int = MAX_PARTS) -> list[str]:
    """`text` as at most `max_parts` texts of at most `limit` characters, each cut at a sentence end
    where there is one (else at a space); what does not fit is cut off with an ellipsis."""
    rest = " ".join(text.split())
    parts: list[str] = []
    while rest and len(parts) < max_parts:
        if len(rest) <= limit:
            parts.append(rest)
            rest = ""
            break
        window = rest[:limit]
        cut = max(window.rfind(". "), window.rfind("! "), window.rfind("? "))
        cut = cut + 1 if cut > limit // 3 else window.rfind(" ")
        if cut <= 0:
            cut = limit
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest and parts:  # more than fits in max_parts texts
        last = parts[-1]
        parts[-1] = (last if len(last) < limit else last[: limit - len(CONTINUED)].rstrip()) + CONTINUED
    return parts


ATTACHMENTS_OPENING = "(The text came with"


def with_attachments(text: str, links: list[str]) -> str:
    """A text as the agent reads it; an MMS's pictures and files as links it can fetch
    (emulators/demo_model.py knows the wording)."""
    if not links:
        return text
    listed = "\n".join(f"- {url}" for url in links)
    plural = "s" if len(links) > 1 else ""
    return f"{text}\n\n{ATTACHMENTS_OPENING} {len(links)} attachment{plural}, links you can fetch:\n{listed})".strip()


REMINDER_PROMPT_OPENING = "It is time for a reminder your user asked you for:"


def reminder_prompt(text: str, *, by_call: bool) -> str:
    """What the platform asks the agent when a reminder is due (emulators/demo_model.py knows it)."""
    how = ("the first thing you say when they pick up your call" if by_call
           else "the text message you send them")
    return (f"{REMINDER_PROMPT_OPENING} «{text}». Write {how} for it: one or two short, friendly sentences in "
            "your own voice, plain text, nothing else.")


def plain_reminder(text: str, *, agent_name: str, by_call: bool) -> str:
    """The reminder when the agent cannot phrase it in time."""
    return f"Hi, it's {agent_name} with your reminder: {text}" if by_call else f"Reminder: {text}"


FOLLOW_UP_OPENING = "Your user did not hear your answer on their call."
FOLLOW_UP_DONE = "DONE"


def follow_up_prompt(question: str) -> str:
    """What the platform asks the agent when a call ended before its answer was heard."""
    return (f"{FOLLOW_UP_OPENING} Their last request was: «{question}». Finish it now and write the result as "
            "a text message to them: short, plain text, nothing else. If they asked you to call them back with it, "
            f"call them with call_me instead and answer only {FOLLOW_UP_DONE}.")
