"""A keyless web search stand-in: pages shaped like DuckDuckGo's HTML endpoint, from a small index.

The platform's search adapter (activities/search/duckduckgo.py) is pointed here locally, so the code
that parses DuckDuckGo in production is the code the tests run. Results link through a `/l/?uddg=`
redirector and an ad comes first, as on the real page. Tests add pages with `POST /control/pages`
and read what was asked with `GET /control/queries`.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

WORD = re.compile(r"[a-z0-9]+")

SEED_PAGES = [
    ("OpenClaw — personal AI assistant gateway", "https://docs.openclaw.ai/",
     "OpenClaw runs your own AI agent with memory, tools, web search and code execution."),
    ("Temporal — durable execution", "https://temporal.io/",
     "Temporal keeps long-running workflows going through crashes, restarts and timeouts."),
    ("Twilio Media Streams", "https://www.twilio.com/docs/voice/media-streams",
     "Stream the raw audio of a live phone call over a WebSocket, 20 ms mu-law frames."),
    ("Deepgram Voice Agent API", "https://developers.deepgram.com/docs/voice-agent",
     "Build voice agents: speech recognition, an LLM step and text to speech over one WebSocket."),
    ("PostgreSQL documentation", "https://www.postgresql.org/docs/",
     "The world's most advanced open source relational database."),
]


@dataclass
class SearchIndex:
    pages: list[tuple[str, str, str]] = field(default_factory=lambda: list(SEED_PAGES))
    queries: list[str] = field(default_factory=list)

    def find(self, query: str, limit: int = 10) -> list[tuple[str, str, str]]:
        terms = set(WORD.findall(query.lower()))
        scored = []
        for position, page in enumerate(self.pages):
            words = set(WORD.findall(f"{page[0]} {page[2]}".lower()))
            if hits := len(terms & words):
                scored.append((-hits, position, page))
        return [page for *_, page in sorted(scored)[:limit]]


def _result(title: str, url: str, snippet: str, *, ad: bool = False) -> str:
    kind = "result--ad" if ad else "web-result"
    link = f"//duckduckgo.com/l/?uddg={quote(url, safe='')}&amp;rut=0"
    return (f'<div class="result results_links results_links_deep {kind}"><div class="links_main links_deep result__body">'
            f'<h2 class="result__title"><a rel="nofollow" class="result__a" href="{link}">{html.escape(title)}</a></h2>'
            f'<a class="result__url" href="{link}">{html.escape(url)}</a>'
            f'<a class="result__snippet" href="{link}">{_bold(snippet)}</a></div></div>')


def _bold(snippet: str) -> str:
    return html.escape(snippet).replace("search", "<b>search</b>")


def page_for(query: str, found: list[tuple[str, str, str]]) -> str:
    body = [_result("Sponsored: try our search ads", "https://ads.example/", "An advertisement.", ad=True)]
    body += [_result(*page) for page in found] or ['<div class="no-results">No results.</div>']
    return (f'<!DOCTYPE html><html><head><title>{html.escape(query)} at DuckDuckGo</title></head>'
            f'<body><div id="links" class="results">{"".join(body)}</div></body></html>')


def create_app(index: SearchIndex | None = None) -> Starlette:
    index = index or SearchIndex()

    async def search(request: Request) -> Response:
        form = await request.form() if request.method == "POST" else request.query_params
        query = str(form.get("q") or "").strip()
        if not query:
            return HTMLResponse("<html><body>Enter a search.</body></html>")
        index.queries.append(query)
        return HTMLResponse(page_for(query, index.find(query)))

    async def add_pages(request: Request) -> Response:
        pages = await request.json()
        if not isinstance(pages, list) or not all(isinstance(p, dict) and {"title", "url"} <= p.keys() for p in pages):
            return JSONResponse({"error": "expected a list of {title, url, snippet}"}, status_code=400)
        index.pages[:0] = [(str(p["title"]), str(p["url"]), str(p.get("snippet", ""))) for p in pages]
        return JSONResponse({"pages": len(index.pages)})

    async def queries(request: Request) -> Response:
        return JSONResponse(index.queries)

    return Starlette(routes=[
        Route("/html/", search, methods=["GET", "POST"]),
        Route("/control/pages", add_pages, methods=["POST"]),
        Route("/control/queries", queries),
    ])
