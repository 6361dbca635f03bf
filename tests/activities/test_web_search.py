"""Keyless web search: the DuckDuckGo adapter against the stand-in (the same page shape), a page shaped
like DuckDuckGo's own, and every way the provider can fail."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from activities.search.duckduckgo import DuckDuckGoSearch, ResultPage
from core.ports import SearchResult, SearchUnavailable
from core.process import free_port
from core.serve import serving
from emulators import search

# Trimmed from the shape of html.duckduckgo.com's answer: an ad first, then organic results whose
# links go through the /l/?uddg= redirector, snippets with <b> highlights, extras between.
DUCKDUCKGO_PAGE = """<!DOCTYPE html><html><body><div class="serp__results"><div id="links" class="results">
<div class="result results_links results_links_deep result--ad  highlight_d result--ad--small">
  <div class="links_main links_deep result__body"><h2 class="result__title">
  <a rel="nofollow" class="result__a" href="https://duckduckgo.com/y.js?ad_domain=ads.example">Buy now</a></h2>
  <a class="result__snippet" href="https://duckduckgo.com/y.js?ad_domain=ads.example">An ad.</a></div></div>
<div class="result results_links results_links_deep web-result ">
  <div class="links_main links_deep result__body">
    <h2 class="result__title"><a rel="nofollow" class="result__a"
       href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fen.wikipedia.org%2Fwiki%2FTemporal_(software)&amp;rut=abc123">Temporal
       (software) - <b>Wikipedia</b></a></h2>
    <div class="result__extras"><div class="result__extras__url"><span class="result__icon">
      <img class="result__icon__img" width="16" height="16" alt="" src="//external-content.duckduckgo.com/ip3/en.wikipedia.org.ico" name="i15">
      </span><a class="result__url" href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fen.wikipedia.org%2F">en.wikipedia.org</a>
    </div></div>
    <a class="result__snippet" href="//duckduckgo.com/l/?uddg=x">Temporal is a <b>durable execution</b> platform &amp; more.</a>
    <div class="clear"></div></div></div>
<div class="result results_links results_links_deep web-result ">
  <div class="links_main links_deep result__body"><h2 class="result__title">
  <a rel="nofollow" class="result__a" href="https://temporal.io/">Temporal</a></h2>
  <a class="result__snippet">Durable execution.<br>Open source.</a></div></div>
</div></div></body></html>"""


def test_a_duckduckgo_page_gives_its_organic_results() -> None:
    page = ResultPage("https://html.duckduckgo.com/html/")
    page.feed(DUCKDUCKGO_PAGE)
    assert page.results == [
        SearchResult(title="Temporal (software) - Wikipedia", url="https://en.wikipedia.org/wiki/Temporal_(software)",
                     snippet="Temporal is a durable execution platform & more."),
        SearchResult(title="Temporal", url="https://temporal.io/", snippet="Durable execution. Open source."),
    ]
    assert not page.challenged


@pytest.fixture
async def provider() -> AsyncIterator[tuple[str, search.SearchIndex]]:
    index = search.SearchIndex()
    port = free_port()
    async with serving(search.create_app(index), "127.0.0.1", port):
        yield f"http://127.0.0.1:{port}/html/", index


async def test_the_adapter_searches_the_stand_in(provider: tuple[str, search.SearchIndex]) -> None:
    url, index = provider
    async with httpx.AsyncClient() as http:
        added = await http.post(url.replace("/html/", "/control/pages"), json=[
            {"title": "Locker 4471 opening hours", "url": "https://gym.example/lockers?a=1&b=2",
             "snippet": "Lockers open 6am to 11pm"}])
        assert added.status_code == 200
        assert (await http.post(url.replace("/html/", "/control/pages"), json={"title": "x"})).status_code == 400
    engine = DuckDuckGoSearch(url)
    try:
        results = await engine.search("locker opening hours", count=3)
        assert results[0] == SearchResult(title="Locker 4471 opening hours", url="https://gym.example/lockers?a=1&b=2",
                                          snippet="Lockers open 6am to 11pm")
        assert "ads.example" not in str(results)
        assert len(await engine.search("temporal durable execution postgresql", count=1)) == 1
        assert await engine.search("zzzz nothing matches") == []
        assert index.queries == ["locker opening hours", "temporal durable execution postgresql", "zzzz nothing matches"]
    finally:
        await engine.close()


async def _serving_page(status: int, body: str) -> tuple[str, object]:
    async def page(request: object) -> HTMLResponse:
        return HTMLResponse(body, status_code=status)

    port = free_port()
    return f"http://127.0.0.1:{port}/html/", serving(Starlette(routes=[Route("/html/", page, methods=["POST"])]),
                                                     "127.0.0.1", port)


@pytest.mark.parametrize(("status", "body", "reason"), [
    (200, '<html><body><div class="anomaly-modal"><form id="challenge-form" class="challenge-form"></form></div></body></html>',
     "bot check"),
    (503, "busy", "HTTP 503"),
])
async def test_a_refusing_provider_is_reported_not_hidden(status: int, body: str, reason: str) -> None:
    url, server = await _serving_page(status, body)
    async with server:  # type: ignore[attr-defined]
        engine = DuckDuckGoSearch(url)
        try:
            with pytest.raises(SearchUnavailable, match=reason):
                await engine.search("anything")
        finally:
            await engine.close()


async def test_an_unreachable_provider_is_reported() -> None:
    engine = DuckDuckGoSearch(f"http://127.0.0.1:{free_port()}/html/", timeout_s=2)
    try:
        with pytest.raises(SearchUnavailable, match="unreachable"):
            await engine.search("anything")
    finally:
        await engine.close()
