"""Prometheus metrics: names, units and bounded labels, fed only by request records and events (the
collectors fed records directly)."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.metrics import PASSTHROUGH_MODELS, Metrics, status_class
from proxy.observe import RequestRecord
from translators.events import Cost, Progress

ROUTE = {"backend": "mock", "model": "m", "operation": "chat"}


# --- the collectors, fed records directly ----------------------------------------------------


def record(**fields: Any) -> RequestRecord:
    """A finished chat record with fixed times: 2.5 s in all, first token at 0.5 s, 2 s upstream."""
    values: dict[str, Any] = dict(
        route="m", backend="mock", backend_type="mock", upstream_model="lorem", status=200,
        started=100.0, first_token_at=100.5, finished_at=102.5, upstream_wait=2.0,
        prompt_tokens=12, completion_tokens=41, usage_source="provider",
    )
    values.update(fields)
    stream = values.pop("stream", True)
    request_id = values.pop("request_id", "chatcmpl-1")
    operation = values.pop("operation", "chat")
    return RequestRecord(request_id, operation, stream, **values)


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_successful_stream_is_measured_in_base_units() -> None:
    metrics = Metrics(known_models=["m"])
    rec = record()
    metrics.started(rec)
    assert value(metrics, "rosetta_requests_in_flight", operation="chat") == 1
    metrics.finished(rec)
    assert value(metrics, "rosetta_requests_in_flight", operation="chat") == 0
    assert value(metrics, "rosetta_requests_total", **ROUTE, stream="true", status="2xx", error_type="") == 1
    assert value(metrics, "gen_ai_client_operation_duration_seconds_sum", **ROUTE, stream="true", status="2xx") == 2.5
    assert value(metrics, "gen_ai_client_operation_duration_seconds_bucket", **ROUTE, stream="true", status="2xx", le="1.0") == 0
    assert value(metrics, "gen_ai_client_operation_duration_seconds_bucket", **ROUTE, stream="true", status="2xx", le="2.5") == 1
    assert value(metrics, "gen_ai_server_time_to_first_token_seconds_sum", **ROUTE, stream="true") == 0.5
    # 40 tokens after the first in 2 s
    assert value(metrics, "gen_ai_server_time_per_output_token_seconds_sum", **ROUTE) == pytest.approx(0.05)
    assert value(metrics, "rosetta_overhead_seconds_sum", backend="mock", operation="chat", stream="true") == pytest.approx(0.5)
    assert value(metrics, "gen_ai_client_token_usage_sum", **ROUTE, type="input") == 12
    assert value(metrics, "gen_ai_client_token_usage_sum", **ROUTE, type="output") == 41
    assert value(metrics, "rosetta_tokens_total", **ROUTE, type="input", source="provider") == 12
    assert value(metrics, "rosetta_tokens_total", **ROUTE, type="output", source="provider") == 41


def test_a_whole_answer_has_no_time_per_token_and_estimates_are_labelled() -> None:
    metrics = Metrics(known_models=["m"])
    rec = record(stream=False, usage_source="estimated")
    metrics.started(rec)
    metrics.finished(rec)
    assert value(metrics, "gen_ai_server_time_per_output_token_seconds_count", **ROUTE) is None
    assert value(metrics, "gen_ai_server_time_to_first_token_seconds_count", **ROUTE, stream="false") == 1
    assert value(metrics, "rosetta_tokens_total", **ROUTE, type="output", source="estimated") == 41


def test_an_upstream_failure_counts_its_kind_and_status_class() -> None:
    metrics = Metrics(known_models=["m"])
    rec = record(
        status=504, error_type="timeout_error", error_kind="timeout", first_token_at=None,
        prompt_tokens=None, completion_tokens=None, usage_source=None,
    )
    metrics.started(rec)
    metrics.finished(rec)
    assert value(metrics, "rosetta_upstream_errors_total", backend="mock", kind="timeout") == 1
    assert value(metrics, "rosetta_requests_total", **ROUTE, stream="true", status="5xx", error_type="timeout_error") == 1
    assert value(metrics, "gen_ai_client_operation_duration_seconds_count", **ROUTE, stream="true", status="5xx") == 1
    assert value(metrics, "gen_ai_server_time_to_first_token_seconds_count", **ROUTE, stream="true") is None
    assert value(metrics, "rosetta_tokens_total", **ROUTE, type="input", source="estimated") is None


def test_a_request_rejected_before_routing_is_only_counted() -> None:
    metrics = Metrics(known_models=["m"])
    rec = record(route="", backend="", status=404, error_type="invalid_request_error", first_token_at=None, upstream_wait=0.0)
    metrics.started(rec)
    metrics.finished(rec)
    labels = {"backend": "none", "model": "none", "operation": "chat"}
    assert value(metrics, "rosetta_requests_total", **labels, stream="true", status="4xx", error_type="invalid_request_error") == 1
    text = metrics.exposition().decode()
    assert 'backend="none"' in text.split("rosetta_requests_total", 1)[1]
    assert "gen_ai_client_operation_duration_seconds_count{" not in text


def test_a_client_that_hangs_up_is_a_disconnect() -> None:
    metrics = Metrics(known_models=["m"])
    rec = record(status=499, client_disconnected=True, prompt_tokens=None, completion_tokens=None, usage_source=None)
    metrics.started(rec)
    metrics.finished(rec)
    assert value(metrics, "rosetta_client_disconnects_total", backend="mock", operation="chat", stream="true") == 1
    assert value(metrics, "rosetta_requests_total", **ROUTE, stream="true", status="4xx", error_type="client_disconnected") == 1


def test_status_classes() -> None:
    assert [status_class(s) for s in (200, 400, 404, 429, 499, 500, 503)] == ["2xx", "4xx", "4xx", "4xx", "4xx", "5xx", "5xx"]


def test_queue_progress_feeds_the_queue_gauges_while_jobs_wait() -> None:
    metrics = Metrics(known_models=["q"])
    first = record(request_id="a", route="q", backend="q")
    second = record(request_id="b", route="q", backend="q")
    for rec in (first, second):
        metrics.started(rec)
    metrics.progress(first, Progress(queue_position=9, wait_seconds=40.0))
    metrics.progress(second, Progress(queue_position=3, wait_seconds=10.0))
    assert value(metrics, "rosetta_horde_queue_position", backend="q") == 9
    assert value(metrics, "rosetta_horde_wait_seconds", backend="q") == 40
    # a report with only a position keeps that job's last wait estimate
    metrics.progress(first, Progress(queue_position=5))
    assert value(metrics, "rosetta_horde_queue_position", backend="q") == 5
    assert value(metrics, "rosetta_horde_wait_seconds", backend="q") == 40
    metrics.finished(first)
    assert value(metrics, "rosetta_horde_queue_position", backend="q") == 3
    assert value(metrics, "rosetta_horde_wait_seconds", backend="q") == 10
    metrics.finished(second)
    assert value(metrics, "rosetta_horde_queue_position", backend="q") == 0
    assert value(metrics, "rosetta_horde_wait_seconds", backend="q") == 0


def test_progress_that_is_not_a_queue_creates_no_queue_series() -> None:
    metrics = Metrics()
    rec = record(backend="llama")
    metrics.progress(rec, Progress(detail={"prompt_processed": 10, "prompt_total": 100}))
    assert "rosetta_horde_queue_position{" not in metrics.exposition().decode()


def test_cost_counts_kudos_and_ignores_other_units_and_nonsense() -> None:
    metrics = Metrics(known_models=["q"])
    rec = record(route="q", backend="q")
    metrics.progress(rec, Cost(2.5, "kudos"))
    metrics.progress(rec, Cost(1.0, "kudos"))
    metrics.progress(rec, Cost(-4.0, "kudos"))
    metrics.progress(rec, Cost(float("nan"), "kudos"))
    metrics.progress(rec, Cost(0.02, "usd"))
    assert value(metrics, "rosetta_horde_kudos_total", backend="q", model="q") == 3.5
    assert "usd" not in metrics.exposition().decode()


def test_nonsense_token_counts_never_raise() -> None:
    metrics = Metrics(known_models=["m"])
    rec = record(prompt_tokens=-1, completion_tokens=-5)
    metrics.started(rec)
    metrics.finished(rec)
    assert value(metrics, "rosetta_tokens_total", **ROUTE, type="input", source="provider") is None


def test_model_label_is_bounded() -> None:
    metrics = Metrics(known_models=["m", "mock/alias"])
    names = [f"mock/client-made-{i}" for i in range(PASSTHROUGH_MODELS + 10)]
    labels = [metrics.model_label(record(route=name)) for name in names]
    assert labels[:PASSTHROUGH_MODELS] == names[:PASSTHROUGH_MODELS]
    assert set(labels[PASSTHROUGH_MODELS:]) == {"mock/other"}
    # names already seen keep their label; configured routes always do
    assert metrics.model_label(record(route=names[0])) == names[0]
    assert metrics.model_label(record(route="m")) == "m"
    assert metrics.model_label(record(route="mock/alias")) == "mock/alias"
    # each backend has its own allowance
    assert metrics.model_label(record(route="other/x", backend="other")) == "other/x"
