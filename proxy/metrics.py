"""Prometheus metrics, fed only by request records and live events (see ``observe.py``).

Names follow the OpenTelemetry GenAI semantic conventions where one exists, in base units,
with few bounded labels: ``backend``, ``model`` (the public route name), ``operation``,
``stream``, ``status`` class. Never a key, an IP or a prompt.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from translators.events import Cost, Progress

from .observe import RequestRecord

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)

ROUTE = ("backend", "model", "operation")


def status_class(status: int) -> str:
    """``2xx``, ``4xx``... (499: the client went away)."""
    return "499" if status == 499 else f"{status // 100}xx"


class Metrics:
    """The gateway's collectors in their own registry (one per app)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.duration = Histogram(
            "gen_ai_client_operation_duration_seconds", "End-to-end request duration.",
            ROUTE + ("stream", "status"), buckets=DURATION_BUCKETS, registry=r,
        )
        self.ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds", "Time from request arrival to the first generated token.",
            ROUTE + ("stream",), buckets=TTFT_BUCKETS, registry=r,
        )
        self.tpot = Histogram(
            "gen_ai_server_time_per_output_token_seconds", "Time per output token after the first.",
            ROUTE, buckets=TPOT_BUCKETS, registry=r,
        )
        self.token_usage = Histogram(
            "gen_ai_client_token_usage", "Tokens per request by type (input|output).",
            ROUTE + ("type",), buckets=TOKEN_BUCKETS, registry=r,
        )
        self.tokens = Counter(
            "rosetta_tokens", "Tokens by type and source (provider|estimated).",
            ROUTE + ("type", "source"), registry=r,
        )
        self.requests = Counter(
            "rosetta_requests", "Requests by status and error type.",
            ROUTE + ("stream", "status", "error_type"), registry=r,
        )
        self.in_flight = Gauge("rosetta_requests_in_flight", "Requests being answered now.", ("operation",), registry=r)
        self.upstream_errors = Counter(
            "rosetta_upstream_errors", "Upstream failures by kind.", ("backend", "kind"), registry=r,
        )
        self.disconnects = Counter(
            "rosetta_client_disconnects", "Clients that went away before the answer ended.", ("backend",), registry=r,
        )
        self.overhead = Histogram(
            "rosetta_overhead_seconds", "Time Rosetta itself added (excluding upstream wait).",
            ("backend", "operation", "stream"), buckets=OVERHEAD_BUCKETS, registry=r,
        )
        self.queue_position = Gauge(
            "rosetta_upstream_queue_position", "Last reported queue position of a waiting job.", ("backend",), registry=r,
        )
        self.cost = Counter("rosetta_upstream_cost", "Upstream cost by unit (e.g. kudos).", ("backend", "unit"), registry=r)

    # --- Observer -------------------------------------------------------------------------
    def started(self, record: RequestRecord) -> None:
        self.in_flight.labels(record.operation).inc()

    def progress(self, record: RequestRecord, event: Progress | Cost) -> None:
        if isinstance(event, Progress) and event.queue_position is not None:
            self.queue_position.labels(record.backend).set(event.queue_position)
        elif isinstance(event, Cost):
            self.cost.labels(record.backend, event.unit).inc(event.amount)

    def finished(self, record: RequestRecord) -> None:
        self.in_flight.labels(record.operation).dec()
        route = (record.backend or "none", record.route or "none", record.operation)
        stream = "true" if record.stream else "false"
        self.requests.labels(*route, stream, str(record.status), record.error_type or "").inc()
        if not record.backend:
            return  # rejected before routing: counted above, nothing else is known
        self.duration.labels(*route, stream, status_class(record.status)).observe(record.duration)
        self.overhead.labels(record.backend, record.operation, stream).observe(record.overhead)
        if record.ttft is not None:
            self.ttft.labels(*route, stream).observe(record.ttft)
            if record.completion_tokens and record.completion_tokens > 1:
                per_token = (record.duration - record.ttft) / (record.completion_tokens - 1)
                self.tpot.labels(*route).observe(max(per_token, 0.0))
        if record.error_kind:
            self.upstream_errors.labels(record.backend, record.error_kind).inc()
        if record.client_disconnected:
            self.disconnects.labels(record.backend).inc()
        source = record.usage_source or "estimated"
        for kind, count in (("input", record.prompt_tokens), ("output", record.completion_tokens)):
            if count is not None:
                self.token_usage.labels(*route, kind).observe(count)
                self.tokens.labels(*route, kind, source).inc(count)
