"""Prometheus metrics of `hbw serve`: requests by route, method and status (429, 503 and 413
among them), their latency, and the size of the groups the ingest enqueues (worker.http.groups).

They are served on HBW_SERVE_METRICS_PORT of HBW_METRICS_HOST by the `hbw serve` command's own
process, not on the API's port: the API faces the internet, the metrics an operator's network.
With several server processes their counters meet in PROMETHEUS_MULTIPROC_DIR
(worker.cli.serve), as the workers' do.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram

#: Label of a request no route matched (its path is not a label: any client could mint series).
UNMATCHED = "unmatched"
#: Methods labelled as they are; any other a client sends is "other", for the same reason.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

REQUESTS = Counter(
    "hbw_http_requests",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "hbw_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by route template.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, float("inf")),
)
GROUP_REQUESTS = Histogram(
    "hbw_http_group_requests",
    "Requests whose heartbeats one enqueue group carried to Redis.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, float("inf")),
)
GROUP_HEARTBEATS = Histogram(
    "hbw_http_group_heartbeats",
    "Heartbeats one enqueue group carried to Redis (HBW_BATCH_SIZE at most per message).",
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, float("inf")),
)


class RequestMetrics:
    """ASGI middleware counting every HTTP answer, errors and unrouted requests included. The
    route is the template Starlette matched (``/api/v2/projects/{name:path}``), so a
    series is per endpoint, never per user or path a client invents."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # when the app raises before it answers, the server answers 500

        async def sending(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED
            method = scope["method"] if scope["method"] in METHODS else "other"
            REQUESTS.labels(template, method, str(status)).inc()
            LATENCY.labels(template).observe(time.perf_counter() - started)
