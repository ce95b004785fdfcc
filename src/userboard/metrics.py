"""One server process's Prometheus metrics, in a registry of its own. Imports no Flask.

Each app gets its own `CollectorRegistry` (tests build many apps in one process), served at
`/metrics` by ops.py. Counters count from the process's start; every process has its own, so
scrape each one (not through the load balancer). No metric names a user or carries user data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector

log = logging.getLogger(__name__)

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Request latency buckets (seconds): the API answers in about a millisecond here; a page of a
# million-user view in tens.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """The counters and gauges of one app; `publish` makes it a capture publisher."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)  # CPU, memory, open files of this process
        self.sockets = Gauge("userboard_sockets_connected",
                             "Authenticated sockets connected to this process.", registry=registry)
        self.relay_lag = Gauge(
            "userboard_relay_lag_seqs",
            "Seqs the database has handed out that this process has not yet sent to its "
            "whole-table sockets (NaN when the database cannot be read).", registry=registry)
        self.events_published = Counter(
            "userboard_events_published", "Events committed by this process.", registry=registry)
        self.events_delivered = Counter(
            "userboard_events_delivered",
            "Whole-table events this process sent to its sockets, in seq order (each event "
            "counts once, however many sockets got it).", registry=registry)
        self.resyncs = Counter("userboard_resyncs", "resync requests served.", registry=registry)
        self.snapshots = Counter(
            "userboard_snapshots",
            "Snapshots sent to one socket: users_snapshot and users_too_large (whole-table "
            "clients, on connect and resync) and users_view (a view's whole window).",
            ["kind"], registry=registry)
        self.login_failures = Counter(
            "userboard_login_failures",
            "Failed logins through the login form: wrong credentials, or refused while throttled.",
            ["reason"], registry=registry)
        self.requests = Histogram(
            "userboard_http_request_duration_seconds",
            "Time to answer an HTTP request (Engine.IO's excepted), by route, method and status.",
            ["route", "method", "status"], buckets=LATENCY_BUCKETS, registry=registry)

    def watch(self, sockets: Callable[[], int], relay_lag: Callable[[], int]) -> None:
        """Read these two gauges from the app when scraped."""
        self.sockets.set_function(sockets)

        def lag() -> float:
            try:
                return relay_lag()
            except Exception as exc:  # the database is down: say so, do not fail the scrape
                log.warning("relay lag unknown: %s", type(exc).__name__)
                return float("nan")

        self.relay_lag.set_function(lag)

    def observe_request(self, route: str | None, method: str, status: str, seconds: float) -> None:
        """Time one HTTP request the app answered (`route`: the Flask rule, or "unmatched");
        Engine.IO's long polls and websockets (`route` None) would only blur the figures."""
        if route is None:
            return
        self.requests.labels(route, method if method in METHODS else "other", status).observe(seconds)

    def publish(self, events) -> None:
        """Capture publisher: count this process's committed events."""
        self.events_published.inc(len(events))

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """Every metric, in the format the scraper's Accept header asks for (the Prometheus
        text format, or OpenMetrics), and its content type."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type
