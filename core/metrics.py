"""The platform's Prometheus metrics, defined once, and the `/metrics` endpoint each process serves.

The API, the voice bridge and the worker each export what they measure (prometheus-client's
process-wide registry). The worker's `/metrics` adds the Temporal SDK's own metrics and the
workflows' (agent wake duration by from-state, SMS reply latency: `workflow.metric_meter()`, which
the SDK skips on replay), read from the SDK's Prometheus exporter on a loopback port.

Who may scrape: with DEEPCLAW_METRICS_TOKEN set, a bearer of it (Prometheus in the cluster); without,
loopback only. The figures say nothing about any one user, but they are the platform's business.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from core.settings import Settings

log = logging.getLogger(__name__)

# ---- the voice bridge ---------------------------------------------------------------------------

ACTIVE_CALLS = Gauge("deepclaw_active_calls", "Calls the voice bridge is carrying now.")
CALLS = Counter("deepclaw_calls_total", "Calls the voice bridge carried, by how they ended.", ["end"])
AGENT_RECONNECTS = Counter("deepclaw_voice_agent_reconnects_total",
                           "Voice-agent sockets that dropped mid-call, by whether a new one carried the call on.",
                           ["outcome"])
THINK_SECONDS = Histogram(
    "deepclaw_think_seconds", "From a think request reaching the bridge to the first words of its answer "
    "(the agent woken if need be).", ["outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 1.5, 2.5, 5, 10, 30, 60, 120))
# Audio frames: measured in C by the relay (voice/relay.pyx), read at scrape time (FrameLatency).
FRAME_BUCKETS_S = (0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01)

# ---- the API ------------------------------------------------------------------------------------

WEBHOOK_REJECTIONS = Counter("deepclaw_webhook_rejections_total",
                             "Requests refused before any work: bad signature, over a limit, malformed, blocked.",
                             ["reason"])

# ---- the worker ---------------------------------------------------------------------------------

POOL_AVAILABLE = Gauge("deepclaw_number_pool_available", "Numbers in the pool ready to assign, per area code.",
                       ["area_code"])
# Workflows record theirs through the Temporal SDK's meter (core.temporal.METRIC_BUCKETS names them).


class FrameLatency(Collector):
    """The bridge's added latency per audio frame, as one histogram over every call: calls in
    progress (their relays' counters, kept in C) plus the calls that have ended."""

    def __init__(self) -> None:
        self.ended = [0] * (len(FRAME_BUCKETS_S) + 1)
        self.ended_sum_s = 0.0
        self.live: set[object] = set()  # the relays of calls in progress (voice.relay.MediaRelay)

    def call_ended(self, relay: object) -> None:
        self.live.discard(relay)
        counts, total = relay.latency_histogram()  # type: ignore[attr-defined]
        self.ended = [a + b for a, b in zip(self.ended, counts, strict=True)]
        self.ended_sum_s += total

    def collect(self) -> list[HistogramMetricFamily]:
        counts, total = list(self.ended), self.ended_sum_s
        for relay in list(self.live):
            live_counts, live_total = relay.latency_histogram()  # type: ignore[attr-defined]
            counts = [a + b for a, b in zip(counts, live_counts, strict=True)]
            total += live_total
        cumulative, buckets = 0, []
        for bound, count in zip([*map(str, FRAME_BUCKETS_S), "+Inf"], counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        family = HistogramMetricFamily("deepclaw_frame_added_seconds",
                                       "Time an audio frame spends in the bridge, either way.")
        family.add_metric([], buckets, total)
        return [family]


FRAME_LATENCY = FrameLatency()
REGISTRY.register(FRAME_LATENCY)


# ---- /metrics -----------------------------------------------------------------------------------

def may_scrape(request: Request, settings: Settings) -> bool:
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
    if token:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        return hmac.compare_digest(given.encode(), token.encode())
    try:
        return ipaddress.ip_address(request.client.host if request.client else "").is_loopback
    except ValueError:
        return False


def metrics_endpoint(settings: Settings, *, extra_from: str | None = None):  # noqa: ANN201 (a Starlette endpoint)
    """`GET /metrics`: this process's metrics, and `extra_from`'s (the Temporal SDK's exporter)."""

    async def metrics(request: Request) -> Response:
        if not may_scrape(request, settings):
            return PlainTextResponse("metrics are for the platform's monitoring only", status_code=403)
        body = generate_latest(REGISTRY)
        if extra_from:  # a loopback read per scrape (every 15 s or so): no client kept open for it
            try:
                async with httpx.AsyncClient(timeout=2.0) as http:
                    body += (await http.get(extra_from)).content
            except httpx.HTTPError as error:
                log.warning("the Temporal SDK's metrics could not be read: %s", error)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return metrics
