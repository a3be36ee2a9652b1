"""End-to-end scenarios: legacy completions everywhere, OpenAI's parameters on every backend, tool calls
and log probabilities.

The real app (``run_rosetta`` through the ``rosetta`` fixture) against fake upstreams that replay
captured bytes (scenario_fakes); answers checked with the openai SDK's own models (scenario_helpers).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from harness import ReplayUpstream, http_response, stream_response
from scenario_fakes import (
    COMPLETION_ONLY,
    FAKES,
    HORDE_ECHO,
    TEXT_BACKENDS,
    config_for,
    generate_path,
    horde_wire,
    native_limit,
    native_repetition_penalty,
    native_stops,
    raw,
    sillytavern,
)
from scenario_helpers import check_answer, check_error, check_stream, client, post_json, post_stream

# --- legacy completions everywhere; OpenAI's knobs on every backend ------------------------------
COMPLETION_TEXT: dict[str, tuple[str, str]] = {
    "ollama": ("The sky is blue because it is the color of the sky.", "That's a fantastic question!"),
    "ooba": (" the capital of the country of France. It is the largest", " the capital of the country of France. It is the largest"),
}


@pytest.mark.parametrize("kind", [*TEXT_BACKENDS, *COMPLETION_ONLY, "claude"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_legacy_completion_to_every_backend(upstream: ReplayUpstream, rosetta: Any, kind: str, stream: bool) -> None:
    fake = FAKES[kind]
    fake.install(upstream)
    running = await rosetta(config_for(kind, upstream.url))
    prompt = "The capital of France is"
    expected = COMPLETION_TEXT.get(kind, fake.text)[1 if stream else 0]
    body: dict[str, Any] = {"model": "rp", "prompt": prompt, "max_tokens": 24, "stop": ["\n\n", "###"]}
    if stream:
        streamed = check_stream(await post_stream(running, "/completions", {**body, "stream_options": {"include_usage": True}}),
                                model="rp", operation="completion", include_usage=True)
        assert streamed.text == expected
    else:
        async with client(running) as oa:
            answer = await oa.completions.with_raw_response.create(model="rp", prompt=prompt, max_tokens=24, stop=body["stop"])
        data = check_answer(orjson.loads(answer.http_response.content), model="rp", operation="completion")
        assert data["choices"][0]["text"] == expected
        assert answer.headers["x-rosetta-usage-source"] == fake.source
    [sent] = upstream.requests(generate_path(fake, stream, "completion"))
    if kind == "claude":  # a chat-only backend: the prompt is one user turn
        assert sent.json["messages"] == [{"role": "user", "content": [{"type": "text", "text": prompt}]}]
    else:  # a text backend: the prompt as it is, no template around it
        assert sent.json["prompt"] == prompt
    assert native_limit(kind, sent.json) == 24
    # Claude rejects whitespace-only stop sequences: not sent, and said so
    assert native_stops(kind, sent.json) == (["###"] if kind == "claude" else ["\n\n", "###"])


@pytest.mark.parametrize("kind", [*TEXT_BACKENDS, "claude"])
async def test_max_completion_tokens_stop_and_usage_chunk(upstream: ReplayUpstream, rosetta: Any, kind: str) -> None:
    fake = FAKES[kind]
    fake.install(upstream)
    # a route default max_tokens the client's max_completion_tokens must beat
    running = await rosetta(config_for(kind, upstream.url, params={"max_tokens": 50}))
    body = {
        "model": "rp", "messages": [{"role": "user", "content": "Hi"}], "max_completion_tokens": 7,
        "stop": ["\nUser:", "END"], "stream_options": {"include_usage": True},
    }
    streamed = check_stream(await post_stream(running, "/chat/completions", body), model="rp", include_usage=True)
    assert streamed.text == fake.text[1]
    [sent] = upstream.requests(generate_path(fake, True))
    if kind == "horde":  # the Horde's schema minimum is 16 tokens: clamped, and said so
        assert native_limit(kind, sent.json) == 16
        assert "max_tokens=7 is below this backend's minimum 16" in streamed.headers["x-rosetta-warning"]
    else:
        assert native_limit(kind, sent.json) == 7
    assert {"\nUser:", "END"} <= set(native_stops(kind, sent.json))


@pytest.mark.parametrize("kind", ["kobold", "llamacpp", "ollama", "ooba", "claude"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_n_above_one_is_refused_where_it_cannot_be_honoured(
    upstream: ReplayUpstream, rosetta: Any, kind: str, stream: bool
) -> None:
    FAKES[kind].install(upstream)
    running = await rosetta(config_for(kind, upstream.url))
    body = {"model": "rp", "messages": [{"role": "user", "content": "Hi"}], "n": 2, "stream": stream}
    status, headers, data = await post_json(running, "/chat/completions", body)
    assert status == 400
    error = check_error(data)
    assert (error["param"], error["code"], error["type"]) == ("n", "unsupported_parameter", "invalid_request_error")
    assert headers["x-request-id"].startswith("chatcmpl-")
    assert not upstream.requests(generate_path(FAKES[kind], stream))


N2_JOB = "ca89b223-8134-4cdf-aaae-9338156674fb"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_horde_n_2_gives_two_choices(upstream: ReplayUpstream, rosetta: Any, stream: bool) -> None:
    upstream.add("GET", "/api/v2/workers", horde_wire("42_workers_text"))
    upstream.add("POST", "/api/v2/generate/text/async", horde_wire("30_submit_async_anon_n2"))
    upstream.add("GET", f"/api/v2/generate/text/status/{N2_JOB}", horde_wire("31_status_done_n2"))
    running = await rosetta(config_for("horde", upstream.url))
    body = {"model": "rp", "messages": [{"role": "user", "content": "Hi"}], "n": 2, "max_tokens": 32}
    if stream:
        streamed = check_stream(await post_stream(running, "/chat/completions", {**body, "stream_options": {"include_usage": True}}),
                                model="rp", include_usage=True)
        by_index: dict[int, str] = {}
        for chunk in streamed.chunks:
            for choice in chunk["choices"]:
                by_index[choice["index"]] = by_index.get(choice["index"], "") + (choice["delta"].get("content") or "")
        assert by_index == {0: HORDE_ECHO, 1: HORDE_ECHO}
    else:
        status, headers, data = await post_json(running, "/chat/completions", body)
        assert status == 200
        check_answer(data, model="rp")
        assert [(c["index"], c["message"]["content"]) for c in data["choices"]] == [(0, HORDE_ECHO), (1, HORDE_ECHO)]
        assert headers["x-rosetta-usage-source"] == "estimated"
    [sent] = upstream.requests("/api/v2/generate/text/async")
    assert sent.json["params"]["n"] == 2


# --- route defaults against the client's values ---------------------------------------------------
# A route default must lose to the client's value also when the two name the field differently
# (SillyTavern's repetition_penalty for a default written as llama.cpp's repeat_penalty; OpenAI's
# max_tokens for a default written as max_completion_tokens).
@pytest.mark.parametrize("kind", ["kobold", "llamacpp", "ollama", "ooba", "horde"])
async def test_a_client_value_beats_a_default_under_another_name(upstream: ReplayUpstream, rosetta: Any, kind: str) -> None:
    own = {"kobold": "rep_pen", "llamacpp": "repeat_penalty", "ollama": "repeat_penalty", "ooba": "repetition_penalty",
           "horde": "rep_pen"}[kind]
    client_name = "rep_pen" if own == "repetition_penalty" else "repetition_penalty"
    FAKES[kind].install(upstream)
    running = await rosetta(config_for(kind, upstream.url, params={own: 1.3, "max_completion_tokens": 50}))
    body = {"model": "rp", "messages": [{"role": "user", "content": "Hi"}], client_name: 1.1, "max_tokens": 20}
    status, headers, data = await post_json(running, "/chat/completions", body)
    assert status == 200, data
    [sent] = upstream.requests(generate_path(FAKES[kind], False))
    assert native_repetition_penalty(kind, sent.json) == 1.1
    assert native_limit(kind, sent.json) == 20
    assert "disagree" not in headers.get("x-rosetta-warning", "") and "was not sent" not in headers.get("x-rosetta-warning", "")


async def test_claude_max_tokens_beats_a_max_completion_tokens_default(upstream: ReplayUpstream, rosetta: Any) -> None:
    FAKES["claude"].install(upstream)
    running = await rosetta(config_for("claude", upstream.url, params={"max_completion_tokens": 50}))
    status, _, data = await post_json(running, "/chat/completions", {"model": "rp", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 20})
    assert status == 200, data
    assert upstream.requests("/v1/messages")[0].json["max_tokens"] == 20


def test_merge_params_nulls_and_other_names() -> None:
    from proxy.intake import merge_params
    from translators.llamacpp import params

    defaults = {"repeat_penalty": 1.3, "temperature": 0.5, "max_completion_tokens": 50}
    # a null keeps the default; a value under any name of the field replaces it
    assert merge_params(defaults, {"temperature": None}, params)["temperature"] == 0.5
    merged = merge_params(defaults, {"repeat_penalty": None, "rep_pen": 1.1, "max_tokens": 9}, params)
    assert {k: v for k, v in merged.items() if v is not None} == {"temperature": 0.5, "rep_pen": 1.1, "max_tokens": 9}
    assert merge_params(defaults, {}, params) == defaults


# --- tool calls and log probabilities through the shared renderer ---------------------------------
async def test_ollama_streamed_tool_call_is_valid_openai(upstream: ReplayUpstream, rosetta: Any) -> None:
    upstream.add("POST", "/api/show", http_response(200, raw("ollama/show.json")))
    upstream.add("POST", "/api/chat", stream_response(raw("ollama/chat_stream_tools.ndjson"), content_type="application/x-ndjson"))
    running = await rosetta(config_for("ollama", upstream.url))
    tools = sillytavern("cc_custom_tools")["tools"]
    body = {"model": "rp", "messages": [{"role": "user", "content": "Weather in Tokyo?"}], "tools": tools,
            "tool_choice": "auto", "stream_options": {"include_usage": True}}
    streamed = check_stream(await post_stream(running, "/chat/completions", body), model="rp", include_usage=True)
    calls = [call for c in streamed.chunks for choice in c["choices"] for call in choice["delta"].get("tool_calls") or ()]
    assert len(calls) == 1 and calls[0]["index"] == 0 and calls[0]["type"] == "function"
    assert calls[0]["id"].startswith("call_") and calls[0]["function"] == {"name": "get_weather", "arguments": '{"city":"Tokyo"}'}
    assert streamed.finishes == ["tool_calls"]
    assert streamed.chunks[-1]["usage"]["prompt_tokens"] == 169
    # the same answer aggregated by the openai SDK's own stream helper
    async with client(running) as oa:
        async with oa.chat.completions.stream(model="rp", messages=body["messages"], tools=tools) as events:
            final = await events.get_final_completion()
    assert final.choices[0].message.tool_calls is not None
    assert final.choices[0].message.tool_calls[0].function.arguments == '{"city":"Tokyo"}'


async def test_llamacpp_chat_logprobs_are_openai_shaped(upstream: ReplayUpstream, rosetta: Any) -> None:
    upstream.add("GET", "/props", raw("llamacpp/get_props.response.wire"))
    upstream.add("POST", "/tokenize", raw("llamacpp/post_tokenize_add_special.response.wire"))
    upstream.add("POST", "/completion", raw("llamacpp/post_completion_n_probs.response.wire"))
    running = await rosetta(config_for("llamacpp", upstream.url))
    body = {"model": "rp", "messages": [{"role": "user", "content": "The capital of France is"}], "max_tokens": 3,
            "logprobs": True, "top_logprobs": 2}
    status, _, data = await post_json(running, "/chat/completions", body)
    assert status == 200, data
    check_answer(data, model="rp")
    content = data["choices"][0]["logprobs"]["content"]
    assert "".join(t["token"] for t in content) == data["choices"][0]["message"]["content"] == " the capital of"
    assert all(len(t["top_logprobs"]) <= 2 for t in content)
    assert upstream.requests("/completion")[0].json["n_probs"] == 2
