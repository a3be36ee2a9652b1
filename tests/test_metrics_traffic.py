"""Prometheus metrics correct under real traffic (successes, upstream failures of every kind, a client
that hangs up, a queueing backend) and aggregated across worker processes."""

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
from proxy.observe import RequestRecord
from translators.events import TextDelta
from translators.registry import TRANSLATORS

USER = [{"role": "user", "content": "Say something."}]
BACKEND_KEY = "sk-metrics-backend-secret-0123456789"
GATEWAY_KEY = "rk-metrics-gateway-secret-9876543210"
PROMPT = "PROMPT-CANARY-do-not-label-me"


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
