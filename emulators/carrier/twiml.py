"""TwiML parsing and Twilio's request signing, as the carrier needs them."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from urllib.parse import urljoin

from twilio.request_validator import RequestValidator


@dataclass
class Verb:
    name: str
    text: str = ""
    attrs: dict[str, str] = field(default_factory=dict)
    children: list[Verb] = field(default_factory=list)


class TwimlError(ValueError):
    pass


def parse(document: str) -> list[Verb]:
    try:
        root = ET.fromstring(document.strip())
    except ET.ParseError as error:
        raise TwimlError(f"TwiML is not well-formed XML: {error}") from None
    if root.tag != "Response":
        raise TwimlError(f"TwiML root must be <Response>, not <{root.tag}>")
    return [_verb(element) for element in root]


def _verb(element: ET.Element) -> Verb:
    return Verb(
        name=element.tag,
        text=(element.text or "").strip(),
        attrs=dict(element.attrib),
        children=[_verb(child) for child in element],
    )


def absolute(base_url: str, url: str) -> str:
    """TwiML URLs may be relative to the document that held them."""
    return urljoin(base_url, url)


def signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    return RequestValidator(auth_token).compute_signature(url, params)
