"""The ``claude`` translator against an upstream: /v1/models paging, and end to end (the openai client
→ Rosetta → a fake Anthropic upstream).

Every request the fake upstream receives is validated against the anthropic SDK's
``MessageCreateParams``.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

import aiohttp
import openai
import orjson
import pytest
from claude_helpers import HERE, KEY, assert_valid_claude_request, capture_body, make_request, translator
from harness import http_response, stream_response

from translators import errors
from translators.base import Frame, Upstream


# --- /v1/models -----------------------------------------------------------------------------
class FakeResponse:
    def __init__(self, status: int, body: bytes) -> None:
        self.status, self._body, self.closed = status, body, False
        self.headers: dict[str, str] = {}

    async def read(self) -> bytes:
        return self._body

    def frames(self, framing: str) -> AsyncIterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        self.closed = True


class FakeTransport:
    def __init__(self, *responses: FakeResponse) -> None:
        self.responses = list(responses)
        self.sent: list[Upstream] = []

    async def send(self, upstream: Upstream) -> FakeResponse:
        self.sent.append(upstream)
        return self.responses.pop(0)


async def test_list_models_pages_through_v1_models() -> None:
    page = orjson.loads((HERE / "models_list.json").read_bytes())
    first = {**page, "has_more": True}
    second = {**page, "data": [{**page["data"][0], "id": "claude-3-opus-20240229"}], "last_id": "claude-3-opus-20240229"}
    transport = FakeTransport(FakeResponse(200, orjson.dumps(first)), FakeResponse(200, orjson.dumps(second)))
    assert await translator().list_models(transport) == ["claude-3-5-sonnet-latest", "claude-3-opus-20240229"]
    assert [u.url for u in transport.sent] == [
        "https://api.anthropic.com/v1/models?limit=1000",
        "https://api.anthropic.com/v1/models?limit=1000&after_id=claude-3-5-sonnet-latest",
    ]
    assert transport.sent[0].method == "GET"
    assert transport.sent[0].headers == {"anthropic-version": "2023-06-01", "x-api-key": KEY}


async def test_list_models_error_raises_for_the_catalog_to_log() -> None:
    body = orjson.dumps({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}})
    transport = FakeTransport(FakeResponse(401, body))
    with pytest.raises(errors.UpstreamError) as caught:
        await translator().list_models(transport)
    assert caught.value.status == 401 and "invalid x-api-key" in caught.value.message


# --- end to end: the openai client → Rosetta → a fake Anthropic upstream -------------------
# Every request the fake upstream receives is checked against the SDK's MessageCreateParams.

SECRET = "sk-ant-upstream-secret-987654"
SERA = capture_body("@cc_custom_nonstream.jsonl")


def e2e_config(url: str, **model_options: Any) -> dict[str, Any]:
    return {
        "backends": {"anthropic": {"type": "claude", "url": url, "api_key": SECRET, "anthropic_beta": ["output-128k-2025-02-19"]}},
        "models": [
            {"name": "claude-rp", "backend": "anthropic", "model": "claude-3-5-sonnet-20240620", **model_options},
            {"name": "opus", "backend": "anthropic", "model": "claude-opus-4-6", "include_prefill": True},
        ],
    }


def e2e_client(running: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=running.base_url, api_key="sk-client", max_retries=0)


def sse_wire(name: str) -> bytes:
    return stream_response((HERE / name).read_bytes())


def json_wire(name: str) -> bytes:
    return http_response(200, (HERE / name).read_bytes())


def received_bodies(upstream: Any) -> list[dict[str, Any]]:
    """What Rosetta sent to /v1/messages, each validated as a Messages API request."""
    sent = upstream.requests("/v1/messages")
    for received in sent:
        assert received.headers["x-api-key"] == SECRET
        assert received.headers["anthropic-version"] == "2023-06-01"
        assert received.headers["anthropic-beta"] == "output-128k-2025-02-19"
        assert_valid_claude_request(received.json)
    return [r.json for r in sent]


async def test_e2e_sillytavern_chat_non_stream(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/messages", json_wire("spec_message.json"))
    running = await rosetta(e2e_config(upstream.url))
    body = {k: v for k, v in SERA.items() if k != "model"}
    answer = await e2e_client(running).chat.completions.create(model="claude-rp", **body)
    assert answer.choices[0].message.content == "Hi! My name is Claude."
    assert answer.choices[0].finish_reason == "stop"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens, answer.usage.total_tokens) == (2095, 503, 2598)
    assert answer.model == "claude-rp"
    [sent] = received_bodies(upstream)
    assert sent == orjson.loads((HERE / "requests" / "c01_sillytavern_custom_nonstream.json").read_bytes())["claude"]


async def test_e2e_stream_with_usage(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/messages", sse_wire("sdk_message_delta_fields_response.sse"))
    running = await rosetta(e2e_config(upstream.url))
    stream = await e2e_client(running).chat.completions.create(
        model="claude-rp", messages=[{"role": "user", "content": "Hello"}], stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello there!"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.prompt_tokens_details.cached_tokens) == (59, 8, 7)
    [sent] = received_bodies(upstream)
    assert sent["stream"] is True and sent["max_tokens"] == 4096


async def test_e2e_streamed_tool_call(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/messages", sse_wire("composed_two_tool_calls.sse"))
    running = await rosetta(e2e_config(upstream.url))
    tools = capture_body("@cc_custom_tools.jsonl")["tools"]
    stream = await e2e_client(running).chat.completions.create(
        model="claude-rp", messages=[{"role": "user", "content": "Weather?"}], tools=tools, tool_choice="auto", stream=True
    )
    calls: dict[int, dict[str, str]] = {}
    reasons = []
    async for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or ():
                entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] += call.id or ""
                entry["name"] += (call.function.name or "") if call.function else ""
                entry["arguments"] += (call.function.arguments or "") if call.function else ""
            if choice.finish_reason:
                reasons.append(choice.finish_reason)
    assert calls == {
        0: {"id": "toolu_01NRLabsLyVHZPKxbKvkfSMn", "name": "get_weather", "arguments": '{"location": "Paris"}'},
        1: {"id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "arguments": '{"location": "San Francisco, CA", "unit": "fahrenheit"}'},
    }
    assert reasons == ["tool_calls"]
    [sent] = received_bodies(upstream)
    assert sent["tool_choice"] == {"type": "auto"} and sent["tools"][0]["name"] == "get_weather"


async def test_e2e_tool_result_round_trip_non_stream(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/messages", json_wire("docs_tool_use_message.json"))
    running = await rosetta(e2e_config(upstream.url))
    body = capture_body("@sdk_py_chat_tools.jsonl#2")
    answer = await e2e_client(running).chat.completions.create(model="claude-rp", messages=body["messages"], tools=body["tools"])
    message = answer.choices[0].message
    assert answer.choices[0].finish_reason == "tool_calls"
    assert message.content == "I'll check the current weather in San Francisco for you."
    calls = [c.model_dump() for c in message.tool_calls or ()]
    assert [(c["id"], c["function"]["name"], orjson.loads(c["function"]["arguments"])) for c in calls] == [
        ("toolu_01A09q90qw90lq917835lq9", "get_weather", {"location": "San Francisco, CA", "unit": "celsius"})
    ]
    [sent] = received_bodies(upstream)
    assert [block["type"] for m in sent["messages"] for block in m["content"]] == ["text", "tool_use", "tool_result"]


async def test_e2e_thinking_streamed_as_reasoning_content(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/messages", sse_wire("sdk_thinking_refusal.sse"))
    running = await rosetta(e2e_config(upstream.url))
    stream = await e2e_client(running).chat.completions.create(
        model="claude-rp", messages=[{"role": "user", "content": "Eclipses?"}], reasoning_effort="low", stream=True
    )
    chunks = [c async for c in stream]
    reasoning = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in chunks if c.choices)
    assert reasoning.startswith("Simple educational question") and reasoning.endswith("roll with it politely.")
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hi"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["content_filter"]
    [sent] = received_bodies(upstream)
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 1024}


async def test_e2e_prefill_instructed_and_stitched(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/messages", sse_wire("docs_basic_stream.sse"))
    running = await rosetta(e2e_config(upstream.url))
    stream = await e2e_client(running).chat.completions.create(
        model="opus", messages=[{"role": "user", "content": "Greet me"}, {"role": "assistant", "content": "Hello "}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Hello!"  # include_prefill: the prefill, then only the continuation ("!")
    [sent] = received_bodies(upstream)
    assert sent["messages"][-1]["role"] == "user" and "Hello" in sent["messages"][-1]["content"][-1]["text"]


async def test_e2e_model_prefill_setting_and_legacy_completion(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/messages", json_wire("spec_message.json"))
    running = await rosetta(e2e_config(upstream.url, prefill="*Seraphina ", include_prefill=True))
    answer = await e2e_client(running).completions.create(model="claude-rp", prompt="Once upon a time", max_tokens=16, stop=["\n"])
    assert answer.choices[0].text == "*SeraphinaHi! My name is Claude."
    assert answer.choices[0].finish_reason == "stop"
    [sent] = received_bodies(upstream)
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Once upon a time"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "*Seraphina"}]},
    ]
    assert "stop_sequences" not in sent


async def test_e2e_overloaded_in_stream_becomes_an_error_chunk(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/messages", sse_wire("composed_overloaded_mid_stream.sse"))
    running = await rosetta(e2e_config(upstream.url))
    async with aiohttp.ClientSession() as http:
        async with http.post(running.base_url + "/chat/completions",
                             json={"model": "claude-rp", "messages": [{"role": "user", "content": "x"}], "stream": True}) as r:
            assert r.status == 200
            raw = (await r.read()).decode()
    data = [e[6:] for e in raw.split("\n\n") if e.startswith("data: ")]
    assert data[-1] == "[DONE]"
    events: list[dict[str, Any]] = [orjson.loads(e) for e in data[:-1]]
    assert events[-1]["choices"] == [] and "Overloaded" in events[-1]["error"]["message"]
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1]) == "Hello"
    received_bodies(upstream)


async def test_e2e_529_is_503_with_retry_after(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/messages", http_response(529, (HERE / "error_529_overloaded.json").read_bytes()))
    running = await rosetta(e2e_config(upstream.url))
    with pytest.raises(openai.APIStatusError) as caught:
        await e2e_client(running).chat.completions.create(model="claude-rp", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 503
    assert caught.value.response.headers.get("retry-after") == "2"
    assert "Overloaded" in caught.value.message and SECRET not in caught.value.message
    received_bodies(upstream)


async def test_e2e_prefill_rejected_upstream_is_a_clear_400(upstream: Any, rosetta: Any) -> None:
    upstream.add("POST", "/v1/messages", http_response(400, (HERE / "error_400_prefill.json").read_bytes()))
    running = await rosetta(e2e_config(upstream.url))
    with pytest.raises(openai.BadRequestError) as caught:
        await e2e_client(running).chat.completions.create(
            model="claude-rp", messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
        )
    assert caught.value.code == "prefill_not_supported" and caught.value.param == "messages"
    assert "prefill_supported: false" in caught.value.message
    received_bodies(upstream)


async def test_e2e_prefill_reject_policy_never_reaches_upstream(upstream: Any, rosetta: Any) -> None:
    config = e2e_config(upstream.url)
    config["models"].append({"name": "strict", "backend": "anthropic", "model": "claude-sonnet-4-6", "prefill_fallback": "reject"})
    running = await rosetta(config)
    with pytest.raises(openai.BadRequestError) as caught:
        await e2e_client(running).chat.completions.create(
            model="strict", messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
        )
    assert caught.value.param == "messages" and "does not accept an assistant prefill" in caught.value.message
    assert upstream.requests("/v1/messages") == []


async def test_e2e_models_list_from_upstream(upstream: Any, rosetta: Any) -> None:
    upstream.add("GET", "/v1/models", json_wire("models_list.json"))
    running = await rosetta(e2e_config(upstream.url))
    ids = [m.id for m in (await e2e_client(running).models.list()).data]
    assert ids[:2] == ["claude-rp", "opus"] and "anthropic/claude-3-5-sonnet-latest" in ids
    [sent] = upstream.requests("/v1/models")
    assert sent.query == "limit=1000" and sent.headers["x-api-key"] == SECRET


@pytest.mark.parametrize("empty", ["", "\n", "  "])
@pytest.mark.parametrize("model", ["claude-3-5-sonnet-20240620", "claude-sonnet-4-6"])
def test_an_empty_final_user_turn_asks_for_a_reply_not_a_continuation(empty: str, model: str) -> None:
    claude = translator()
    body = {
        "model": "x",
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": empty}],
    }
    upstream = claude.build_request(make_request(body, model, claude))
    sent = upstream.json["messages"]
    assert sent[-1] == {"role": "user", "content": [{"type": "text", "text": "\u200b"}]}
    assert sent[-2]["role"] == "assistant"
    assert not any("prefill" in w for w in upstream.warnings)
    assert_valid_claude_request(upstream.json)
