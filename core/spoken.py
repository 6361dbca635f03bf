"""Understanding what callers say on the setup hotline, as speech-to-text writes it.

Deterministic and cautious: every parser returns None when it is not sure, and the hotline asks
again. It never guesses.
"""

from __future__ import annotations

import re

DIGIT_WORDS = {"zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
               "six": "6", "seven": "7", "eight": "8", "nine": "9"}
# Words speech-to-text writes for a digit said alone ("To zero, zero, nine, zero, seven."): digits
# only in a turn of nothing but digits, so "I want to say 42711" stays a sentence, not a guess.
DIGIT_SOUNDALIKES = {"to": "2", "too": "2", "for": "4"}
_FILLER = re.compile(r"^(?:(?:uh|um|er|so|sure|ok|okay|well|yes|yeah)[,.]?\s+)+")
_EMAIL_LEAD = re.compile(r"^(?:my\s+)?(?:e-?mail(?:\s+address)?\s+is|it'?s|it\s+is|that'?s)\s+")
_EMAIL = re.compile(r"^[a-z0-9](?:[a-z0-9._%+-]*[a-z0-9])?@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9-]+)*\.[a-z]{2,}$")
_EMAIL_WORDS = {"dot": ".", "period": ".", "at": "@", "underscore": "_", "dash": "-", "hyphen": "-", "minus": "-",
                "plus": "+"}
YES = {"yes", "yeah", "yep", "yup", "correct", "right", "sure", "affirmative", "exactly", "ok", "okay"}
NO = {"no", "nope", "nah", "wrong", "incorrect", "negative"}


def _words(said: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", said.lower())


def _digit_tokens(said: str) -> list[str]:
    return re.findall(r"[a-z]+|\d", said.lower())


def parse_digits(said: str, words: dict[str, str] = DIGIT_WORDS) -> str:
    """Every digit said, spoken ("four two seven…", "oh four…") or written ("427-119"), in order."""
    digits = ""
    for token in _digit_tokens(said):
        if token.isdigit():
            digits += token
        elif token in words:
            digits += words[token]
    return digits


def parse_code(said: str, length: int = 6) -> str | None:
    """A verification code of `length` digits, spoken or written."""
    digits = parse_digits(said)
    if len(digits) != length and all(t.isdigit() or t in DIGIT_WORDS or t in DIGIT_SOUNDALIKES
                                      for t in _digit_tokens(said)):
        digits = parse_digits(said, DIGIT_WORDS | DIGIT_SOUNDALIKES)
    return digits if len(digits) == length else None


def parse_email(said: str) -> str | None:
    """An email address said naturally: "jane dot doe at gmail dot com", spelled letters included."""
    text = said.strip().lower().rstrip(".!?")
    text = _EMAIL_LEAD.sub("", _FILLER.sub("", text)).strip()
    if "@" not in text and not re.search(r"\bat\b", text):
        return None
    tokens = [_EMAIL_WORDS.get(token, token) for token in re.split(r"[\s,]+", text) if token]
    address = "".join(tokens)
    return address if _EMAIL.match(address) and address.count("@") == 1 else None


def parse_confirmation(said: str) -> bool | None:
    """Yes (True), no (False), or not understood (None). A "no" anywhere wins: it is safer."""
    words = set(_words(said))
    if words & NO or "not right" in said.lower():
        return False
    if words & YES:
        return True
    return None


def parse_choice(said: str, options: dict[str, set[str]]) -> str | None:
    """The one option whose name or alias was said; None if none or several were."""
    words = set(_words(said))
    matches = {name for name, aliases in options.items() if words & ({name} | aliases)}
    return matches.pop() if len(matches) == 1 else None


PERSONALITIES = {"casual": {"relaxed", "informal", "friendly"}, "formal": {"professional", "polite"}}


def parse_personality(said: str) -> str | None:
    return parse_choice(said, PERSONALITIES) or parse_choice(said, {"casual": {"1"}, "formal": {"2"}})


_NAME_LEAD = re.compile(
    r"^(?:(?:i'?d\s+like\s+(?:to\s+)?|let'?s\s+|please\s+)?(?:call\s+(?:it|him|her|them)|name\s+(?:it|him|her|them)"
    r"|(?:its|his|her|the)\s+name\s+(?:is|should\s+be)|go\s+with|how\s+about|i'?ll\s+call\s+(?:it|him|her))\s+)")
_KEEP_DEFAULT = {"skip", "default", "none", "nothing", "pass", "keep", "no"}
_NOT_NAMES = YES | NO | {"the", "a", "an", "it", "um", "uh", "and", "or", "is"}


def parse_name(said: str) -> str | None:
    """An agent name: "call it Nova", "Max Power", or "" when the caller skips (keep the default).
    One or two plain words only; anything longer or stranger is asked again."""
    text = _FILLER.sub("", said.strip().lower().rstrip(".!?")).strip()
    words = _words(text)
    if words and set(words) <= _KEEP_DEFAULT | {"name", "the", "thanks", "please", "it"} and set(words) & _KEEP_DEFAULT:
        return ""
    words = _words(_NAME_LEAD.sub("", text))
    if not 1 <= len(words) <= 2 or any(not w.isalpha() or len(w) > 20 or w in _NOT_NAMES for w in words):
        return None
    return " ".join(w.capitalize() for w in words)


_NEW_CODE = re.compile(r"\b(?:new|another|fresh|different)\s+(?:code|one)\b|\bresend\b|\bsend\s+(?:it\s+)?again\b")


def wants_skip(said: str) -> bool:
    return bool(re.search(r"\b(skip|no pin|no thanks|not now)\b", said.lower()))


def wants_new_code(said: str) -> bool:
    """The caller asks for a fresh verification code (by voice, or the star key)."""
    return said.strip() == "*" or bool(_NEW_CODE.search(said.lower()))


_ORDINALS = ({"1", "one", "first"}, {"2", "two", "second"}, {"3", "three", "third"}, {"4", "four", "fourth"})


def parse_option(said: str, options: list[str]) -> str | None:
    """One of a short spoken list, by name, by position ("the second one") or by key (2)."""
    text = said.lower().strip(" .!?")
    if text not in ("one", "1"):  # "the second one", "the robot one": that "one" is no choice
        text = re.sub(r"(?<!number )(?<!option )\bone\b", "", text)
    by_position = {name: set(_ORDINALS[i]) if i < len(_ORDINALS) else set() for i, name in enumerate(options)}
    return parse_choice(text, by_position)


_DIFFERENT_EMAIL = re.compile(r"\b(?:different|change|another|new|wrong)\b.*\b(?:e-?mail|address)\b")


def wants_different_email(said: str) -> bool:
    return bool(_DIFFERENT_EMAIL.search(said.lower()))
