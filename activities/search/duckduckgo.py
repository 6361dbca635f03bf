"""Keyless web search through DuckDuckGo's HTML endpoint (no account, no API key).

The same code runs against the local stand-in (emulators/search.py), which serves pages of the
same shape on loopback: only the URL changes, as with the carrier and the twilio client.
"""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import parse_qs, urljoin, urlparse

import httpx

from core.ports import MAX_SEARCH_RESULTS, SearchResult, SearchUnavailable

USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) DeepClaw/1 (+keyless web search for personal agents)"
VOID = {"br", "img", "wbr", "hr", "input", "meta", "link", "source"}  # no end tag to wait for


class DuckDuckGoSearch:
    def __init__(self, url: str = "https://html.duckduckgo.com/html/", *, timeout_s: float = 10.0,
                 region: str = "us-en") -> None:
        self.url = url
        self.region = region
        self._http = httpx.AsyncClient(timeout=timeout_s, headers={"User-Agent": USER_AGENT}, follow_redirects=True)

    async def close(self) -> None:
        await self._http.aclose()

    async def search(self, query: str, *, count: int = 5) -> list[SearchResult]:
        try:
            response = await self._http.post(self.url, data={"q": query, "kl": self.region})
        except httpx.HTTPError as error:
            raise SearchUnavailable(f"search provider unreachable: {error}") from error
        if response.status_code != 200:
            raise SearchUnavailable(f"search provider answered HTTP {response.status_code}")
        page = ResultPage(self.url)
        page.feed(response.text)
        page.close()
        if not page.results and page.challenged:
            raise SearchUnavailable("search provider asked for a bot check; try again later")
        return page.results[: max(1, min(count, MAX_SEARCH_RESULTS))]


def _target(href: str, base: str) -> str:
    """Result links go through DuckDuckGo's redirector (`/l/?uddg=<url>`): the real URL is in uddg."""
    absolute = urljoin(base, href)
    parsed = urlparse(absolute)
    if parsed.path.startswith("/l/") and (uddg := parse_qs(parsed.query).get("uddg")):
        return uddg[0]
    return absolute


class ResultPage(HTMLParser):
    """Collects organic results: `a.result__a` (title, link) then `.result__snippet`; ads are skipped."""

    def __init__(self, base_url: str) -> None:
        super().__init__(convert_charrefs=True)
        self.base_url = base_url
        self.results: list[SearchResult] = []
        self.challenged = False
        self._field: str | None = None  # "title" or "snippet" while inside one
        self._depth = 0
        self._text: list[str] = []
        self._href = ""
        self._in_ad = 0  # nesting depth inside an ad block, 0 outside
        self._div_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = set((dict(attrs).get("class") or "").split())
        if tag == "div":
            self._div_depth += 1
            if "result--ad" in classes and not self._in_ad:
                self._in_ad = self._div_depth
        if classes & {"challenge-form", "anomaly-modal"}:
            self.challenged = True
        if self._in_ad or tag in VOID:
            if self._field and tag == "br":
                self._text.append(" ")
            return
        if self._field:
            self._depth += 1
            return
        if tag == "a" and "result__a" in classes:
            self._field, self._depth, self._text = "title", 1, []
            self._href = dict(attrs).get("href") or ""
        elif "result__snippet" in classes and self.results:
            self._field, self._depth, self._text = "snippet", 1, []

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if tag == "div":
            if self._in_ad == self._div_depth:
                self._in_ad = 0
            self._div_depth -= 1
        if not self._field:
            return
        self._depth -= 1
        if self._depth > 0:
            return
        text = " ".join("".join(self._text).split())
        if self._field == "title" and text and self._href:
            self.results.append(SearchResult(title=text, url=_target(self._href, self.base_url)))
        elif self._field == "snippet" and not self.results[-1].snippet:
            self.results[-1].snippet = text
        self._field = None

    def handle_data(self, data: str) -> None:
        if self._field:
            self._text.append(data)
