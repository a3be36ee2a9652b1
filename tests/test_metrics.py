"""Prometheus metrics: names, units and bounded labels; fed only by request records and
events; correct under real traffic (successes, upstream failures of every kind, a client that
hangs up, a queueing backend); aggregated across worker processes."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from harness import Received, Writer, eventually, http_response, post_then_hang_up, sse_body, stream_response
from observe_helpers import QueuedMock, free_port, get_text, rosetta_process, samples, total

from proxy.app import METRICS
from proxy.metrics import PASSTHROUGH_MODELS, Metrics, status_class
from proxy.observe import RequestRecord
from translators.events import Cost, Progress, TextDelta
from translators.registry import TRANSLATORS

USER = [{"role": "user", "content": "Say something."}]
BACKEND_KEY = "sk-metrics-backend-secret-0123456789"
GATEWAY_KEY = "rk-metrics-gateway-secret-9876543210"
PROMPT = "PROMPT-CANARY-do-not-label-me"

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


# --- the real app under traffic ----------------------------------------------------------------


async def post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """POST and return status, headers and the body (JSON, or the raw SSE text for streams)."""
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=body, headers=headers) as response:
            text = await response.text()
            if response.content_type == "application/json":
                return response.status, dict(response.headers), orjson.loads(text)
            return response.status, dict(response.headers), text


def stream_usage(sse: str) -> dict[str, int]:
    for line in sse.splitlines():
        if line.startswith("data: {"):
            chunk = orjson.loads(line[6:])
            if chunk.get("usage"):
                return dict(chunk["usage"])
    raise AssertionError(f"no usage chunk in {sse!r}")


MOCK_CONFIG: dict[str, Any] = {
    "server": {"api_keys": [GATEWAY_KEY]},
    "backends": {
        "mock": {"type": "mock", "tokens_per_second": 0, "api_key": BACKEND_KEY},
        "slow": {"type": "mock", "tokens_per_second": 20, "default_max_tokens": 400},
    },
    "models": [
        {"name": "m", "backend": "mock", "model": "lorem"},
        {"name": "echo", "backend": "mock", "model": "echo"},
        {"name": "slow", "backend": "slow", "model": "lorem"},
    ],
}
AUTH = {"Authorization": f"Bearer {GATEWAY_KEY}"}


async def test_traffic_is_counted_with_tokens_matching_the_answers(rosetta: Any) -> None:
    running = await rosetta(MOCK_CONFIG)
    chat = running.base_url + "/chat/completions"
    usages: list[dict[str, int]] = []
    status, headers, body = await post(chat, {"model": "m", "messages": USER, "max_tokens": 7}, AUTH)
    assert status == 200
    usages.append(body["usage"])
    assert 0 <= float(headers["x-rosetta-overhead-ms"]) < 10_000
    status, headers, sse = await post(
        chat, {"model": "m", "messages": USER, "stream": True, "stream_options": {"include_usage": True}}, AUTH
    )
    assert status == 200
    usages.append(stream_usage(sse))
    assert float(headers["x-rosetta-overhead-ms"]) >= 0
    status, _, body = await post(running.base_url + "/completions", {"model": "m", "prompt": "Once", "max_tokens": 3}, AUTH)
    assert status == 200
    completion_usage = body["usage"]
    status, _, _ = await post(chat, {"model": "m", "messages": USER, "temperature": 9}, AUTH)
    assert status == 400
    status, _, _ = await post(chat, {"model": "nope", "messages": USER}, AUTH)
    assert status == 404

    text = await get_text(running.url + "/metrics")
    chat_route = {"backend": "mock", "model": "m", "operation": "chat"}
    assert total(text, "rosetta_requests_total", **chat_route, status="2xx") == 2
    assert total(text, "rosetta_requests_total", **chat_route, status="4xx", error_type="invalid_request_error") == 1
    assert total(text, "rosetta_requests_total", backend="none", model="none", status="4xx") == 1
    assert total(text, "rosetta_requests_total", operation="completion", status="2xx") == 1
    assert total(text, "rosetta_tokens_total", **chat_route, type="input") == sum(u["prompt_tokens"] for u in usages)
    assert total(text, "rosetta_tokens_total", **chat_route, type="output") == sum(u["completion_tokens"] for u in usages)
    assert total(text, "rosetta_tokens_total", operation="completion", type="output") == completion_usage["completion_tokens"]
    assert total(text, "gen_ai_server_time_to_first_token_seconds_count", **chat_route, stream="true") == 1
    assert total(text, "gen_ai_server_time_per_output_token_seconds_count", **chat_route) == 1
    assert total(text, "rosetta_overhead_seconds_count", backend="mock") == 3  # the 400 never went upstream
    assert total(text, "rosetta_requests_in_flight") == 0
    # never a key, a prompt or an address in the exposition
    for secret in (BACKEND_KEY, GATEWAY_KEY, PROMPT, "127.0.0.1"):
        assert secret not in text


async def test_prompts_never_reach_a_label(rosetta: Any) -> None:
    running = await rosetta(MOCK_CONFIG)
    messages = [{"role": "user", "content": PROMPT}]
    status, _, _ = await post(running.base_url + "/chat/completions", {"model": "echo", "messages": messages}, AUTH)
    assert status == 200
    text = await get_text(running.url + "/metrics")
    assert PROMPT not in text and GATEWAY_KEY not in text


async def test_every_upstream_failure_kind_is_counted(upstream: Any, rosetta: Any) -> None:
    async def hang(received: Received, writer: Writer) -> None:
        await writer.wait_closed_by_peer(10)

    chunk = {"id": "c1", "object": "chat.completion.chunk", "model": "x", "choices": [{"index": 0, "delta": {"content": "Hel"}}]}
    upstream.add(
        "POST", "/v1/chat/completions",
        http_response(500, {"error": {"message": "boom"}}),
        http_response(200, "not json at all", content_type="application/json"),
        stream_response(sse_body([chunk], done=False)),
        hang,
    )
    config = {
        "backends": {
            "up": {"type": "openai", "url": upstream.url + "/v1", "api_key": BACKEND_KEY, "timeout": {"read": 0.3}},
            "dead": {"type": "openai", "url": f"http://127.0.0.1:{free_port()}/v1"},
        },
        "models": [{"name": "up", "backend": "up", "model": "x"}, {"name": "dead", "backend": "dead", "model": "x"}],
    }
    running = await rosetta(config)
    chat = running.base_url + "/chat/completions"
    assert (await post(chat, {"model": "up", "messages": USER}))[0] == 502
    assert (await post(chat, {"model": "up", "messages": USER}))[0] == 502
    status, _, sse = await post(chat, {"model": "up", "messages": USER, "stream": True})
    assert status == 200 and '"error"' in sse
    assert (await post(chat, {"model": "up", "messages": USER}))[0] == 504
    assert (await post(chat, {"model": "dead", "messages": USER}))[0] == 502

    text = await get_text(running.url + "/metrics")
    for kind in ("5xx", "malformed", "cut_mid_stream", "timeout"):
        assert total(text, "rosetta_upstream_errors_total", backend="up", kind=kind) == 1, kind
    assert total(text, "rosetta_upstream_errors_total", backend="dead", kind="refused") == 1
    assert total(text, "rosetta_requests_total", backend="up", status="5xx") == 4
    assert total(text, "rosetta_requests_total", backend="up", stream="true", status="5xx") == 1
    assert total(text, "rosetta_requests_total", backend="up", error_type="timeout_error") == 1
    assert total(text, "rosetta_requests_in_flight") == 0


async def test_a_client_hanging_up_mid_stream_is_counted(rosetta: Any) -> None:
    config = {"backends": MOCK_CONFIG["backends"], "models": MOCK_CONFIG["models"]}
    running = await rosetta(config)
    metrics = running.app[METRICS]
    body = {"model": "slow", "messages": USER, "stream": True}
    await post_then_hang_up(running, "/v1/chat/completions", body, after=b"data:")
    labels = {"backend": "slow", "operation": "chat", "stream": "true"}
    assert await eventually(lambda: metrics.registry.get_sample_value("rosetta_client_disconnects_total", labels) == 1, 5)
    assert await eventually(lambda: metrics.registry.get_sample_value("rosetta_requests_in_flight", {"operation": "chat"}) == 0, 5)
    text = await get_text(running.url + "/metrics")
    assert total(text, "rosetta_requests_total", backend="slow", error_type="client_disconnected") == 1


async def test_a_queueing_backend_feeds_the_queue_and_kudos_metrics(rosetta: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TRANSLATORS, QueuedMock.name, QueuedMock)
    config = {
        "backends": {"queue": {"type": QueuedMock.name, "tokens_per_second": 0}},
        "models": [{"name": "qm", "backend": "queue", "model": "lorem"}],
    }
    running = await rosetta(config)
    chat = running.base_url + "/chat/completions"
    assert (await post(chat, {"model": "qm", "messages": USER}))[0] == 200
    status, _, sse = await post(chat, {"model": "qm", "messages": USER, "stream": True})
    assert status == 200 and ": queue_position=4" in sse
    text = await get_text(running.url + "/metrics")
    assert total(text, "rosetta_horde_kudos_total", backend="queue", model="qm") == 5.0
    # both jobs are done: nothing waits
    assert total(text, "rosetta_horde_queue_position", backend="queue") == 0
    assert total(text, "rosetta_horde_wait_seconds", backend="queue") == 0


async def test_metrics_need_no_key_and_have_the_exposition_type(rosetta: Any) -> None:
    running = await rosetta(MOCK_CONFIG)
    async with aiohttp.ClientSession() as http:
        async with http.get(running.url + "/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await response.text()
    assert "# TYPE rosetta_requests_total counter" in text
    assert "# TYPE gen_ai_client_operation_duration_seconds histogram" in text


def test_the_record_keeps_answer_text_only_when_asked() -> None:
    quiet = RequestRecord("r", "chat", False)
    quiet.see(TextDelta("secret story"))
    assert quiet.answer == {}
    loud = RequestRecord("r", "chat", False, capture_content=True)
    for event in (TextDelta("Once "), TextDelta("upon", 0), TextDelta("Two", 1)):
        loud.see(event)
    assert loud.answer == {0: ["Once ", "upon"], 1: ["Two"]}


# --- several worker processes -----------------------------------------------------------------


async def test_two_processes_writing_one_directory_are_aggregated(tmp_path: Path) -> None:
    shared = tmp_path / "prometheus-multiproc"
    shared.mkdir()
    config = {
        "backends": {"mock": {"type": "mock", "tokens_per_second": 0}},
        "models": [{"name": "m", "backend": "mock", "model": "lorem"}],
    }
    env = {"PROMETHEUS_MULTIPROC_DIR": str(shared)}
    async with rosetta_process(config, tmp_path, env=env) as first, rosetta_process(config, tmp_path, env=env) as second:
        for running, count in ((first, 3), (second, 2)):
            for i in range(count):
                status, _, _ = await post(running.base_url + "/chat/completions", {"model": "m", "messages": USER, "stream": i == 0})
                assert status == 200
        for running in (first, second):
            text = await get_text(running.url + "/metrics")
            assert total(text, "rosetta_requests_total", backend="mock", status="2xx") == 5
            assert total(text, "gen_ai_client_operation_duration_seconds_count", backend="mock") == 5
            assert total(text, "gen_ai_server_time_to_first_token_seconds_count", backend="mock", stream="true") == 2
            in_flight = [(labels, v) for name, labels, v in samples(text) if name == "rosetta_requests_in_flight"]
            assert in_flight == [({"operation": "chat"}, 0.0)]  # summed over live workers: no pid label
        assert glob.glob(os.path.join(shared, f"gauge_livesum_{second.process.pid}.db"))
    # both stopped: each removed its live gauges on the way out; the counters stay
    assert not glob.glob(os.path.join(shared, "gauge_live*.db"))
    assert glob.glob(os.path.join(shared, "counter_*.db"))


async def test_a_stopped_worker_keeps_its_counts_and_leaves_the_live_gauges(tmp_path: Path) -> None:
    shared = tmp_path / "prometheus-multiproc"
    shared.mkdir()
    config = {
        "backends": {"mock": {"type": "mock", "tokens_per_second": 0}},
        "models": [{"name": "m", "backend": "mock", "model": "lorem"}],
    }
    env = {"PROMETHEUS_MULTIPROC_DIR": str(shared)}
    async with rosetta_process(config, tmp_path, env=env) as first:
        async with rosetta_process(config, tmp_path, env=env) as second:
            status, _, _ = await post(second.base_url + "/chat/completions", {"model": "m", "messages": USER})
            assert status == 200
            pid = second.process.pid
        assert not glob.glob(os.path.join(shared, f"gauge_live*_{pid}.db"))
        status, _, _ = await post(first.base_url + "/chat/completions", {"model": "m", "messages": USER})
        assert status == 200
        text = await get_text(first.url + "/metrics")
        assert total(text, "rosetta_requests_total", backend="mock") == 2
        assert [v for name, _, v in samples(text) if name == "rosetta_requests_in_flight"] == [0.0]
