"""Request ids and Prometheus metrics for the web process."""

from __future__ import annotations

import re
import time
from random import getrandbits
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ticker.http.keys import REQUEST_ID, Handler

_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
REQUEST_ID_HEADER = "X-Request-ID"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpMetrics:
    """Every metric the web process exports, on its own registry (one per app, so tests can build many)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter("ticker_http_requests_total", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=registry)
        self.latency = Histogram("ticker_http_request_seconds", "HTTP request latency", ["method", "route"],
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30),
                                 registry=registry)
        self.inflight = Gauge("ticker_http_inflight", "requests being handled", registry=registry)
        self.handling = 0  # what `inflight` reports, read at scrape time: a plain int costs no lock per request
        self.inflight.set_function(lambda: self.handling)
        self.rate_limited = Counter("ticker_http_rate_limited_total", "requests refused by the rate limit",
                                    registry=registry)
        self.rate_limit_skipped = Counter("ticker_http_rate_limit_skipped_total",
                                          "requests let through unmetered because Redis was unavailable",
                                          registry=registry)
        self.dependency_up = Gauge("ticker_http_dependency_up", "1 while this replica reaches the dependency",
                                   ["dependency"], registry=registry)
        self.enqueued = Counter("ticker_http_jobs_enqueued_total", "jobs enqueued (new, not duplicates)",
                                ["job"], registry=registry)
        self.ws_clients = Gauge("ticker_ws_clients", "connected WebSocket clients", registry=registry)
        self.ws_sent = Counter("ticker_ws_messages_sent_total", "messages sent to WebSocket clients",
                               registry=registry)
        self.ws_ticks_sent = Counter("ticker_ws_ticks_sent_total", "ticks delivered to WebSocket clients",
                                     registry=registry)
        self.ws_dropped = Counter("ticker_ws_ticks_dropped_total",
                                  "ticks dropped because a client's queue was full", registry=registry)
        self.ws_refused = Counter("ticker_ws_refused_total", "WebSocket upgrades refused", ["reason"],
                                  registry=registry)
        self.ws_feed_errors = Counter("ticker_ws_feed_errors_total",
                                      "tick feed failures (Redis pub/sub lost, bad payloads)", ["kind"],
                                      registry=registry)
        self._enqueued: dict[str, Any] = {}  # job name -> its `enqueued` child; job names are few

    def count_enqueued(self, job_name: str) -> None:
        """One more job of `job_name` enqueued (its labelled child kept: `labels()` costs more than `inc()`)."""
        child = self._enqueued.get(job_name)
        if child is None:
            child = self._enqueued[job_name] = self.enqueued.labels(job_name)
        child.inc()


# A fresh id has uuid4's layout (version 4, RFC 4122 variant). It only correlates logs with a
# response, so it comes from the fast generator rather than os.urandom (uuid4 costs a syscall).
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def fresh_request_id() -> str:
    return f"{getrandbits(128) & _UUID4_CLEAR | _UUID4_SET:032x}"


def request_id(request: web.Request) -> str:
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    return incoming if _CLIENT_ID.match(incoming) else fresh_request_id()


def route_label(request: web.Request) -> str:
    """The route template, never the raw path, so label cardinality stays bounded."""
    info = request.match_info
    route = info.route if info is not None else None
    resource = route.resource if route is not None else None
    return resource.canonical if resource is not None else "unmatched"


class _Children:
    """Labelled metric children by label values: `labels()` costs more than the increment itself.
    Bounded because routes are templates and methods and statuses are few."""

    def __init__(self, metrics: HttpMetrics) -> None:
        self.metrics = metrics
        self.counters: dict[tuple[str, str, int], Any] = {}
        self.histograms: dict[tuple[str, str], Any] = {}

    def record(self, method: str, route: str, status: int, seconds: float) -> None:
        counter = self.counters.get((method, route, status))
        if counter is None:
            counter = self.counters[(method, route, status)] = self.metrics.requests.labels(method, route, str(status))
        histogram = self.histograms.get((method, route))
        if histogram is None:
            histogram = self.histograms[(method, route)] = self.metrics.latency.labels(method, route)
        counter.inc()
        histogram.observe(seconds)


def observe_middleware(metrics: HttpMetrics):
    children = _Children(metrics)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        rid = request_id(request)
        request[REQUEST_ID] = rid
        started = time.perf_counter()
        metrics.handling += 1
        status = 500
        try:
            response = await handler(request)
            status = response.status
            if not response.prepared:
                response.headers[REQUEST_ID_HEADER] = rid
            return response
        except web.HTTPException as exc:
            status = exc.status
            exc.headers[REQUEST_ID_HEADER] = rid
            raise
        finally:
            metrics.handling -= 1
            method = request.method if request.method in _METHODS else "OTHER"
            children.record(method, route_label(request), status, time.perf_counter() - started)

    return middleware
