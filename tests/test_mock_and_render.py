"""The mock backend and the renderer: a stream aggregated equals the non-stream answer."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import orjson
import pytest

from proxy.render import Aggregate, StreamRenderer
from translators.events import Finish, Meta, ReasoningDelta, TextDelta, ToolCallDelta, Usage

MOCK = {
    "backends": {"mock": {"type": "mock", "tokens_per_second": 0}},
    "models": [{"name": "m", "backend": "mock", "model": "lorem"}, {"name": "echo", "backend": "mock", "model": "echo"}],
}


def client(running: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=running.base_url, api_key="x", max_retries=0)


async def test_mock_is_deterministic_and_honours_max_tokens_and_stop(rosetta: Any) -> None:
    running = await rosetta(MOCK)
    oa = client(running)
    first = await oa.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    again = await oa.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    assert first.choices[0].message.content == again.choices[0].message.content == "Lorem ipsum dolor sit amet,"
    assert first.choices[0].finish_reason == "length"
    stopped = await oa.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=20, stop=["sit"])
    assert stopped.choices[0].message.content == "Lorem ipsum dolor " and stopped.choices[0].finish_reason == "stop"
    echoed = await oa.completions.create(model="echo", prompt="a b c")
    assert echoed.choices[0].text == "a b c" and echoed.choices[0].finish_reason == "stop"


async def test_stream_aggregated_equals_non_stream(rosetta: Any) -> None:
    running = await rosetta(MOCK)
    oa = client(running)
    whole = await oa.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=12, n=2)
    stream = await oa.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=12, n=2, stream=True)
    texts: dict[int, str] = {}
    reasons: dict[int, str] = {}
    async for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                reasons[choice.index] = choice.finish_reason
    assert texts == {c.index: c.message.content for c in whole.choices}
    assert reasons == {c.index: c.finish_reason for c in whole.choices}


async def test_estimated_usage_is_marked(rosetta: Any) -> None:
    running = await rosetta(MOCK)
    async with aiohttp.ClientSession() as http:
        async with http.post(running.base_url + "/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hello world"}], "max_tokens": 4}) as r:
            assert r.headers["x-rosetta-usage-source"] == "estimated"
            assert float(r.headers["x-rosetta-overhead-ms"]) >= 0
            usage = (await r.json())["usage"]
    # 3 per message + 3 reply primer + "hello world" (2 tokens in cl100k)
    assert usage["prompt_tokens"] == 8
    assert usage["completion_tokens"] == 4  # "Lorem ipsum dolor sit": [33883, 27439, 24578, 2503] in cl100k
    assert usage["total_tokens"] == 12


async def test_streams_say_where_usage_came_from_in_a_final_comment(rosetta: Any) -> None:
    running = await rosetta(MOCK)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True}
    async with aiohttp.ClientSession() as http:
        async with http.post(running.base_url + "/chat/completions", json=body) as r:
            raw = await r.read()
    assert raw.endswith(b": x-rosetta-usage-source=estimated\n\ndata: [DONE]\n\n")


async def test_mock_forced_tool_call(rosetta: Any) -> None:
    running = await rosetta(MOCK)
    tools = [{"type": "function", "function": {"name": "roll_dice", "parameters": {"type": "object"}}}]
    answer = await client(running).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "roll"}], tools=tools, tool_choice="required"
    )
    call = answer.choices[0].message.tool_calls[0]
    assert call.function.name == "roll_dice" and call.function.arguments == "{}"
    assert answer.choices[0].finish_reason == "tool_calls" and answer.choices[0].message.content is None


def parse_sse(data: bytes) -> list[Any]:
    return [orjson.loads(e[6:]) if e[6:] != b"[DONE]" else "[DONE]" for e in data.split(b"\n\n") if e.startswith(b"data: ")]


EVENTS = [
    Meta("up-1", "up-model"),
    ReasoningDelta("think"),
    TextDelta("Hel"),
    TextDelta("lo"),
    ToolCallDelta(0, "call_1", "f", '{"a"'),
    ToolCallDelta(0, None, None, ":1}"),
    Finish("tool_calls"),
    Usage(10, 5, cached_tokens=2, reasoning_tokens=1),
]


def test_stream_renderer_shape() -> None:
    renderer = StreamRenderer("chat", "chatcmpl-1", "pub", 7, include_usage=True)
    out = b"".join(renderer.render(e) for e in EVENTS) + renderer.end(renderer.usage)
    chunks = parse_sse(out)
    assert chunks[-1] == "[DONE]"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[1]["choices"][0]["delta"] == {"reasoning_content": "think"}
    assert chunks[4]["choices"][0]["delta"] == {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a"'}}]}
    assert chunks[5]["choices"][0]["delta"] == {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}
    assert chunks[6]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}
    usage_chunk = chunks[7]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == {
        "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 2}, "completion_tokens_details": {"reasoning_tokens": 1},
    }
    assert all(c["usage"] is None for c in chunks[:7])
    assert {c["id"] for c in chunks[:-1]} == {"chatcmpl-1"} and {c["model"] for c in chunks[:-1]} == {"pub"}


def test_aggregate_matches_what_the_stream_said() -> None:
    aggregate = Aggregate()
    for event in EVENTS:
        aggregate.add(event)
    answer = aggregate.render("chat", "chatcmpl-1", "pub", 7, aggregate.usage)
    message = answer["choices"][0]["message"]
    assert message["content"] == "Hello" and message["reasoning_content"] == "think"
    assert message["tool_calls"] == [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}]
    assert answer["choices"][0]["finish_reason"] == "tool_calls"
    assert answer["usage"]["total_tokens"] == 15


def test_completion_stream_and_error_chunk() -> None:
    renderer = StreamRenderer("completion", "cmpl-1", "pub", 7, include_usage=False)
    out = renderer.render(TextDelta("abc")) + renderer.render(Finish("length")) + renderer.end(None)
    chunks = parse_sse(out)
    assert chunks[0]["choices"][0] == {"text": "abc", "index": 0, "logprobs": None, "finish_reason": None}
    assert chunks[1]["choices"][0]["finish_reason"] == "length" and chunks[2] == "[DONE]"
    from translators.errors import UpstreamError

    error = parse_sse(renderer.error(UpstreamError("boom", kind="5xx")))
    assert error[0]["choices"] == [] and error[0]["error"]["message"] == "boom" and error[1] == "[DONE]"


@pytest.mark.parametrize("operation", ["chat", "completion"])
def test_sdk_types_accept_rendered_answers(operation: str) -> None:
    from openai.types import Completion
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    aggregate = Aggregate()
    for event in EVENTS:
        aggregate.add(event)
    answer = aggregate.render(operation, "id-1", "pub", 7, aggregate.usage)  # type: ignore[arg-type]
    (ChatCompletion if operation == "chat" else Completion).model_validate(answer, strict=False)
    if operation == "chat":
        renderer = StreamRenderer("chat", "id-1", "pub", 7, include_usage=True)
        out = b"".join(renderer.render(e) for e in EVENTS) + renderer.end(renderer.usage)
        for chunk in parse_sse(out)[:-1]:
            ChatCompletionChunk.model_validate(chunk)
