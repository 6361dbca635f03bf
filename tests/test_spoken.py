"""Every case in ../shared/testdata/spoken-inputs.json, read from the file."""

import json
import os
from pathlib import Path

import pytest

from core.spoken import parse_code, parse_confirmation, parse_email, parse_personality

# The shared test data lives beside the repository (../shared), in CI as in development.
SHARED = Path(os.environ.get("DEEPCLAW_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
CASES = json.loads((SHARED / "testdata" / "spoken-inputs.json").read_text())
PARSERS = {"emails": parse_email, "codes": parse_code, "confirmations": parse_confirmation,
           "personality": parse_personality}


@pytest.mark.parametrize(("kind", "said", "expect"), [
    (kind, case["said"], case["expect"]) for kind in PARSERS for case in CASES[kind]
])
def test_shared_spoken_inputs(kind: str, said: str, expect: object) -> None:
    assert PARSERS[kind](said) == expect


def test_every_kind_in_the_file_is_covered() -> None:
    assert set(CASES) - {"about"} <= set(PARSERS), "a new kind of input in the shared test data needs a parser"


@pytest.mark.parametrize(("parser", "said", "expect"), [
    (parse_code, "four two seven one one nine nine", None),  # seven digits: ask again
    (parse_code, "my code is 4 2 7, 1 1 9", "427119"),
    (parse_code, "To zero, zero, nine, zero, seven.", "200907"),  # "two", as speech-to-text wrote it
    (parse_code, "I want to say 4 2 7 1 1 9", "427119"),  # "to" is a word where the digits make a code
    (parse_code, "I want to say 4 2 7 1 1", None),
    (parse_email, "bob at at gmail dot com", None),
    (parse_email, "dot bob at gmail dot com", None),
    (parse_confirmation, "yes, no, wait", False),
    (parse_personality, "casual or formal, whatever", None),
])
def test_uncertain_input_is_never_guessed(parser: object, said: str, expect: object) -> None:
    assert parser(said) == expect  # type: ignore[operator]
