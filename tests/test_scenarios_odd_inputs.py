"""End-to-end scenarios: what odd clients send (explicit nulls, odd text, empty stops, huge limits,
slashed model names, images, many streams at once).

The real app (``run_rosetta`` through the ``rosetta`` fixture) against fake upstreams that replay
captured bytes (scenario_fakes); answers checked with the openai SDK's own models (scenario_helpers).
"""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest
from harness import ReplayUpstream, http_response
from scenario_fakes import FAKES, TEXT_BACKENDS, config_for, generate_path, native_stops, native_text, raw
from scenario_helpers import Streamed, check_answer, check_error, check_stream, client, post_json, post_stream

from translators.base import Backend
from translators.mock import Mock
from translators.request import Request

# --- what odd clients send --------------------------------------------------------------------------
ALL_NULLS = {
    # every optional field as an explicit null, the way langchain and pydantic clients send them
    name: None
    for name in (
        "temperature", "top_p", "n", "stream", "stop", "max_tokens", "max_completion_tokens", "presence_penalty",
        "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "seed", "tools", "tool_choice",
        "response_format", "stream_options", "user", "parallel_tool_calls", "reasoning_effort", "metadata",
        "store", "service_tier", "modalities", "audio", "prediction", "functions", "function_call",
    )
}
ODD_TEXT = "Ünïcödé 😀 𝔘𝔫𝔦 \u202eRTL\u202c \u0000NUL \ufeffBOM 中文 \"quotes\" \\back\\slash </s> <|im_end|>"


@pytest.mark.parametrize("kind", [*TEXT_BACKENDS, "claude"])
async def test_langchain_nulls_and_content_parts(upstream: ReplayUpstream, rosetta: Any, kind: str) -> None:
    FAKES[kind].install(upstream)
    running = await rosetta(config_for(kind, upstream.url))
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}], "name": None},
        {"role": "user", "content": [{"type": "text", "text": ODD_TEXT}, {"type": "text", "text": " and more"}], "name": None},
    ]
    status, headers, data = await post_json(running, "/chat/completions", {"model": "rp", "messages": messages, **ALL_NULLS})
    assert status == 200, data
    check_answer(data, model="rp")
    [sent] = upstream.requests(generate_path(FAKES[kind], False))
    assert ODD_TEXT + " and more" in native_text(kind, sent.json)
    assert "Be brief." in native_text(kind, sent.json)


@pytest.mark.parametrize("kind", [*TEXT_BACKENDS, "claude"])
async def test_empty_stop_and_a_huge_max_tokens(upstream: ReplayUpstream, rosetta: Any, kind: str) -> None:
    FAKES[kind].install(upstream)
    running = await rosetta(config_for(kind, upstream.url))
    body = {"model": "rp", "messages": [{"role": "user", "content": "Hi"}], "stop": "", "max_tokens": 2**31}
    status, headers, data = await post_json(running, "/chat/completions", body)
    if kind in ("kobold", "llamacpp", "ooba"):  # they know the context: the request cannot fit
        assert status == 400 and check_error(data)["code"] == "context_length_exceeded"
        return
    assert status == 200, data
    check_answer(data, model="rp")
    [sent] = upstream.requests(generate_path(FAKES[kind], False))
    assert native_stops(kind, sent.json) == [s for s in native_stops(kind, sent.json) if s]  # no empty stop string sent
    assert "whitespace" not in headers.get("x-rosetta-warning", "")  # nothing was dropped: "" is no stop at all


async def test_models_with_slashes_route_and_list(upstream: ReplayUpstream, rosetta: Any) -> None:
    FAKES["ollama"].install(upstream)
    upstream.add("GET", "/api/tags", http_response(200, raw("ollama/tags.json")))
    config = config_for("ollama", upstream.url)
    config["models"].append({"name": "team/rp-model/v2", "backend": "be", "model": "llama3.2"})
    running = await rosetta(config)
    for name, upstream_model in (("team/rp-model/v2", "llama3.2"), ("be/library/llama3.2:latest", "library/llama3.2:latest")):
        status, _, data = await post_json(running, "/chat/completions", {"model": name, "messages": [{"role": "user", "content": "Hi"}]})
        assert status == 200 and check_answer(data, model=name)
        assert upstream.requests("/api/chat")[-1].json["model"] == upstream_model
    async with client(running) as oa:
        ids = [m.id async for m in oa.models.list()]
        assert "team/rp-model/v2" in ids and "be/llama3.2:latest" in ids
        assert (await oa.models.retrieve("team/rp-model/v2")).owned_by == "be"
        with pytest.raises(openai.NotFoundError):
            await oa.models.retrieve("nobody/x")


async def test_concurrent_streams_do_not_mix(rosetta: Any) -> None:
    running = await rosetta({"backends": {"m": {"type": "mock", "tokens_per_second": 0}},
                             "models": [{"name": "echo", "backend": "m", "model": "echo"}]})

    async def one(i: int) -> tuple[int, str, Streamed]:
        words = " ".join(f"w{i}x{j}" for j in range(20))
        body = {"model": "echo", "messages": [{"role": "user", "content": words}], "max_tokens": 100}
        return i, words, await post_stream(running, "/chat/completions", body)

    results = await asyncio.gather(*(one(i) for i in range(40)))
    ids = set()
    for _, words, streamed in results:
        check_stream(streamed, model="echo")
        assert streamed.text == words
        ids.add(streamed.chunks[0]["id"])
    assert len(ids) == 40


# --- the mock must not be a way to take the gateway down ----------------------------------------------
def test_mock_caps_max_tokens_with_a_warning() -> None:
    # max_tokens 2**31 made the mock build a list of 2**31 words (24 GB: the OOM killer took the gateway)
    mock = Mock(Backend("mock", "mock", "mock://local"))
    body: dict[str, Any] = {"model": "mock", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2**31}
    req = Request("chatcmpl-x", "chat", "mock", "lorem", body, messages=tuple(body["messages"]), max_tokens=2**31)
    upstream = mock.build_request(req)
    assert upstream.json["max_tokens"] <= 32768
    assert any("max_tokens" in w for w in upstream.warnings)


async def test_mock_with_a_huge_max_tokens_answers(rosetta: Any) -> None:
    running = await rosetta({"backends": {"m": {"type": "mock", "tokens_per_second": 0}},
                             "models": [{"name": "mock", "backend": "m", "model": "lorem"}]})
    body = {"model": "mock", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 2**62}
    status, headers, data = await post_json(running, "/chat/completions", body)
    assert status == 200 and check_answer(data, model="mock")["choices"][0]["finish_reason"] == "length"
    assert "above this backend's maximum" in headers["x-rosetta-warning"]


@pytest.mark.parametrize("kind", ["kobold", "llamacpp", "horde"])
async def test_an_image_a_text_template_cannot_carry_is_reported(upstream: ReplayUpstream, rosetta: Any, kind: str) -> None:
    FAKES[kind].install(upstream)
    running = await rosetta(config_for(kind, upstream.url))
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is in this picture?"}, image]}]
    status, headers, data = await post_json(running, "/chat/completions", {"model": "rp", "messages": messages, "max_tokens": 16})
    assert status == 200, data
    assert "image_url" in headers.get("x-rosetta-warning", "")
