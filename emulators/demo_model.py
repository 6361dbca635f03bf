"""The local demo model: a handful of plain-word requests, answered with real tool calls.

With no provider key, every agent talks to this model (through the real OpenClaw, which sends it
the whole conversation and its tools). It understands only these requests, enough to try every
platform capability from the softphone; anything else gets an honest answer that it is the demo:

| say or text                                  | it does                                               |
|----------------------------------------------|-------------------------------------------------------|
| remember <a fact>                            | acknowledges; the fact stays in the conversation      |
| what is my <thing>? / what did I tell you?   | finds it in the conversation OpenClaw sends, or in    |
|                                              | what the platform recalls of other calls and texts    |
| what did I say?                              | repeats your previous words                           |
| remind me in two minutes to <x> [by call]    | `schedule_reminder` (a text, or a call if you say so) |
| call me back in a minute                     | `schedule_reminder` by call                           |
| call me now                                  | `call_me`                                             |
| text me <words>                              | `send_sms`                                            |
| search the web for <x> / look up <x>         | `web_search`, then reads the top result               |
| what are my reminders?                       | `list_reminders`                                      |
| what's on my calendar tomorrow?              | `calendar_events` for today or tomorrow               |
| add lunch with Bob to my calendar tomorrow   | `create_event` (an hour; "at 3pm", "at noon" or 12:00  |
|   at noon                                    | by default)                                           |
| draft a reply to Bob saying <words>          | `search_mail` for Bob, then `draft_reply` to the      |
|                                              | newest match                                          |
| send it                                      | `send_draft` of the last draft: you confirm by text   |
| (a text with attachments)                    | `web_fetch` of the first, then says what it holds     |
| (the platform: "It is time for a reminder…") | the reminder in a sentence                            |
| (the platform: a call ended unheard…)        | answers the unheard request, for a text               |
| goodbye                                      | says goodbye and ends the call                        |

It answers with OpenAI-style tool calls through OpenClaw's `tool_call` (or the tool itself where
a model is offered it directly), then phrases the tool's result. Deterministic, so tests script it
by what they say.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from core.recall import recalled_user_turns
from core.texts import ATTACHMENTS_OPENING, FOLLOW_UP_OPENING, REMINDER_PROMPT_OPENING
from voice.agent_settings import END_CALL_MARKER  # the platform's speech rules ask for it; echoed only if asked

DEMO_NOTICE = "I'm the local demo model; connect a real model to talk freely."
PLATFORM_TOOL_PREFIX = "deepclaw__"
META_TOOL = "tool_call"  # OpenClaw 2026.9 offers MCP tools through its tool search: tool_call(id, args)
OPENCLAW_TOOLS = ("web_fetch",)  # OpenClaw's own, by their plain names (the platform's have a prefix)

_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
            "eight": 8, "nine": 9, "ten": 10, "fifteen": 15, "twenty": 20, "thirty": 30, "forty": 40,
            "forty-five": 45, "sixty": 60, "half an": 0.5, "a couple of": 2, "a few": 3}
_AMOUNT = r"(\d+(?:\.\d+)?|half an|a couple of|a few|[a-z-]+)"
_WHEN = re.compile(rf"\bin {_AMOUNT} (second|minute|hour)s?\b")
_BY_CALL = re.compile(r"\b(by (phone )?call|call me|by phone|phone me|ring me)\b")
_INTERNAL = "<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>"
_ATTACHMENT = re.compile(re.escape(ATTACHMENTS_OPENING) + r" \d+ attachments?[^\n]*\n- (\S+)")
_ASKING = re.compile(r"what(?:'s| is| was) my (.+)|what did i tell you about (?:my )?(.+)")
_CALENDAR_DAY = re.compile(r"\b(?:what(?:'s| is) on|what do i have on|check) my calendar(?: for)? (today|tomorrow)\b")
_ADD_EVENT = re.compile(r"(?:please )?(?:add|put) (.+?) (?:to|on|in) my calendar (today|tomorrow)(?: at (.+))?$", re.I)
_DRAFT = re.compile(r"(?:please )?draft a reply to (\S+?)(?:'s (?:mail|email|message))?(?:,? (?:saying|that says)|:) (.+)$",
                    re.I)
_SEND_IT = re.compile(r"(?:yes,? )?(?:please )?send (?:it|the (?:draft|reply))\b")
_DRAFT_ID = re.compile(r"\[draft id ([^\]]+)\]")
_MAIL_ID = re.compile(r"\[id ([^\]]+)\]")


@dataclass
class Answer:
    text: str = ""
    tool: str | None = None  # a platform tool's name (schedule_reminder, send_sms, ...)
    args: dict[str, Any] | None = None


def in_minutes(words: str) -> float | None:
    """'in two minutes' -> 2, 'in 30 seconds' -> 0.5, 'in an hour' -> 60; None when no time is said."""
    if not (match := _WHEN.search(words)):
        return None
    amount, unit = match[1], match[2]
    value = float(amount) if re.fullmatch(r"[\d.]+", amount) else _NUMBERS.get(amount)
    if value is None:
        return None
    return value * {"second": 1 / 60, "minute": 1, "hour": 60}[unit]


def _spoken_minutes(minutes: float) -> str:
    if minutes < 1:
        return f"{round(minutes * 60)} seconds"
    if minutes >= 60 and minutes % 60 == 0:
        hours = int(minutes // 60)
        return "an hour" if hours == 1 else f"{hours} hours"
    whole = int(minutes) if minutes == int(minutes) else minutes
    return "a minute" if whole == 1 else f"{whole} minutes"


def _second_person(text: str) -> str:
    """'my code is 4471' -> 'your code is 4471' (what the caller said, said back)."""
    swaps = {"my": "your", "i": "you", "i'm": "you're", "me": "you", "mine": "yours", "am": "are"}
    return " ".join(swaps.get(word.lower(), word) for word in text.split())


def _clean(text: str) -> str:
    return " ".join(text.split()).strip(" .!?")


def answer_words(said: str, earlier: list[str], *, on_a_call: bool) -> Answer:
    """What the demo model answers to the caller's latest words (`earlier`: their previous ones)."""
    words = _clean(said)
    lower = words.lower()
    if not lower:
        return Answer("I'm here. How can I help?")
    if match := _ATTACHMENT.search(said):
        return Answer(tool="web_fetch", args={"url": match[1].rstrip(")")})
    if match := re.match(re.escape(FOLLOW_UP_OPENING) + r" Their last request was: «(.+?)»", words):
        return answer_words(match[1], earlier, on_a_call=False)  # the unheard request, answered for a text
    if match := re.match(re.escape(REMINDER_PROMPT_OPENING) + r" «(.+?)»", words):
        return Answer(f"Hi! Here's your reminder: {match[1].rstrip('.')}.")
    if re.search(r"\b(good ?bye|bye|hang up)\b", lower):
        return Answer("Goodbye!" + (f" {END_CALL_MARKER}" if on_a_call else ""))
    if match := re.match(r"(?:please )?remember(?: that)? (.+)", words, re.I):
        return Answer(f"Got it, I'll remember that {_second_person(match[1])}.")
    if re.search(r"what did i (just )?(say|tell you)\b(?! about)", lower):
        return Answer(f"Earlier you said: {earlier[-1]}" if earlier else "You haven't told me anything yet.")
    if match := _ASKING.match(lower):
        return _recall((match[1] or match[2]).strip(), earlier)
    if re.search(r"\b(my|list|what are my|any) reminders\b", lower):
        return Answer(tool="list_reminders", args={})
    if match := _CALENDAR_DAY.search(lower):
        return Answer(tool="calendar_events", args={"day": match[1]})
    if match := _ADD_EVENT.match(words):
        return Answer(tool="create_event", args={"title": match[1], "start": f"{match[2].lower()} "
                                                 f"{(match[3] or 'noon').lower()}", "minutes": 60})
    if match := _DRAFT.match(words):
        return Answer(tool="search_mail", args={"query": match[1], "count": 1})
    if match := re.match(r"(?:please )?remind me (.+)", words, re.I):
        return _reminder(match[1])
    if re.match(r"(?:please )?call me back\b", lower):
        minutes = in_minutes(lower) or 1.0
        return Answer(tool="schedule_reminder",
                      args={"text": "You asked me to call you back.", "in_minutes": minutes, "channel": "call"})
    if re.match(r"(?:please )?call me(?: now)?$", lower):
        return Answer(tool="call_me", args={"greeting": "Hi, it's me, calling you as you asked.",
                                            "reason": "the user asked to be called"})
    if match := re.match(r"(?:please )?(?:text|message|sms) me(?: that| saying)?:? (.+)", words, re.I):
        return Answer(tool="send_sms", args={"text": match[1]})
    if match := re.match(r"(?:please )?(?:search(?: the web)? for|look up|google) (.+?)(?: for me)?$", words, re.I):
        return Answer(tool="web_search", args={"query": match[1], "count": 3})
    echo = " ".join(said.split())[:200]
    return Answer(f"You said: {echo}{'' if echo[-1] in '.?!' else '.'} {DEMO_NOTICE}")


def _recall(thing: str, earlier: list[str]) -> Answer:
    """The latest earlier turn that mentions `thing` ("remember my locker code is 4471")."""
    keys = [w for w in re.findall(r"[a-z0-9']+", thing.lower()) if w not in ("the", "a", "an")]
    for turn in reversed(earlier):
        lowered = turn.lower()
        if _ASKING.match(lowered) or lowered.rstrip().endswith("?"):
            continue  # an earlier question about it is not the fact
        if keys and all(k in lowered for k in keys):
            fact = re.sub(r"^(?:please )?remember(?: that)?\s+", "", _clean(turn), flags=re.I)
            return Answer(f"You told me {_second_person(fact)}.")
    return Answer(f"You haven't told me your {thing} yet.")


def _reminder(rest: str) -> Answer:
    """'in two minutes to buy milk by call', 'to buy milk in 2 minutes'..."""
    minutes = in_minutes(rest.lower())
    if minutes is None:
        return Answer("When should I remind you? Say, for example, remind me in two minutes to stretch.")
    channel = "call" if _BY_CALL.search(rest.lower()) else "sms"
    what = _WHEN.sub("", rest, count=1)
    what = _BY_CALL.sub("", what)
    what = re.sub(r"^\s*(?:to|that|about)\s+", "", _clean(what), flags=re.I)
    what = _clean(re.sub(r"\s+(?:to|that|about)\s*$", "", what)) or "your reminder"
    return Answer(tool="schedule_reminder", args={"text": what, "in_minutes": minutes, "channel": channel})


# ---- after a tool's result: another tool, or a sentence about it ----------------------------

def after_tool(tool: str, args: dict[str, Any], content: str, said: str) -> Answer:
    """The next step once `tool` answered: a mail search made for "draft a reply to …" goes on to
    draft_reply on the newest match; anything else is phrased."""
    text, failed = tool_result_text(content)
    name = tool.removeprefix(PLATFORM_TOOL_PREFIX)
    if name == "search_mail" and not failed and (asked := _DRAFT.match(_clean(said))):
        if found := _MAIL_ID.search(text):
            return Answer(tool="draft_reply", args={"id": found[1], "body": asked[2].strip()})
        return Answer(f"I found no mail from {asked[1]} to reply to.")
    return Answer(phrase_result(tool, args, content))


def send_it(said: str, messages: list[dict[str, Any]]) -> Answer | None:
    """"send it": send_draft of the newest draft this conversation made; None if not asked."""
    if not _SEND_IT.match(_clean(said).lower()):
        return None
    drafts = [found[1] for m in messages if m.get("role") == "tool" and (found := _DRAFT_ID.search(_content(m)))]
    if not drafts:
        return Answer("There's no draft to send yet. Say, for example, draft a reply to Bob saying see you then.")
    return Answer(tool="send_draft", args={"id": drafts[-1]})


# ---- phrasing a tool's result ---------------------------------------------------------------

def tool_result_text(content: str) -> tuple[str, bool]:
    """The text of an (OpenClaw-wrapped) tool result, and whether it was an error."""
    body = content
    if (start := content.find("\n---\n")) >= 0 and (end := content.find("\n<<<END_EXTERNAL", start)) >= 0:
        body = content[start + 5:end]
    try:
        parsed = json.loads(body)
    except ValueError:
        return body.strip(), False
    result = parsed.get("result", parsed) if isinstance(parsed, dict) else parsed
    if not isinstance(result, dict):
        return str(result), False
    texts = [part.get("text", "") for part in result.get("content", []) if isinstance(part, dict)]
    failed = bool(result.get("isError")) or str(parsed.get("status", "")).lower() == "error"
    text = "\n".join(texts) or str(result.get("error") or parsed.get("error") or "")
    return text.strip(), failed


def phrase_result(tool: str, args: dict[str, Any], content: str) -> str:
    """A spoken sentence about what the tool did (or why it could not)."""
    text, failed = tool_result_text(content)
    name = tool.removeprefix(PLATFORM_TOOL_PREFIX)
    if name == "schedule_reminder":
        if failed or " set:" not in text:
            return f"I couldn't set that reminder: {text}"
        how = "call you" if args.get("channel") == "call" else "text you"
        when = _spoken_minutes(float(args.get("in_minutes") or 0)) if args.get("in_minutes") else "then"
        return f"Okay, I'll {how} in {when}: {args.get('text', '')}."
    if name == "send_sms":
        sent = not failed and text.startswith(("Texted", "Texting"))
        return "Done, I've texted you." if sent else f"I couldn't text you: {text}"
    if name == "call_me":
        return "I'm calling you now." if not failed and text.startswith("Calling") else f"I couldn't call you: {text}"
    if name == "web_search":
        if failed:
            return f"The search didn't work: {text}"
        if text.startswith("No results"):
            return f"I found nothing for {args.get('query', 'that')}."
        lines = [line.strip() for line in text.splitlines()]
        title = re.sub(r"^1\.\s*", "", lines[0]) if lines else ""
        snippet = lines[2] if len(lines) > 2 and not re.match(r"^\d+\.", lines[2]) else ""
        return f"The top result is {title}. {snippet}".strip()
    if name == "web_fetch":
        return _fetched(content)
    if name == "list_reminders":
        if failed:
            return f"I couldn't look: {text}"
        pending = [line for line in text.splitlines() if " — " in line]
        if not pending:
            return "You have no reminders."
        first = pending[0].split(" — ")
        return (f"You have {len(pending)} reminder{'s' if len(pending) > 1 else ''}. "
                f"The next is {first[-1]} at {first[1]}.")
    if name in WORKSPACE_PHRASES:
        return f"{WORKSPACE_PHRASES[name][1]}: {text}" if failed else WORKSPACE_PHRASES[name][0](text, args)
    return f"The {name.replace('_', ' ')} tool said: {text}"


def _events_said(text: str, args: dict[str, Any]) -> str:
    events = [line[2:].split(" [id ")[0] for line in text.splitlines() if line.startswith("- ")]
    day = args.get("day", "then")
    if not events:
        return f"There's nothing on your calendar {day}."
    said = "; ".join(re.sub(r"^\w{3} \d{2} \w{3} ", "", e) for e in events)
    return f"{day.capitalize()} you have {len(events)} event{'s' if len(events) > 1 else ''}: {said}."


def _created_said(text: str, args: dict[str, Any]) -> str:
    line = next((line[2:].split(" [id ")[0] for line in text.splitlines() if line.startswith("- ")), "")
    return f"Done, it's on your calendar: {line}."


def _drafted_said(text: str, args: dict[str, Any]) -> str:
    to = re.search(r": to (.+?), “", text)
    body = str(args.get("body", "")).strip()
    return (f"I drafted a reply{' to ' + to[1] if to else ''}: {body}{'' if body[-1:] in '.?!' else '.'} "
            "Say send it, and I'll ask you to confirm.")


def _confirm_said(text: str, args: dict[str, Any]) -> str:
    if asked := re.search(r"on this call: “(.+)” The platform hears", text):  # the platform hears the answer on the call
        return asked[1]
    reference = re.search(r"YES (\d{4})", text)
    return f"I've texted you to confirm. Reply YES {reference[1] if reference else ''} to that text to send it."


WORKSPACE_PHRASES = {
    "calendar_events": (_events_said, "I couldn't read your calendar"),
    "create_event": (_created_said, "I couldn't add that"),
    "draft_reply": (_drafted_said, "I couldn't draft that"),
    "send_draft": (_confirm_said, "I couldn't send that"),
    "search_mail": (lambda text, args: text.splitlines()[0] if text else "No mail found.", "I couldn't search your mail"),
}


def _fetched(content: str) -> str:
    """What web_fetch got: its JSON's `text`, inside OpenClaw's untrusted-content wrapper."""
    said = tool_result_text(content)[0]
    try:
        result = json.loads(said or content)
    except ValueError:
        result = {}
    if not isinstance(result, dict) or "text" not in result:
        return f"I couldn't open the attachment: {said[:200]}"
    text = str(result["text"])
    if (start := text.find("\n---\n")) >= 0:
        text = text[start + 5:].split("\n<<<END_EXTERNAL", 1)[0]
    if int(result.get("status") or 200) != 200:
        return f"I couldn't open the attachment: it answered {result.get('status')}."
    return f"The attachment says: {_clean(text)[:300]}."


# ---- the conversation OpenClaw sends --------------------------------------------------------

def pending_tool_result(messages: list[dict[str, Any]]) -> tuple[str, dict[str, Any], str] | None:
    """(tool, args, result) when the conversation ends with a tool's result (OpenClaw's own context
    notes after it aside); None when the caller spoke last."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        role = message.get("role")
        if role == "user" and _is_internal(message):
            continue
        if role != "tool":
            return None
        call_id = message.get("tool_call_id")
        for earlier in reversed(messages[:index]):
            for call in earlier.get("tool_calls") or []:
                if call.get("id") == call_id:
                    tool, args = _unwrap(call["function"]["name"], call["function"].get("arguments") or "{}")
                    return tool, args, _content(message)
        return "", {}, _content(message)
    return None


def _unwrap(name: str, arguments: str) -> tuple[str, dict[str, Any]]:
    try:
        args = json.loads(arguments)
    except ValueError:
        args = {}
    if name == META_TOOL and isinstance(args, dict):
        return str(args.get("id", "")), args.get("args") or {}
    return name, args if isinstance(args, dict) else {}


def _content(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content or "")


def _is_internal(message: dict[str, Any]) -> bool:
    return _content(message).lstrip().startswith(_INTERNAL)


def tool_call_for(tool: str, args: dict[str, Any], offered: list[str]) -> tuple[str, dict[str, Any]] | None:
    """How to call platform tool `tool` with the tools this request offers: directly, or through
    OpenClaw's tool_call; None if neither is offered (no platform tools here)."""
    direct = next((name for name in offered if name == tool or name.endswith("__" + tool)), None)
    if direct:
        return direct, args
    if META_TOOL in offered:
        return META_TOOL, {"id": tool if tool in OPENCLAW_TOOLS else PLATFORM_TOOL_PREFIX + tool, "args": args}
    return None


def recalled(messages: list[dict[str, Any]]) -> list[str]:
    """What the user said in their other conversations, from the platform's recall note (core.recall)."""
    return [turn for m in messages if m.get("role") == "system" for turn in recalled_user_turns(_content(m))]


def on_a_call(messages: list[dict[str, Any]]) -> bool:
    """Did the caller's instructions ask for the end-of-call marker (a phone call, not a text)?"""
    return any(END_CALL_MARKER in _content(m) for m in messages if m.get("role") == "system")
