"""Prometheus metrics, fed only by request records and live events (see ``observe.py``).

Names follow the OpenTelemetry GenAI semantic conventions where one exists, in base units,
with few bounded labels: ``backend``, ``model`` (the public route name), ``operation``,
``stream``, ``status`` class. Never a key, an IP or a prompt.

Several worker processes: when ``PROMETHEUS_MULTIPROC_DIR`` is set before prometheus-client
is imported, every process writes its samples to files in that directory and ``/metrics``
merges them all (prometheus-client's multiprocess mode, the library made for the job). The
directory must be empty when the workers start.

Queue and cost metrics carry the names the issue gives them (``rosetta_horde_*``: AI Horde
is the one public job queue a backend has today), but no code here looks at a backend's
type: any backend that reports a queue through ``Progress`` feeds the queue gauges, and
``Cost`` feeds the counter of its unit (``kudos``), labelled by the configured backend name.
Retries, fallbacks, gateway queues and rate limits do not exist yet, so neither do their
metrics; ``RequestRecord`` already has the fields for them.
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterable

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from translators.events import Cost, Progress

from .observe import RequestRecord

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)

ROUTE = ("backend", "model", "operation")
# A model name that is not a configured route is the client's own string (``backend/anything``):
# at most this many distinct ones per backend become labels, the rest share ``<backend>/other``.
PASSTHROUGH_MODELS = 50
MODEL_LABEL_CHARS = 200
NONE = "none"
# The classic text format every scraper reads (our names need none of 1.0.0's UTF-8 escaping).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


def status_class(status: int) -> str:
    """``2xx``, ``4xx``, ``5xx`` (a client that went away, 499, is a ``4xx``)."""
    return f"{status // 100}xx"


def multiprocess_dir() -> str | None:
    """The shared sample directory when prometheus-client runs in multiprocess mode, else None.

    The mode is fixed when prometheus-client is imported (its value class), so the environment
    variable alone is not enough: both must agree."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")
    if not path or values.ValueClass is values.MutexValue:
        return None
    return path


def _count(value: int | None) -> int | None:
    """A token count fit for a counter (a backend may report nonsense; metrics never raise)."""
    return value if isinstance(value, int) and value >= 0 else None


class Metrics:
    """The gateway's collectors in their own registry (one per app); an ``Observer``."""

    content_type = CONTENT_TYPE

    def __init__(self, registry: CollectorRegistry | None = None, *, known_models: Iterable[str] = ()) -> None:
        # ``*_created`` series double every counter and histogram for nothing Prometheus uses.
        disable_created_metrics()
        self.known_models = frozenset(known_models)
        # labelled children by (metric, label values): labels() validates and locks each call
        self._children: dict[tuple[Any, ...], Any] = {}
        self.multiprocess_dir = multiprocess_dir()
        if self.multiprocess_dir:
            os.makedirs(self.multiprocess_dir, exist_ok=True)
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._passthrough: dict[str, set[str]] = {}
        self._queued: dict[str, dict[str, tuple[int | None, float | None]]] = {}
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
            "gen_ai_server_time_per_output_token_seconds", "Time per output token after the first (streamed answers).",
            ROUTE, buckets=TPOT_BUCKETS, registry=r,
        )
        self.token_usage = Histogram(
            "gen_ai_client_token_usage", "Tokens per request by type (input|output).",
            ROUTE + ("type",), buckets=TOKEN_BUCKETS, registry=r,
        )
        self.tokens = Counter(
            "rosetta_tokens", "Tokens by type (input|output) and source (provider|estimated).",
            ROUTE + ("type", "source"), registry=r,
        )
        self.requests = Counter(
            "rosetta_requests", "Finished requests by status class and error type.",
            ROUTE + ("stream", "status", "error_type"), registry=r,
        )
        self.in_flight = Gauge(
            "rosetta_requests_in_flight", "Requests being answered now.", ("operation",),
            registry=r, multiprocess_mode="livesum",
        )
        self.upstream_errors = Counter(
            "rosetta_upstream_errors",
            "Upstream failures by kind (timeout, refused, 4xx, 5xx, malformed, cut_mid_stream, rejected).",
            ("backend", "kind"), registry=r,
        )
        self.retries = Counter(
            "rosetta_retries", "Attempts repeated after a retryable upstream failure (before answering).",
            ("backend", "model"), registry=r,
        )
        self.fallbacks = Counter(
            "rosetta_fallbacks", "Requests answered by (or tried on) a fallback model.", ("backend", "model"), registry=r,
        )
        self.disconnects = Counter(
            "rosetta_client_disconnects", "Clients that went away before the answer ended.",
            ("backend", "operation", "stream"), registry=r,
        )
        self.overhead = Histogram(
            "rosetta_overhead_seconds", "Time Rosetta itself added to a request (excluding upstream wait).",
            ("backend", "operation", "stream"), buckets=OVERHEAD_BUCKETS, registry=r,
        )
        self.queue_position = Gauge(
            "rosetta_horde_queue_position",
            "Highest queue position last reported upstream among the jobs waiting now (0: none waits).",
            ("backend",), registry=r, multiprocess_mode="livemax",
        )
        self.queue_wait = Gauge(
            "rosetta_horde_wait_seconds",
            "Longest wait last estimated upstream among the jobs waiting now (0: none waits).",
            ("backend",), registry=r, multiprocess_mode="livemax",
        )
        self.kudos = Counter(
            "rosetta_horde_kudos", "Kudos spent upstream.", ("backend", "model"), registry=r,
        )
        # Cost unit → the counter it feeds; a unit with no counter is not measured.
        self.costs: dict[str, Counter] = {"kudos": self.kudos}

    # --- exposition -----------------------------------------------------------------------
    def exposition(self) -> bytes:
        """The Prometheus text exposition: this process's collectors, or in multiprocess mode
        the samples of every worker merged."""
        if self.multiprocess_dir:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_dir)
            return generate_latest(registry)
        return generate_latest(self.registry)

    def close(self) -> None:
        """The process is going away: drop its share of the live gauges (multiprocess mode)."""
        if self.multiprocess_dir:
            mark_process_dead(os.getpid(), self.multiprocess_dir)

    # --- labels -----------------------------------------------------------------------------
    def model_label(self, record: RequestRecord) -> str:
        """The ``model`` label: the configured route name, or a bounded passthrough name."""
        name = record.route
        if not name:
            return NONE
        if name in self.known_models:
            return name
        name = name[:MODEL_LABEL_CHARS]
        seen = self._passthrough.setdefault(record.backend, set())
        if name in seen:
            return name
        if len(seen) < PASSTHROUGH_MODELS:
            seen.add(name)
            return name
        return f"{record.backend}/other"

    # --- Observer -------------------------------------------------------------------------
    def started(self, record: RequestRecord) -> None:
        """A request arrived."""
        self._child(self.in_flight, record.operation).inc()

    def progress(self, record: RequestRecord, event: Progress | Cost) -> None:
        """A live queue report or a cost."""
        match event:
            case Progress(position, wait):
                if position is None and wait is None:
                    return  # progress of another kind (prompt processing): not a queue
                jobs = self._queued.setdefault(record.backend, {})
                last_position, last_wait = jobs.get(record.request_id, (None, None))
                jobs[record.request_id] = (
                    position if position is not None else last_position,
                    wait if wait is not None else last_wait,
                )
                self._publish_queue(record.backend)
            case Cost(amount, unit):
                counter = self.costs.get(unit)
                if counter is not None and math.isfinite(amount) and amount > 0:
                    counter.labels(record.backend or NONE, self.model_label(record)).inc(amount)

    def _publish_queue(self, backend: str) -> None:
        jobs = self._queued.get(backend) or {}
        positions = [p for p, _ in jobs.values() if p is not None]
        waits = [w for _, w in jobs.values() if w is not None]
        self._child(self.queue_position, backend).set(max(positions, default=0))
        self._child(self.queue_wait, backend).set(max(waits, default=0.0))

    def _child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, cached."""
        key = (id(metric), *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def finished(self, record: RequestRecord) -> None:
        """The request ended: count it and observe its times and tokens."""
        self._child(self.in_flight, record.operation).dec()
        if record.request_id in self._queued.get(record.backend, {}):
            del self._queued[record.backend][record.request_id]
            self._publish_queue(record.backend)
        backend = record.backend or NONE
        route = (backend, self.model_label(record), record.operation)
        stream = "true" if record.stream else "false"
        error_type = record.error_type or ("client_disconnected" if record.client_disconnected else "")
        self._child(self.requests, *route, stream, status_class(record.status), error_type).inc()
        if record.client_disconnected:
            self._child(self.disconnects, backend, record.operation, stream).inc()
        if record.retries:
            self._child(self.retries, backend, route[1]).inc(record.retries)
        if record.fallbacks:
            self._child(self.fallbacks, backend, route[1]).inc(record.fallbacks)
        if not record.backend:
            return  # rejected before routing: counted above, nothing else is known
        self._child(self.duration, *route, stream, status_class(record.status)).observe(record.duration)
        if record.upstream_wait > 0:  # it went upstream: what Rosetta added around that
            self._child(self.overhead, backend, record.operation, stream).observe(record.overhead)
        ttft = record.ttft
        if ttft is not None:
            self._child(self.ttft, *route, stream).observe(ttft)
            output = _count(record.completion_tokens)
            # A whole answer at once has no pace per token to speak of: streams only.
            if record.stream and output is not None and output > 1:
                self._child(self.tpot, *route).observe(max(record.duration - ttft, 0.0) / (output - 1))
        if record.error_kind:
            self._child(self.upstream_errors, backend, record.error_kind).inc()
        source = record.usage_source or "estimated"
        for kind, value in (("input", record.prompt_tokens), ("output", record.completion_tokens)):
            count = _count(value)
            if count is not None:
                self._child(self.token_usage, *route, kind).observe(count)
                self._child(self.tokens, *route, kind, source).inc(count)
