"""End-to-end scenarios: upstream failures per backend (statuses, timeouts, refusals, cut or stalled
streams, malformed answers) and clients that hang up.

The real app (``run_rosetta`` through the ``rosetta`` fixture) against fake upstreams that replay
captured bytes (scenario_fakes); answers checked with the openai SDK's own models (scenario_helpers).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest
from harness import Received, ReplayUpstream, Writer, http_response, stream_response
from openai.types.chat import ChatCompletionChunk
from scenario_fakes import (
    CLAUDE_STREAM,
    COMPLETION_ONLY,
    FAKES,
    TEXT_BACKENDS,
    config_for,
    horde_wire,
    raw,
    with_status,
)
from scenario_helpers import check_error, client, post_json, post_stream


# --- upstream failures, per backend --------------------------------------------------------------
def generation_routes(kind: str) -> list[tuple[str, str]]:
    """Every route a chat generation may use on this backend (the fault goes on all of them)."""
    return {
        "kobold": [("POST", "/api/extra/generate/stream"), ("POST", "/api/v1/generate")],
        "llamacpp": [("POST", "/completion")],
        "ollama": [("POST", "/api/chat")],
        "ooba": [("POST", "/v1/chat/completions")],
        "horde": [("POST", "/api/v2/generate/text/async")],
        "tabby": [("POST", "/v1/completions")],
        "mancer": [("POST", "/oai/v1/completions")],
        "claude": [("POST", "/v1/messages")],
    }[kind]


def simple_request(kind: str, stream: bool) -> tuple[str, dict[str, Any]]:
    """A small chat (a prompt for the backends with completion recordings only)."""
    if kind in COMPLETION_ONLY:
        return "/completions", {"model": "rp", "prompt": "Hi", "stream": stream}
    return "/chat/completions", {"model": "rp", "messages": [{"role": "user", "content": "Hi"}], "stream": stream}


def replace_route(upstream: ReplayUpstream, kind: str, response: Any) -> None:
    for route in generation_routes(kind):
        upstream.routes[route] = [response]


def empty(status: int, reason: str, **headers: str) -> bytes:
    """A status with no body (what a reverse proxy in front of any backend may answer)."""
    head = [f"HTTP/1.1 {status} {reason}", "Content-Length: 0", "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode()


async def hang(received: Received, writer: Writer) -> None:
    """Accept the request and never answer."""
    await writer.wait_closed_by_peer(10)


# status the backend answers → status, type and code the client gets
STATUS_FAULTS = {
    "429": (empty(429, "Too Many Requests", **{"Retry-After": "7"}), 429, "rate_limit_error", "7"),
    "500": (empty(500, "Internal Server Error"), 502, "upstream_error", None),
    "503": (empty(503, "Service Unavailable"), 503, "upstream_error", None),
    "529": (empty(529, "Overloaded"), 503, "upstream_error", None),
}
SECRETS = ("sk-ant-scenario-secret", "backend-secret-key")


@pytest.mark.parametrize("kind", [*TEXT_BACKENDS, *COMPLETION_ONLY, "claude"])
@pytest.mark.parametrize("fault", sorted(STATUS_FAULTS))
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_upstream_status_becomes_the_openai_status(
    upstream: ReplayUpstream, rosetta: Any, kind: str, fault: str, stream: bool
) -> None:
    wire, status, etype, retry_after = STATUS_FAULTS[fault]
    FAKES[kind].install(upstream)
    replace_route(upstream, kind, wire)
    key = {} if kind == "claude" else {"api_key": "backend-secret-key"}
    running = await rosetta(config_for(kind, upstream.url, backend=key))
    got, headers, data = await post_json(running, *simple_request(kind, stream))
    # failed before the first event: an ordinary error response, also for a stream
    assert got == status, data
    error = check_error(data)
    assert error["type"] == etype
    if kind == "claude" and fault == "529":
        retry_after = "2"  # an overloaded Claude that names no wait gets the configured one
    assert headers.get("Retry-After") == retry_after
    assert not any(secret in json.dumps(data) for secret in SECRETS)
    if kind == "kobold" and stream:
        assert not upstream.requests("/api/extra/abort")  # nothing runs upstream: nothing to abort


@pytest.mark.parametrize(
    "kind, wire, status, message",
    [
        # captured / documented error bodies of each backend
        ("claude", http_response(529, raw("claude/error_529_overloaded.json")), 503, "Overloaded"),
        ("horde", horde_wire("83_err_async_rate_limited"), 429, "2 per 1 second"),
        ("kobold", raw("kobold/post_api_v1_generate_bad_json.response.wire"), 502, "Error parsing input."),
        ("llamacpp", raw("llamacpp/get_unknown_path.response.wire"), 404, "File Not Found"),
        ("ollama", http_response(500, raw("ollama/generate_stream_error.ndjson").splitlines()[-1]), 502,
         "an error was encountered while running the model"),
    ],
)
async def test_captured_error_bodies_are_passed_on(
    upstream: ReplayUpstream, rosetta: Any, kind: str, wire: bytes, status: int, message: str
) -> None:
    FAKES[kind].install(upstream)
    replace_route(upstream, kind, wire)
    running = await rosetta(config_for(kind, upstream.url))
    async with client(running) as oa:
        with pytest.raises(openai.APIStatusError) as caught:
            await oa.chat.completions.create(model="rp", messages=[{"role": "user", "content": "Hi"}], max_tokens=16)
    assert caught.value.status_code == status
    assert message in caught.value.message
    check_error(caught.value.response.json())


@pytest.mark.parametrize(
    "kind, wire",
    [
        # each backend's own error body, answered with 429 and a Retry-After (a scripted status)
        ("kobold", with_status(raw("kobold/post_api_v1_generate_bad_json.response.wire"), 429, extra=b"\r\nRetry-After: 7")),
        ("llamacpp", with_status(raw("llamacpp/get_unknown_path.response.wire"), 429, extra=b"\r\nRetry-After: 7")),
        ("ollama", http_response(429, raw("ollama/generate_stream_error.ndjson").splitlines()[-1], headers={"Retry-After": "7"})),
        ("claude", http_response(429, raw("claude/error_529_overloaded.json"), headers={"Retry-After": "7"})),
        ("horde", with_status(horde_wire("83_err_async_rate_limited"), 429, extra=b"\r\nRetry-After: 7").replace(b"Retry-After: 1\r\n", b"")),
    ],
)
async def test_retry_after_survives_every_error_body(upstream: ReplayUpstream, rosetta: Any, kind: str, wire: bytes) -> None:
    FAKES[kind].install(upstream)
    replace_route(upstream, kind, wire)
    running = await rosetta(config_for(kind, upstream.url))
    status, headers, data = await post_json(running, "/chat/completions", {"model": "rp", "messages": [{"role": "user", "content": "Hi"}]})
    assert status == 429, data
    assert check_error(data)["type"] == "rate_limit_error"
    assert headers.get("Retry-After") == "7"


@pytest.mark.parametrize("kind", [*TEXT_BACKENDS, *COMPLETION_ONLY, "claude"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_upstream_timeout_is_504(upstream: ReplayUpstream, rosetta: Any, kind: str, stream: bool) -> None:
    FAKES[kind].install(upstream)
    replace_route(upstream, kind, hang)
    running = await rosetta(config_for(kind, upstream.url, backend={"timeout": {"read": 0.3}}))
    status, _, data = await post_json(running, *simple_request(kind, stream))
    assert status == 504, data
    error = check_error(data)
    assert (error["type"], error["code"]) == ("timeout_error", "upstream_timeout")


@pytest.mark.parametrize("kind", [*TEXT_BACKENDS, *COMPLETION_ONLY, "claude"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_upstream_refused_is_502(rosetta: Any, kind: str, stream: bool) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # no api_key: aiohttp refuses a URL's user:password together with an Authorization header
    running = await rosetta(config_for(kind, f"http://user:url-password@127.0.0.1:{port}", backend={"api_key": None}))
    status, _, data = await post_json(running, *simple_request(kind, stream))
    assert status == 502, data
    error = check_error(data)
    assert error["code"] == "upstream_unreachable"
    # a URL's credentials never reach the client
    assert "url-password" not in error["message"] and "user:" not in error["message"]


def cut_after(wire: bytes, marker: bytes, count: int) -> bytes:
    """A captured stream response up to the ``count``-th ``marker`` of its body."""
    head, body = wire.split(b"\r\n\r\n", 1)
    at = 0
    for _ in range(count):
        at = body.index(marker, at) + len(marker)
    return head + b"\r\n\r\n" + body[:at]


CUTS: dict[str, tuple[bytes, str]] = {
    # the first events of a captured stream, then the connection closes
    "kobold": (cut_after(raw("kobold/post_api_extra_generate_stream_short.response.wire"), b"\n\n", 3), "The capital of"),
    "llamacpp": (cut_after(raw("llamacpp/post_completion_stream_disconnected.partial.wire"), b"\n\n\r\n", 3), "I know that"),
    "ollama": (cut_after(stream_response(raw("ollama/chat_stream.ndjson"), content_type="application/x-ndjson"), b"\n", 1), "The"),
    "ooba": (cut_after(raw("ooba/post_v1_chat_completions_stream.response.wire"), b"\n\n\r\n", 3), "What is"),
    "claude": (cut_after(CLAUDE_STREAM, b"\n\n", 4), "Hello"),
}


@pytest.mark.parametrize("kind", sorted(CUTS))
async def test_stream_cut_mid_answer_ends_with_one_error_chunk(upstream: ReplayUpstream, rosetta: Any, kind: str) -> None:
    wire, text = CUTS[kind]

    async def cut(received: Received, writer: Writer) -> None:
        await writer.send(wire)

    FAKES[kind].install(upstream)
    replace_route(upstream, kind, cut)
    running = await rosetta(config_for(kind, upstream.url))
    body = {"model": "rp", "messages": [{"role": "user", "content": "Tell me a story"}], "max_tokens": 64,
            "stream_options": {"include_usage": True}}
    streamed = await post_stream(running, "/chat/completions", body)
    assert streamed.status == 200 and streamed.done
    *answer, last = streamed.chunks
    assert "".join((c["choices"][0]["delta"].get("content") or "") for c in answer if c["choices"]) == text
    assert all("error" not in c for c in answer)
    assert last["choices"] == [] and set(last) >= {"id", "object", "created", "model", "error"}
    check_error({"error": last["error"]})
    for chunk in answer:
        ChatCompletionChunk.model_validate(chunk)
    assert not any(c["choices"] and c["choices"][0]["finish_reason"] for c in answer)  # it did not finish


@pytest.mark.parametrize("kind", sorted(CUTS))
async def test_openai_sdk_raises_the_in_stream_error(upstream: ReplayUpstream, rosetta: Any, kind: str) -> None:
    wire, text = CUTS[kind]

    async def cut(received: Received, writer: Writer) -> None:
        await writer.send(wire)

    FAKES[kind].install(upstream)
    replace_route(upstream, kind, cut)
    running = await rosetta(config_for(kind, upstream.url))
    got = ""
    async with client(running) as oa:
        stream = await oa.chat.completions.create(model="rp", messages=[{"role": "user", "content": "Hi"}], stream=True)
        with pytest.raises(openai.APIError):
            async for chunk in stream:
                got += (chunk.choices[0].delta.content or "") if chunk.choices else ""
    assert got == text


@pytest.mark.parametrize("kind", ["kobold", "llamacpp", "ollama", "ooba", "claude"])
async def test_stream_cut_before_the_first_token_is_an_http_error(upstream: ReplayUpstream, rosetta: Any, kind: str) -> None:
    wire, _ = CUTS[kind]
    head = wire.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"

    async def cut(received: Received, writer: Writer) -> None:
        await writer.send(head)

    FAKES[kind].install(upstream)
    replace_route(upstream, kind, cut)
    running = await rosetta(config_for(kind, upstream.url))
    body = {"model": "rp", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    status, _, data = await post_json(running, "/chat/completions", body)
    assert status == 502, data
    check_error(data)


@pytest.mark.parametrize("kind", ["kobold", "llamacpp", "ollama", "ooba", "claude"])
async def test_stream_stalling_mid_answer_times_out_in_stream(upstream: ReplayUpstream, rosetta: Any, kind: str) -> None:
    wire, text = CUTS[kind]

    async def stall(received: Received, writer: Writer) -> None:
        await writer.send(wire)
        await writer.wait_closed_by_peer(10)

    FAKES[kind].install(upstream)
    replace_route(upstream, kind, stall)
    running = await rosetta(config_for(kind, upstream.url, backend={"timeout": {"read": 0.3}}))
    body = {"model": "rp", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 64}
    streamed = await post_stream(running, "/chat/completions", body)
    assert streamed.status == 200 and streamed.done
    *answer, last = streamed.chunks
    assert "".join((c["choices"][0]["delta"].get("content") or "") for c in answer if c["choices"]) == text
    assert last["choices"] == [] and check_error({"error": last["error"]})["code"] == "upstream_timeout"


MALFORMED = http_response(200, "<html><body>502 Bad Gateway</body></html>", content_type="text/html")


@pytest.mark.parametrize("kind", [*TEXT_BACKENDS, *COMPLETION_ONLY, "claude"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_malformed_answer_is_502(upstream: ReplayUpstream, rosetta: Any, kind: str, stream: bool) -> None:
    FAKES[kind].install(upstream)
    replace_route(upstream, kind, MALFORMED)
    running = await rosetta(config_for(kind, upstream.url))
    status, _, data = await post_json(running, *simple_request(kind, stream))
    assert status == 502, data
    check_error(data)


# --- clients that hang up -------------------------------------------------------------------------
@pytest.mark.parametrize("kind, marker", [("ollama", b'"content":"The"'), ("claude", b'"content":"Hello"')])
async def test_client_gone_mid_stream_closes_the_upstream(upstream: ReplayUpstream, rosetta: Any, kind: str, marker: bytes) -> None:
    from harness import eventually, post_then_hang_up

    wire, _ = CUTS[kind]
    seen: list[Received] = []

    async def generating(received: Received, writer: Writer) -> None:
        seen.append(received)
        await writer.send(wire)
        await writer.wait_closed_by_peer(5)
        received.disconnected_at = asyncio.get_running_loop().time()

    FAKES[kind].install(upstream)
    replace_route(upstream, kind, generating)
    running = await rosetta(config_for(kind, upstream.url))
    body = {"model": "rp", "messages": [{"role": "user", "content": "Tell me a long story"}], "stream": True}
    gone = await post_then_hang_up(running, "/v1/chat/completions", body, after=marker)
    assert await eventually(lambda: bool(seen) and seen[0].disconnected_at is not None, timeout=2)
    assert seen[0].disconnected_at is not None and seen[0].disconnected_at - gone < 0.5


async def test_client_gone_before_generation_starts_generates_nothing(upstream: ReplayUpstream, rosetta: Any) -> None:
    from harness import eventually, post_then_hang_up

    counting = asyncio.Event()
    held: list[Received] = []

    async def slow_count(received: Received, writer: Writer) -> None:  # KoboldCpp busy counting the prompt
        held.append(received)
        counting.set()
        await writer.wait_closed_by_peer(5)
        received.disconnected_at = asyncio.get_running_loop().time()

    FAKES["kobold"].install(upstream)
    upstream.routes[("POST", "/api/extra/tokencount")] = [slow_count]
    running = await rosetta(config_for("kobold", upstream.url))
    body = {"model": "rp", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    await post_then_hang_up(running, "/v1/chat/completions", body, after=counting)
    assert await eventually(lambda: held[0].disconnected_at is not None, timeout=2)
    assert not upstream.requests("/api/extra/generate/stream") and not upstream.requests("/api/v1/generate")


# --- errors the servers send after the 200 --------------------------------------------------------
@pytest.mark.parametrize(
    "kind, path, wire, text, message",
    [
        # errors the servers document sending after the 200
        ("ollama", "/api/generate", stream_response(raw("ollama/generate_stream_error.ndjson"), content_type="application/x-ndjson"),
         " Yes.Ican", "an error was encountered while running the model"),
        ("tabby", "/v1/completions", stream_response(raw("tabby/completion_stream_error.sse")),
         " Paris.", "Completion aborted. Please check the server console."),
    ],
)
async def test_documented_in_stream_errors_end_the_stream_cleanly(
    upstream: ReplayUpstream, rosetta: Any, kind: str, path: str, wire: bytes, text: str, message: str
) -> None:
    upstream.add("POST", path, wire)
    upstream.add("POST", "/api/show", http_response(200, raw("ollama/show.json")))
    running = await rosetta(config_for(kind, upstream.url))
    streamed = await post_stream(running, "/completions", {"model": "rp", "prompt": "Is it?", "max_tokens": 8,
                                                           "stream_options": {"include_usage": True}})
    assert streamed.status == 200 and streamed.done
    *answer, last = streamed.chunks
    assert "".join(c["choices"][0]["text"] for c in answer) == text
    assert last["choices"] == [] and message in check_error({"error": last["error"]})["message"]
